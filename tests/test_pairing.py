"""Pairings: GuidedMixup Algorithm 1 exactly, greedy_local under Eq. 1, the assignment, the simple rules."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch

from trainables.mixing import PAIRINGS
from trainables.mixing.ops import gaussian_blur, normalize_sum
from trainables.mixing.pairing import (
    _greedy_device,
    _greedy_local_device,
    _two_opt_gains,
    _two_opt_valid_bias,
    assignment,
    greedy,
    greedy_local,
    saliency_distance,
)


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


def objective(d: torch.Tensor, p: torch.Tensor) -> float:
    return float(d[torch.arange(len(p)), p].sum())


def check_eq1(p: list[int]) -> None:
    """Eq. 1's constraints: a permutation, no self pair, no symmetric pair."""
    b = len(p)
    assert sorted(p) == list(range(b))
    assert all(p[i] != i for i in range(b))
    assert all(p[p[i]] != i for i in range(b))


def saliency_like(b: int, rng: np.random.Generator) -> torch.Tensor:
    """Distances of blurred random (B,16,16) maps summing to 1, as GuidedMixup pairs them."""
    maps = torch.from_numpy(rng.random((b, 16, 16)) ** 4)
    return saliency_distance(normalize_sum(gaussian_blur(maps, 7, 3.0)))


def tied(b: int, rng: np.random.Generator) -> torch.Tensor:
    """Euclidean distances of points on a 3x3x3 grid (many equal distances), or all equal."""
    if rng.random() < 0.2:
        return torch.ones(b, b, dtype=torch.float64) - torch.eye(b, dtype=torch.float64)
    x = torch.from_numpy(rng.integers(0, 3, (b, 3)).astype(np.float64))
    return torch.cdist(x, x)


@functools.cache
def matrices() -> list[torch.Tensor]:
    """200 symmetric distance matrices, B log-uniform in 8..256; one in four with ties."""
    rng = np.random.default_rng(2023)
    out = []
    for k in range(200):
        b = int(round(8 * 32 ** rng.random()))
        out.append(tied(b, rng) if k % 4 == 3 else saliency_like(b, rng))
    return out


def test_greedy_local_keeps_eq1_and_never_loses_to_greedy():
    strictly_better = 0
    for d in matrices():
        g, q = greedy(d), greedy_local(d)
        check_eq1(q.tolist())
        assert is_one_cycle(q.tolist())  # stronger: ONE Hamiltonian cycle
        assert objective(d, q) >= objective(d, g)
        strictly_better += objective(d, q) > objective(d, g) * (1 + 1e-9)
    assert strictly_better >= 150  # it does search: most batches gain (183 of these 200)


def test_greedy_local_stops_at_a_2opt_local_maximum():
    for d in matrices()[:40]:
        q = greedy_local(d, max_moves=10 * len(d))
        order = [0]
        for _ in range(len(d) - 1):
            order.append(int(q[order[-1]]))
        gains = _two_opt_gains(d.double(), torch.tensor(order), _two_opt_valid_bias(len(d), d.double()))
        assert float(gains.max()) <= 1e-10 * float(d.abs().max())


def test_greedy_local_device_path_matches_cpu():
    for k, d in enumerate([m for m in matrices() if len(m) <= 40][:12]):
        assert torch.equal(_greedy_local_device(d), greedy_local(d))  # torch, fixed steps, no host reads
        if k % 3 == 0:
            assert torch.equal(_greedy_local_device(d.float()), greedy_local(d.float()))
    d = matrices()[0]
    partial = _greedy_local_device(d, max_moves=1)  # a budget of one move: still Eq. 1, never below greedy
    check_eq1(partial.tolist())
    assert objective(d, greedy(d)) <= objective(d, partial) <= objective(d, greedy_local(d))


@pytest.mark.parametrize("symmetric", [True, False])
def test_two_opt_gain_is_the_exact_change_of_the_total(symmetric):
    rng = np.random.default_rng(int(symmetric))
    b = 7
    d = torch.from_numpy(rng.random((b, b)))
    d = d + d.T if symmetric else d
    order = torch.from_numpy(rng.permutation(b))
    bias = _two_opt_valid_bias(b, d)
    gains = _two_opt_gains(d, order, bias)
    assert np.array_equal(_two_opt_gains(d.numpy(), order.numpy(), bias.numpy()), gains.numpy())  # CPU path
    total = lambda o: sum(float(d[o[k], o[(k + 1) % b]]) for k in range(b))  # noqa: E731
    for i, j in itertools.product(range(b), range(b)):
        if j >= i + 2:
            moved = torch.cat([order[: i + 1], order[i + 1 : j + 1].flip(0), order[j + 1 :]])
            assert float(gains[i, j]) == pytest.approx(total(moved) - total(order), abs=1e-12)
        else:
            assert gains[i, j] == float("-inf")


def test_greedy_local_small_batches():
    assert greedy_local(torch.zeros(1, 1)).tolist() == [0]
    two = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert greedy_local(two).tolist() == [1, 0] == greedy(two).tolist()  # the only derangement of 2
    assert _greedy_local_device(two).tolist() == [1, 0]
    sym = torch.tensor([[0.0, 3.0, 2.0], [3.0, 0.0, 1.0], [2.0, 1.0, 0.0]])
    assert greedy_local(sym).tolist() == greedy(sym).tolist() == [1, 2, 0]
    # asymmetric: greedy takes 0->1 (10) and then 0s; the reverse 3-cycle totals 27
    asym = torch.tensor([[0.0, 10.0, 9.0], [9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])
    assert greedy(asym).tolist() == [1, 2, 0] and greedy_local(asym).tolist() == [2, 0, 1]
    assert _greedy_local_device(asym).tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match=r"square \(B,B\) matrix"):
        greedy_local(torch.zeros(3, 2))


