"""Pairings: GuidedMixup Algorithm 1 exactly, the optimal assignment, the simple rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trainables.mixing import PAIRINGS
from trainables.mixing.pairing import _greedy_device, greedy, optimal, saliency_distance


def algorithm1(d: np.ndarray) -> list[int]:
    """GuidedMixup Algorithm 1 transcribed line by line with Python lists (the reference)."""
    b = len(d)
    d = [[float("-inf") if i == j else float(d[i][j]) for j in range(b)] for i in range(b)]
    best = max((d[i][j], -i, -j) for i in range(b) for j in range(b))  # first max in row-major order
    r, c = -best[1], -best[2]
    first, pi = r, [None] * b
    pi[r] = c
    for row in d:
        row[r] = float("-inf")
    for _ in range(b - 2):
        r = c
        c = max(range(b), key=lambda j: (d[r][j], -j))
        pi[r] = c
        for row in d:
            row[r] = float("-inf")
    pi[c] = first
    return pi


def is_one_cycle(p: list[int]) -> bool:
    seen, i = set(), 0
    while i not in seen:
        seen.add(i)
        i = p[i]
    return len(seen) == len(p) and i == 0


@pytest.mark.parametrize("b", [2, 3, 5, 16, 64])
def test_greedy_is_algorithm_1(b):
    rng = np.random.default_rng(b)
    for _ in range(5):
        d = rng.random((b, b))
        d = d + d.T
        expect = algorithm1(d)
        got = greedy(torch.from_numpy(d)).tolist()
        assert got == expect
        assert _greedy_device(torch.from_numpy(d)).tolist() == expect  # the accelerator path
        assert is_one_cycle(got) and all(got[i] != i for i in range(b))


def test_greedy_single_and_device():
    assert greedy(torch.zeros(1, 1)).tolist() == [0]
    assert greedy(torch.tensor([[0.0, 1.0], [1.0, 0.0]])).tolist() == [1, 0]
    with pytest.raises(ValueError, match=r"square \(B,B\) matrix, got \(2, 3\)"):
        greedy(torch.zeros(2, 3))


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 24), st.integers(0, 10_000))
def test_optimal_beats_greedy_and_has_no_self_pairs(b, seed):
    rng = np.random.default_rng(seed)
    x = rng.random((b, 6))
    d = torch.from_numpy(np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1)))
    g, o = greedy(d), optimal(d)
    assert sorted(o.tolist()) == list(range(b)) and all(o[i] != i for i in range(b))
    total = lambda p: float(d[torch.arange(b), p].sum())  # noqa: E731
    assert total(o) >= total(g) - 1e-9


def test_simple_rules():
    g = torch.Generator().manual_seed(0)
    assert PAIRINGS.get("flip").fn(5, g).tolist() == [4, 3, 2, 1, 0]
    assert PAIRINGS.get("roll").fn(5, g).tolist() == [4, 0, 1, 2, 3]  # torchvision: x.roll(1, 0)
    p = PAIRINGS.get("random").fn(10, torch.Generator().manual_seed(3))
    assert sorted(p.tolist()) == list(range(10))
    assert torch.equal(p, PAIRINGS.get("random").fn(10, torch.Generator().manual_seed(3)))


def test_saliency_distance_is_euclidean():
    maps = torch.rand(7, 5, 6)
    ref = torch.cdist(maps.flatten(1).double(), maps.flatten(1).double()).float()
    assert torch.allclose(saliency_distance(maps), ref, atol=1e-5)
    assert torch.all(saliency_distance(maps).diagonal() <= 1e-3)
