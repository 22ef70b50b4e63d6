"""Pairings: which image of the batch is the SOURCE for each target i (`partner[i]`).

| name | partner | from | masks |
|---|---|---|---|
| random | a random permutation (self-pairs possible) | Mixup / CutMix / SaliencyMix code | all |
| flip | B-1-i | timm `Mixup` | all |
| roll | i-1 (mod B) | torchvision v2 `MixUp` / `CutMix` | all |
| greedy | GuidedMixup Algorithm 1 on the saliency distances: one Hamiltonian cycle | Kang & Kim, AAAI 2023 | all |
| greedy_local | greedy's cycle improved by 2-opt local search: still one Hamiltonian cycle | ours | all |
| assignment | max-distance assignment without self pairs (Hungarian): mostly 2-cycles | ours | box only |

GuidedMixup's Eq. 1 maximises sum_i D[i, pi(i)] over permutations pi with no self pair
(pi(i) != i) and no symmetric pair (pi(pi(i)) != i): a max-weight cycle cover without 1- and
2-cycles, which is NP-hard. No pairing here solves it exactly; none is called "optimal".

`greedy(D)` is Algorithm 1 exactly: D_ii = -inf; (r, c) = argmax D (first maximum, row-major);
first = r; pi[r] = c; D[:, r] = -inf; repeat B-2 times: r = c; c = argmax D[r, :]; pi[r] = c;
D[:, r] = -inf; finally pi[c] = first. The result is ONE Hamiltonian cycle: every image is a
target once and a source once, never its own source. (The released GuidedMixup CIFAR code asks
for `greedy_c`, which its pairing function does not know, so it silently pairs at random; ours
really is greedy.) The algorithm is sequential in the batch: on the CPU it runs as a NumPy loop,
elsewhere as a device-side loop of tensor ops that never reads back to the host.

`greedy_local(D)` starts from greedy's cycle and applies best-improvement 2-opt moves (segment
reversals of the cycle, all B x B moves scored at once as a gain matrix) while one improves the
total; the result is again ONE Hamiltonian cycle, so it keeps every Eq. 1 constraint for B >= 3,
and its total is never below greedy's. See `greedy_local` for the details.

`assignment` solves the linear assignment max sum_i D[i, pi(i)] over permutations with no fixed
point (scipy's Hungarian solver on the host; the one pairing that copies D to the host). It
ignores Eq. 1's symmetric-pair constraint, and on saliency distances most samples end in
2-cycles (i <-> j). With `pixel_ratio` masks (M_j = 1 - M_i) both members of a 2-cycle become
the same image with the same label; with `blend` they mix the same two images with mirrored
weights (identical at lam = 1/2). So it is meant for box masks only (`Pairing.box_only`, the
reason in `Pairing.restriction`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .lazy import lazy_import
from .registry import Registry

if TYPE_CHECKING:
    from torch import Tensor

np = lazy_import("numpy")
torch = lazy_import("torch")

BOX_ONLY_REASON = ("most samples end in 2-cycles (i <-> j); with pixel_ratio or blend masks both members of a "
                   "2-cycle mix the same two images (pixel_ratio: the same image and label)")


@dataclass(frozen=True)
class Pairing:
    """A pairing rule; data-dependent ones take the (B,B) saliency distance matrix.

    `box_only`: the rule is only meaningful with `box` masks; `restriction` says why (for the
    config layer's error message).
    """

    name: str
    fn: Callable[..., Tensor]
    needs_distance: bool
    doc: str
    box_only: bool = False
    restriction: str | None = None


PAIRINGS: Registry[Pairing] = Registry("pairing")


def _register(name: str, needs_distance: bool, doc: str, restriction: str | None = None):
    def deco(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        pairing = Pairing(name, fn, needs_distance, doc, box_only=restriction is not None, restriction=restriction)
        PAIRINGS.register(name, pairing, help=doc)
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


def _greedy_order_numpy(d: np.ndarray) -> np.ndarray:
    """Algorithm 1 as a NumPy loop; returns the cycle in visiting order (partner[o[k]] = o[k+1])."""
    b = d.shape[0]
    if b == 1:
        return np.zeros(1, dtype=np.int64)
    d = d.astype(np.float64, copy=True)
    np.fill_diagonal(d, -np.inf)
    order = np.empty(b, dtype=np.int64)
    r, c = divmod(int(np.argmax(d)), b)
    order[0], order[1] = r, c
    d[:, r] = -np.inf
    for k in range(2, b):
        r = c
        c = int(np.argmax(d[r]))
        order[k] = c
        d[:, r] = -np.inf
    return order


def _greedy_order_device(d: Tensor) -> Tensor:
    """Algorithm 1 as a device-side loop of tensor ops (no host reads); the cycle in visiting order."""
    b = d.shape[0]
    d = d.detach().clone()
    d.fill_diagonal_(float("-inf"))
    flat = d.argmax().view(1)
    r, c = flat // b, flat % b
    steps = [r, c]
    d.index_fill_(1, r, float("-inf"))
    for _ in range(b - 2):
        r = c
        c = d.index_select(0, r).argmax(1)
        steps.append(c)
        d.index_fill_(1, r, float("-inf"))
    return torch.cat(steps)[:b]  # B=1: [0]


def _partner_of(order: Tensor) -> Tensor:
    """Partner of a cycle given in visiting order: partner[order[k]] = order[k+1 mod B]."""
    return torch.empty_like(order).index_copy_(0, order, order.roll(-1))


def _greedy_device(d: Tensor) -> Tensor:
    return _partner_of(_greedy_order_device(d))


def _greedy_order(distance: Tensor) -> Tensor:
    """Greedy's cycle in visiting order on the distance's device (B >= 2)."""
    if distance.device.type == "cpu":
        return torch.from_numpy(_greedy_order_numpy(distance.detach().numpy()))
    return _greedy_order_device(distance)


@_register("greedy", True, "GuidedMixup Algorithm 1: one greedy max-distance cycle over the batch")
def greedy(distance: Tensor) -> Tensor:
    """Algorithm 1 of GuidedMixup on a (B,B) distance matrix; (B,) long partner on its device."""
    _check_square(distance)
    if distance.shape[0] == 1:
        return torch.zeros(1, dtype=torch.long, device=distance.device)
    return _partner_of(_greedy_order(distance))


def _two_opt_gains(d: Tensor | np.ndarray, order: Tensor | np.ndarray,
                   valid_bias: Tensor | np.ndarray) -> Tensor | np.ndarray:
    """Gain of every 2-opt move on the cycle `order` (o): a (B,B) matrix, -inf where no move.

    Move (i, j), i < j: reverse o[i+1..j]. Edges o_i->o_{i+1} and o_j->o_{j+1} become o_i->o_j and
    o_{i+1}->o_{j+1}, and the edges inside the segment change direction. The gain counts all of it,
    so it is exact for any D (for symmetric D the direction term is 0):
        gain = D[o_i,o_j] + D[o_{i+1},o_{j+1}] - f_i - f_j + sum_{k=i+1}^{j-1} (D[o_{k+1},o_k] - f_k)
    with f_k = D[o_k, o_{k+1}] (indices mod B). `valid_bias` is 0 for moves and -inf elsewhere.

    One implementation for both paths: a torch tensor (the device search) or a NumPy array (the CPU
    search, where NumPy's per-op cost is ~10x below torch's on these small matrices); every operation
    below is spelled the same in both libraries, so the two paths do the same arithmetic in the same
    order.
    """
    b = order.shape[0]
    dp = _cycle_order_numpy(d, order) if isinstance(d, np.ndarray) else _cycle_order_torch(d, order)
    fwd, bwd = dp.diagonal(1), dp.diagonal(-1)  # f_k and D[o_{k+1}, o_k]
    r = bwd - fwd
    c = r.cumsum(0)  # sum_{k=i+1}^{j-1} r_k = (c_j - r_j) - c_i
    return (dp[:b, :b] + dp[1:, 1:]) + ((c - r - fwd)[None, :] - (c + fwd)[:, None]) + valid_bias


def _cycle_order_torch(d: Tensor, order: Tensor) -> Tensor:
    """D in the cycle order `order`, wrapped once: dp[k, l] = D[o_k, o_l] for k, l in 0..B, o_B = o_0."""
    ext = torch.cat([order, order[:1]])
    return d.index_select(0, ext).index_select(1, ext)


def _cycle_order_numpy(d: np.ndarray, order: np.ndarray) -> np.ndarray:
    """`_cycle_order_torch` in NumPy."""
    ext = np.append(order, order[0])
    return d.take(ext, 0).take(ext, 1)


def _two_opt_valid_bias(b: int, like: Tensor) -> Tensor:
    """0 where (i, j) is a 2-opt move (j >= i+2; (0, B-1) reverses the whole cycle), -inf elsewhere."""
    ar = torch.arange(b, device=like.device)
    bias = torch.full((b, b), float("-inf"), dtype=like.dtype, device=like.device)
    return bias.masked_fill_(ar[None, :] >= ar[:, None] + 2, 0.0)


def _tolerance(max_abs_d: float | Tensor) -> float | Tensor:
    """A move must gain more than this: float64 sums over the batch err far below it."""
    return 1e-10 * max_abs_d


def _two_opt_search(d: Tensor, order: Tensor, max_moves: int) -> tuple[Tensor, Tensor]:
    """Best-improvement 2-opt from `order`, the accelerator way: exactly `max_moves` steps, each
    applying the best move only if it gains more than the tolerance (torch.where), so nothing is
    read back to the host. Returns (order, number of applied moves as a tensor)."""
    b = order.shape[0]
    ar = torch.arange(b, device=d.device)
    bias = _two_opt_valid_bias(b, d)
    tol = _tolerance(d.abs().max())
    moves = torch.zeros(1, dtype=torch.long, device=d.device)
    for _ in range(max_moves):
        row_best, row_arg = _two_opt_gains(d, order, bias).max(1)
        i = row_best.argmax().view(1)  # first maximum in row-major order, like argmax of the whole matrix
        j = row_arg.index_select(0, i)  # tensor indexing only (a 0-dim index would read it to the host)
        improve = row_best.index_select(0, i) > tol
        segment = (ar > i) & (ar <= j) & improve
        order = order.index_select(0, torch.where(segment, i + 1 + j - ar, ar))
        moves = moves + improve
    return order, moves


def _two_opt_search_numpy(d: np.ndarray, order: np.ndarray, max_moves: int) -> tuple[np.ndarray, int]:
    """`_two_opt_search` in NumPy (the CPU path): stops at the first step without an improving
    move, which gives the same cycle. Returns (order, number of applied moves).

    A loop of its own rather than `_two_opt_search` on CPU tensors: the device loop must never read
    back to the host, so it runs all `max_moves` steps with `torch.where`; here reading is free, so
    it stops early, and NumPy's small-array ops are what make the CPU path fast (bench/pairing.py)."""
    b = order.shape[0]
    bias = _two_opt_valid_bias(b, torch.from_numpy(d)).numpy()
    tol = _tolerance(float(np.abs(d).max()))
    for moves in range(max_moves):
        gains = _two_opt_gains(d, order, bias)
        best = int(gains.argmax())  # first maximum in row-major order
        if not gains.flat[best] > tol:
            return order, moves
        i, j = divmod(best, b)
        order = np.concatenate([order[: i + 1], order[j:i:-1], order[j + 1 :]])
    return order, max_moves


def _objective(d: Tensor, partner: Tensor) -> Tensor:
    """sum_i D[i, partner[i]] as a 0-dim tensor on D's device."""
    return d.gather(1, partner[:, None]).sum()


def _improve(distance: Tensor, order: Tensor, max_moves: int | None, on_host: bool) -> Tensor:
    """2-opt local search from the cycle `order` (NumPy if `on_host`, else torch on D's device);
    the partner, guarded to be never worse than the start's."""
    b = order.shape[0]
    start = _partner_of(order)
    if b == 2:  # the only permutation without a self pair is the 2-cycle
        return start
    budget = b if max_moves is None else max_moves
    d = distance.detach().double()
    if on_host:
        found = torch.from_numpy(_two_opt_search_numpy(d.numpy(), order.numpy(), budget)[0])
    else:
        found = _two_opt_search(d, order, budget)[0]
    improved = _partner_of(found)
    return torch.where(_objective(d, improved) >= _objective(d, start), improved, start)  # guard; always true


@_register("greedy_local", True, "greedy's cycle improved by 2-opt local search: one cycle, never below greedy")
def greedy_local(distance: Tensor, max_moves: int | None = None) -> Tensor:
    """Greedy's cycle (Algorithm 1) improved by best-improvement 2-opt; (B,) long partner on D's device.

    Eq. 1 (max sum_i D[i, pi(i)] with no self and no symmetric pair) is a max-weight cycle cover
    without 1- and 2-cycles: NP-hard. This is a heuristic: local search on greedy's cycle.

    Algorithm: write greedy's cycle in visiting order o (partner[o_k] = o_{k+1 mod B}). Each step
    scores every 2-opt move at once as a (B,B) gain matrix (`_two_opt_gains`: reversing o[i+1..j],
    exact for any D, asymmetric included), takes the best (first maximum) and applies it only if
    its gain exceeds 1e-10 * max|D| (torch.where; no host read), for at most `max_moves` steps
    (default B). In bench/pairing.py 2-opt converges within ~0.4 B moves on noise-like maps; on
    object-like (blob) maps it needs ~B at B >= 128, where the budget binds (the gain is then
    still within 0.3 % of the assignment's upper bound). On the CPU the search runs in NumPy
    (like greedy) and stops at the first step without an improving move (same cycle, fewer steps);
    elsewhere all `max_moves` steps run as ~30 small tensor ops each on (B+1,B+1), never reading
    back to the host. Sums run in float64.

    Result: ONE Hamiltonian cycle (a reversal keeps a single cycle), so for B >= 3 every image is
    a target once and a source once, never its own source and never in a symmetric pair; every
    applied move raises the total, and a final guard returns greedy's cycle should the total not
    be >= greedy's, so it is never below greedy. It stops at a 2-opt local maximum (or at the move
    budget), not at the best cycle. Edge cases: B=1 gives [0] (as greedy); B=2 gives the 2-cycle
    [1, 0], the only permutation without a self pair (Eq. 1's symmetric-pair rule cannot hold;
    as greedy); B=3 gives greedy's 3-cycle, or its reverse (the only other 3-cycle, the one move
    there) when that has a larger total, which needs an asymmetric D.
    """
    _check_square(distance)
    if distance.shape[0] == 1:
        return torch.zeros(1, dtype=torch.long, device=distance.device)
    return _improve(distance, _greedy_order(distance), max_moves, on_host=distance.device.type == "cpu")


def _greedy_local_device(distance: Tensor, max_moves: int | None = None) -> Tensor:
    """`greedy_local` as it runs on an accelerator (device-side greedy, fixed step count), on any device."""
    _check_square(distance)
    if distance.shape[0] == 1:
        return torch.zeros(1, dtype=torch.long, device=distance.device)
    return _improve(distance, _greedy_order_device(distance), max_moves, on_host=False)


@_register("assignment", True, "max-distance assignment without self pairs (Hungarian, on the host); "
           "box masks only: most samples end in 2-cycles", restriction=BOX_ONLY_REASON)
def assignment(distance: Tensor) -> Tensor:
    """Max-distance assignment without self pairs: max sum_i D[i, pi(i)] over permutations with
    pi(i) != i, by scipy's Hungarian solver on the host (D copied to the CPU, float64).

    Box masks only: it ignores Eq. 1's symmetric-pair rule, and most samples end in 2-cycles
    (i <-> j), which with `pixel_ratio` (M_j = 1 - M_i) or `blend` masks duplicate samples.
    B=1 gives [0].
    """
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
