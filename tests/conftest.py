"""Shared fixtures: real photos (scikit-image ships them), tiny models, CUDA detection."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "camera")


def photo(name: str, size: tuple[int, int]) -> np.ndarray:
    """A scikit-image photo as (H,W,3) uint8 RGB, resized with OpenCV's INTER_AREA."""
    import cv2
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w = size
    return cv2.resize(img[..., :3], (w, h), interpolation=cv2.INTER_AREA)


def photo_batch(size: tuple[int, int], names: tuple[str, ...] = PHOTOS) -> torch.Tensor:
    """(B,3,H,W) float32 in [0,1] of the photos, exactly representable as uint8/255."""
    arr = np.stack([photo(n, size) for n in names])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="session")
def photos32() -> torch.Tensor:
    return photo_batch((32, 32))


class TinyNet(torch.nn.Module):
    """Conv-BN-ReLU-pool-linear: enough to have gradients and BN buffers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.head = torch.nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.conv(x)))
        return self.head(h.mean((2, 3)))


@pytest.fixture
def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyNet(10)


def cuda_available() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
