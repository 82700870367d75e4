import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

torch.set_num_threads(1)


def tiny_cnn(num_classes: int = 4) -> nn.Sequential:
    """Six layers: conv, bn, relu | conv, relu, pool | linear head (flattened)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(6 * 4 * 4, num_classes),
    )


def synthetic_loader(n: int = 64, num_classes: int = 4, batch_size: int = 16, seed: int = 0) -> DataLoader:
    """Class-dependent 8x8 images, so that training has something to learn."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % num_classes
    images = torch.randn(n, 1, 8, 8, generator=g) * 0.5
    images[:, :, :2, :2] += labels.view(-1, 1, 1, 1).float()
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=False)


@pytest.fixture
def loader() -> DataLoader:
    return synthetic_loader()

