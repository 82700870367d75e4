"""Data sets and readers for the formats scpl loads."""

from .idx import read_idx
from .vision import find_fashion_mnist, load_digits, load_fashion_mnist

__all__ = ["read_idx", "load_digits", "load_fashion_mnist", "find_fashion_mnist"]
