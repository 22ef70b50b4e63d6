"""Pairings: which image of the batch is the SOURCE for each target i (`partner[i]`).

| name | partner | from |
|---|---|---|
| random | a random permutation (self-pairs possible) | Mixup / CutMix / SaliencyMix code |
| flip | B-1-i | timm `Mixup` |
| roll | i-1 (mod B) | torchvision v2 `MixUp` / `CutMix` |
| greedy | GuidedMixup Algorithm 1 on the saliency distances | Kang & Kim, AAAI 2023 |
| optimal | exact max-distance assignment without self-pairs | ours |

`greedy(D)` is Algorithm 1 exactly: D_ii = -inf; (r, c) = argmax D (first maximum, row-major);
first = r; pi[r] = c; D[:, r] = -inf; repeat B-2 times: r = c; c = argmax D[r, :]; pi[r] = c;
D[:, r] = -inf; finally pi[c] = first. The result is ONE Hamiltonian cycle: every image is a
target once and a source once, never its own source. (The released GuidedMixup CIFAR code asks
for `greedy_c`, which its pairing function does not know, so it silently pairs at random; ours
really is greedy.) The algorithm is sequential in the batch: on the CPU it runs as a NumPy loop,
elsewhere as a device-side loop of tensor ops that never reads back to the host.

`optimal` solves the linear assignment max sum_i D[i, pi(i)] over permutations with no fixed
point (scipy's Hungarian solver on the host; the one pairing that copies D to the host). Unlike
GuidedMixup's Eq. 1 it allows 2-cycles (i <-> j), so its total is >= greedy's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .registry import Registry


@dataclass(frozen=True)
class Pairing:
    """A pairing rule; data-dependent ones take the (B,B) saliency distance matrix."""

    name: str
    fn: Callable[..., Tensor]
    needs_distance: bool
    doc: str


PAIRINGS: Registry[Pairing] = Registry("pairing")


def _register(name: str, needs_distance: bool, doc: str):
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        PAIRINGS.register(name, Pairing(name, fn, needs_distance, doc), help=doc)
        return fn

    return deco


@_register("random", False, "random permutation (Mixup/CutMix/SaliencyMix); self-pairs possible")
def random(batch: int, generator: torch.Generator) -> Tensor:
    return torch.randperm(batch, generator=generator)


@_register("flip", False, "partner = B-1-i (timm Mixup)")
def flip(batch: int, generator: torch.Generator | None = None) -> Tensor:
    return torch.arange(batch - 1, -1, -1)


@_register("roll", False, "partner = i-1 mod B (torchvision v2 MixUp/CutMix)")
def roll(batch: int, generator: torch.Generator | None = None) -> Tensor:
    return torch.arange(batch).roll(1)


def _greedy_numpy(d: np.ndarray) -> np.ndarray:
    b = d.shape[0]
    d = d.astype(np.float64, copy=True)
    np.fill_diagonal(d, -np.inf)
    partner = np.empty(b, dtype=np.int64)
    r, c = divmod(int(np.argmax(d)), b)
    first = r
    partner[r] = c
    d[:, r] = -np.inf
    for _ in range(b - 2):
        r = c
        c = int(np.argmax(d[r]))
        partner[r] = c
        d[:, r] = -np.inf
    partner[c] = first
    return partner


def _greedy_device(d: Tensor) -> Tensor:
    b = d.shape[0]
    d = d.detach().clone()
    d.fill_diagonal_(float("-inf"))
    partner = torch.empty(b, dtype=torch.long, device=d.device)
    flat = d.argmax().view(1)
    r, c = flat // b, flat % b
    first = r
    partner.index_copy_(0, r, c)
    d.index_fill_(1, r, float("-inf"))
    for _ in range(b - 2):
        r = c
        c = d.index_select(0, r).argmax(1)
        partner.index_copy_(0, r, c)
        d.index_fill_(1, r, float("-inf"))
    partner.index_copy_(0, c, first)
    return partner


@_register("greedy", True, "GuidedMixup Algorithm 1: one greedy max-distance cycle over the batch")
def greedy(distance: Tensor) -> Tensor:
    """Algorithm 1 of GuidedMixup on a (B,B) distance matrix; (B,) long partner on its device."""
    _check_square(distance)
    b = distance.shape[0]
    if b == 1:
        return torch.zeros(1, dtype=torch.long, device=distance.device)
    if distance.device.type == "cpu":
        return torch.from_numpy(_greedy_numpy(distance.detach().numpy()))
    return _greedy_device(distance)


@_register("optimal", True, "exact max-distance assignment with no self-pairs (Hungarian, on the host)")
def optimal(distance: Tensor) -> Tensor:
    from scipy.optimize import linear_sum_assignment

    _check_square(distance)
    b = distance.shape[0]
    if b == 1:
        return torch.zeros(1, dtype=torch.long, device=distance.device)
    d = distance.detach().double().cpu().numpy().copy()
    forbid = -(np.abs(d).sum() + 1.0)
    np.fill_diagonal(d, forbid)
    rows, cols = linear_sum_assignment(d, maximize=True)
    partner = np.empty(b, dtype=np.int64)
    partner[rows] = cols
    return torch.from_numpy(partner).to(distance.device)


def _check_square(distance: Tensor) -> None:
    if distance.ndim != 2 or distance.shape[0] != distance.shape[1] or distance.shape[0] < 1:
        raise ValueError(f"distance must be a square (B,B) matrix, got {tuple(distance.shape)}")


def saliency_distance(maps: Tensor) -> Tensor:
    """D_ij = ||S_i - S_j||_2 of (B,H,W) maps via the Gram trick (never a BxBxHxW tensor)."""
    flat = maps.flatten(1).double()
    sq = flat.pow(2).sum(1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * flat @ flat.T
    return d2.clamp_min(0.0).sqrt().to(maps.dtype)
