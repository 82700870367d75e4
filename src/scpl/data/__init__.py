"""Data sets: readers for the standard on-disk formats, the registry with a validation split,
augmentation on tensors and label noise.
"""

from .datasets import DATASETS, DataBundle, load_dataset
from .idx import read_idx
from .noise import NoisyLabels, symmetric_noise
from .vision import find_fashion_mnist, load_digits, load_fashion_mnist

__all__ = ["DATASETS", "DataBundle", "load_dataset", "read_idx", "load_digits", "load_fashion_mnist",
           "find_fashion_mnist", "NoisyLabels", "symmetric_noise"]
