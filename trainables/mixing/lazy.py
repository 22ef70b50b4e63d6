"""`lazy_import(name)`: a module bound by name at import time and imported on its first attribute access.

Why: checking a config (`mixsweep validate`, `list`, the driver's spec check) needs the registries'
names and properties (a mask's `uses_lam`, a pairing's `box_only`, a dataset's option names), which
live next to the torch code they describe. Importing torch for them costs ~1.5 s (torchvision
another ~1 s) per command. So every module the registries are defined in binds its heavy
dependencies with `lazy_import` instead of `import`:

    torch = lazy_import("torch")
    F = lazy_import("torch.nn.functional")
    if TYPE_CHECKING:
        from torch import Tensor          # annotations only (`from __future__ import annotations`)

    def box_mask(boxes: Tensor, size) -> Tensor:
        ys = torch.arange(h, device=boxes.device)   # torch is imported here, the first time

The function bodies read exactly as with a plain import; the registry records and their
properties stay in one place with the code they describe. Modules that need torch at module
level (`nn.Module` subclasses) are bound the same way by the torch-free modules that register
their builders (`trainables.models.builders`).

The proxy is not put in `sys.modules` (so `"torch" in sys.modules` still means torch was imported,
and other libraries see no half-loaded module); the import itself is `importlib.import_module`,
so concurrent first uses are serialised by the import lock. Each attribute is looked up in the
real module once and then cached on the proxy, so later uses cost a plain attribute lookup.
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """Stands for module `name`; the first attribute access imports it (see the module docstring)."""

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not cached yet
        module = importlib.import_module(self.__name__)
        value = getattr(module, attr)
        self.__dict__[attr] = value
        return value

    def __dir__(self) -> list[str]:
        return dir(importlib.import_module(self.__name__))

    def __repr__(self) -> str:
        return f"<lazily imported module {self.__name__!r}>"


def lazy_import(name: str) -> Any:
    """Module `name` (absolute, dotted allowed), imported when one of its attributes is first read."""
    return LazyModule(name)


__all__ = ["LazyModule", "lazy_import"]
