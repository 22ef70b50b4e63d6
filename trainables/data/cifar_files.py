"""torchvision's CIFAR-10/100 dataset classes on files already present: the part of `cifar` that needs
torchvision at class definition, which `cifar` binds by name (`trainables.mixing.lazy`), so that the
dataset registry imports without torchvision.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from torchvision.datasets import CIFAR10, CIFAR100

#: the only globals a CIFAR python-pickle batch needs (numpy array reconstruction)
_ALLOWED_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                    ("numpy", "ndarray"), ("numpy", "dtype")}


class _DataOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: any global outside the allowed array types is refused (no code runs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR batches hold only data")


def verify_data_pickle(path: Path) -> None:
    """Read `path` with the restricted unpickler; raise pickle.UnpicklingError on anything but data."""
    with open(path, "rb") as f:
        _DataOnlyUnpickler(f, encoding="latin1").load()


class _PresentMixin:
    """Integrity = the data files exist; class names from the meta file when it is there."""

    root: str
    base_folder: str
    train_list: list[list[str]]
    test_list: list[list[str]]
    meta: dict[str, str]

    def _check_integrity(self) -> bool:
        folder = Path(self.root, self.base_folder)
        files = [folder / name for name, _ in self.train_list + self.test_list]
        if not all(f.is_file() for f in files):
            return False
        for name, _ in self.train_list if self.train else self.test_list:  # the files this split unpickles
            verify_data_pickle(folder / name)  # before torchvision does (the meta file: see _load_meta)
        return True

    def _load_meta(self) -> None:
        path = Path(self.root, self.base_folder, self.meta["filename"])
        self.classes: list[str] = []
        if path.is_file():
            with open(path, "rb") as f:
                self.classes = list(_DataOnlyUnpickler(f, encoding="latin1").load()[self.meta["key"]])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


class PresentCIFAR10(_PresentMixin, CIFAR10):
    """torchvision's CIFAR-10 on files already present (see `_PresentMixin`)."""


class PresentCIFAR100(_PresentMixin, CIFAR100):
    """torchvision's CIFAR-100 on files already present (see `_PresentMixin`)."""
