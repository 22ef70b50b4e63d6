"""Mixing-ratio distributions, written as strings in specs: `uniform(a,b)`, `beta(a,b)`, `fixed(v)`.

`lam` is always the weight of the TARGET label. Samples are drawn on the host from the trial's
CPU `torch.Generator` (like timm / torchvision draw their parameters), so sampling never waits
for the accelerator. Beta draws use a NumPy generator seeded from the torch generator, which
keeps the torch generator the only RNG state to checkpoint.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lazy import lazy_import

if TYPE_CHECKING:
    from torch import Tensor

np = lazy_import("numpy")
torch = lazy_import("torch")


_NUM = r"\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*"
_PATTERNS = {
    "uniform": re.compile(rf"^\s*uniform\s*\({_NUM},{_NUM}\)\s*$"),
    "beta": re.compile(rf"^\s*beta\s*\({_NUM},{_NUM}\)\s*$"),
    "fixed": re.compile(rf"^\s*fixed\s*\({_NUM}\)\s*$"),
}
LAM_FORMS = "uniform(a,b) with 0<=a<=b<=1, beta(a,b) with a,b>0, fixed(v) with 0<=v<=1"


@dataclass(frozen=True)
class LamDistribution:
    """A parsed lam distribution; `str()` gives the canonical spec string."""

    kind: str
    a: float
    b: float = 0.0

    def __str__(self) -> str:
        return f"fixed({self.a:g})" if self.kind == "fixed" else f"{self.kind}({self.a:g},{self.b:g})"

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        """n draws as a float64 CPU tensor."""
        if self.kind == "fixed":
            return torch.full((n,), self.a, dtype=torch.float64)
        if self.kind == "uniform":
            return self.a + (self.b - self.a) * torch.rand(n, generator=generator, dtype=torch.float64)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return torch.from_numpy(np.random.default_rng(seed).beta(self.a, self.b, size=n))


def parse_lam(text: object) -> LamDistribution:
    """Parse `uniform(a,b)`, `beta(a,b)` or `fixed(v)`; ValueError quoting the bad string otherwise."""
    if isinstance(text, LamDistribution):
        return text
    s = str(text)
    for kind, pattern in _PATTERNS.items():
        m = pattern.match(s)
        if not m:
            continue
        vals = [float(v) for v in m.groups()]
        if kind == "fixed" and 0.0 <= vals[0] <= 1.0:
            return LamDistribution("fixed", vals[0])
        if kind == "uniform" and 0.0 <= vals[0] <= vals[1] <= 1.0:
            return LamDistribution("uniform", vals[0], vals[1])
        if kind == "beta" and vals[0] > 0 and vals[1] > 0 and all(map(math.isfinite, vals)):
            return LamDistribution("beta", vals[0], vals[1])
        raise ValueError(f"bad lam distribution {s!r}: parameters out of range; expected {LAM_FORMS}")
    raise ValueError(f"bad lam distribution {s!r}: expected {LAM_FORMS}")