def test_greedy_local_never_loses_on_asymmetric_matrices():
    rng = np.random.default_rng(7)
    for _ in range(20):
        b = int(rng.integers(4, 40))
        d = torch.from_numpy(rng.random((b, b)))
        q = greedy_local(d)
        check_eq1(q.tolist())
        assert objective(d, q) >= objective(d, greedy(d))


def derangements(b: int):
    return (p for p in itertools.permutations(range(b)) if all(p[i] != i for i in range(b)))


@pytest.mark.parametrize("b", [2, 3, 5, 7])
def test_assignment_is_the_best_permutation_without_self_pairs(b):
    rng = np.random.default_rng(b)
    for symmetric in (True, False):
        d = torch.from_numpy(rng.random((b, b)))
        d = d + d.T if symmetric else d
        a = assignment(d)
        assert sorted(a.tolist()) == list(range(b)) and all(a[i] != i for i in range(b))
        best = max(objective(d, torch.tensor(p)) for p in derangements(b))
        assert objective(d, a) == pytest.approx(best, abs=1e-12)
    assert assignment(torch.zeros(1, 1)).tolist() == [0]


def two_cycle_share(p: list[int]) -> float:
    return sum(p[p[i]] == i for i in range(len(p))) / len(p)


def test_assignment_makes_2_cycles_so_it_is_box_only():
    # two far pairs: the best assignment swaps within each (40), any 4-cycle totals at most 22
    d = torch.tensor([[0, 10, 1, 1], [10, 0, 1, 1], [1, 1, 0, 10], [1, 1, 10, 0]], dtype=torch.float64)
    assert assignment(d).tolist() == [1, 0, 3, 2]
    assert two_cycle_share(greedy_local(d).tolist()) == 0.0
    shares = []
    for d in [m for k, m in enumerate(matrices()) if k % 4 != 3 and len(m) >= 32][:5]:
        a = assignment(d)
        assert objective(d, a) >= objective(d, greedy_local(d)) - 1e-9  # the relaxation bounds Eq. 1
        shares.append(two_cycle_share(a.tolist()))
    assert min(shares) > 0.5  # on saliency distances most samples end in 2-cycles
    info = PAIRINGS.get("assignment")
    assert info.box_only and "2-cycles" in info.restriction
    assert not PAIRINGS.get("greedy_local").box_only and PAIRINGS.get("greedy_local").restriction is None
    assert "optimal" not in PAIRINGS.names()


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


@pytest.mark.parametrize("pairing", ["greedy", "greedy_local"])
def test_pixel_ratio_batches_hold_no_duplicate_samples(pairing):
    """GuidedMixup masks give M_j = 1 - M_i: a 2-cycle (i <-> j) would make rows i and j the same image
    with the same label. Eq. 1's pairings never form one, so no two rows of a mixed batch coincide."""
    from trainables.mixing import build_mixer

    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 32, 32, generator=g)
    y = torch.arange(64) % 10
    out = build_mixer({"preset": "guided_sr", "prob": 1.0, "pairing": pairing})(x, y, num_classes=10, generator=g)
    rows = torch.cat([out.images.flatten(1), out.targets], 1).double()
    gap = torch.cdist(rows, rows) + torch.eye(64, dtype=torch.float64) * 1e9
    assert float(gap.min()) > 1e-2  # no two rows equal, not even up to float rounding
    p = out.info.partner
    assert not (p == torch.arange(64)).any() and not (p[p] == torch.arange(64)).any()


def test_assignment_duplicates_samples_that_is_why_it_is_box_only():
    """The reason the config refuses `assignment` with pixel_ratio: forced through the mixer's parts, it
    makes the two members of each 2-cycle identical (image and label)."""
    from trainables.mixing import build_mixer
    from trainables.mixing.pairing import assignment

    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 3, 32, 32, generator=g)
    y = torch.arange(64) % 10
    mixer = build_mixer({"preset": "guided_sr", "prob": 1.0})
    out = mixer(x, y, num_classes=10, generator=g)
    guided = out.info.saliency  # raw maps; redo the mask with assignment's partners
    from trainables.mixing.labels import mask_mean, mix_targets
    from trainables.mixing.masks import blend_pairs, pixel_ratio_weight
    from trainables.mixing.mixer import GUIDED_BLUR
    from trainables.mixing.ops import gaussian_blur, normalize_sum
    from trainables.mixing.pairing import saliency_distance

    norm = normalize_sum(gaussian_blur(guided, *GUIDED_BLUR))
    p = assignment(saliency_distance(norm))
    w = pixel_ratio_weight(norm, p)
    images = blend_pairs(x, p, w)
    targets = mix_targets(torch.nn.functional.one_hot(y, 10).float(), p, mask_mean(w).float())
    rows = torch.cat([images.flatten(1), targets], 1).double()
    in_two_cycle = p[p] == torch.arange(64)
    assert int(in_two_cycle.sum()) > 32
    gap = (rows - rows[p]).abs().amax(1)  # each row vs its partner's row
    assert float(gap[in_two_cycle].max()) < 1e-5  # the same image and label, up to float rounding
