"""Pairing quality and cost: `greedy_local` and `assignment` against `greedy`, measured in one run.

For each batch size B, N saliency-like distance matrices: (B,32,32) maps blurred 7x7 sigma 3 and
summed to 1 per image (GuidedMixup's preprocessing), D = `saliency_distance`. Two kinds of maps:
`noise` (uniform noise to the 4th power) and `blobs` (1-3 Gaussian blobs at random places and
widths, plus a little noise: object-like saliency). Reported per (B, kind):

1. total distance sum_i D[i, partner[i]] of `greedy_local` over `greedy` (mean gain in %, and
   the smallest gain: it must never be negative), and the 2-opt moves it applied (CPU count;
   the budget is B; on an accelerator all B steps run, moves or no-ops);
2. share of samples in 2-cycles under `assignment` (why it is box-only) and its total over
   greedy's (the assignment ignores Eq. 1's symmetric-pair rule, so it is an upper bound);
3. time of `greedy_local` and of `assignment` relative to `greedy` on the same matrices,
   candidates interleaved round by round (median of per-round ratios).

    python bench/pairing.py [--device cpu|cuda] [--batches 16,32,64,128,256] [--matrices 20]
                            [--rounds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, interleaved, markdown_table, median, paired_ratio  # noqa: E402

from trainables.mixing.ops import gaussian_blur, normalize_sum  # noqa: E402
from trainables.mixing.pairing import (  # noqa: E402
    _greedy_order,
    _two_opt_search_numpy,
    assignment,
    greedy,
    greedy_local,
    saliency_distance,
)

KINDS = ("noise", "blobs")


def raw_maps(kind: str, batch: int, g: torch.Generator, size: int = 32) -> torch.Tensor:
    """(B,size,size) non-negative maps before GuidedMixup's blur and sum-to-1."""
    noise = torch.rand(batch, size, size, generator=g, dtype=torch.float64)
    if kind == "noise":
        return noise**4
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64),
                            indexing="ij")
    maps = 0.05 * noise
    for k in range(3):
        present = (torch.rand(batch, generator=g) < (1.0 if k == 0 else 0.5)).double()
        cy, cx = (torch.rand(2, batch, generator=g, dtype=torch.float64) * size).unbind(0)
        sigma = 1.5 + 6.0 * torch.rand(batch, generator=g, dtype=torch.float64)
        weight = present * (0.5 + torch.rand(batch, generator=g, dtype=torch.float64))
        d2 = (yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2
        maps = maps + weight[:, None, None] * torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    return maps


def distance_matrices(kind: str, batch: int, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [saliency_distance(normalize_sum(gaussian_blur(raw_maps(kind, batch, g), 7, 3.0))).float()
            for _ in range(n)]


def total(d: torch.Tensor, partner: torch.Tensor) -> float:
    return float(d.double().gather(1, partner.to(d.device)[:, None]).sum())


def two_cycle_share(partner: torch.Tensor) -> float:
    return float((partner[partner] == torch.arange(len(partner), device=partner.device)).double().mean())


def quality(ds: list[torch.Tensor]) -> dict[str, float]:
    """Gains over greedy, moves, 2-cycle share of the assignment; computed on the CPU copies."""
    gains, moves, shares, upper = [], [], [], []
    for d in ds:
        d = d.cpu()
        base = total(d, greedy(d))
        gains.append(100 * (total(d, greedy_local(d)) / base - 1))
        moves.append(_two_opt_search_numpy(d.double().numpy(), _greedy_order(d).numpy(), len(d))[1])
        a = assignment(d)
        shares.append(100 * two_cycle_share(a))
        upper.append(100 * (total(d, a) / base - 1))
    return {"gain_mean_pct": statistics.mean(gains), "gain_min_pct": min(gains),
            "moves_mean": statistics.mean(moves), "moves_max": max(moves),
            "assignment_2cycle_pct": statistics.mean(shares), "assignment_gain_pct": statistics.mean(upper)}


def timing(ds: list[torch.Tensor], device: torch.device, rounds: int) -> dict[str, float]:
    """Per-call medians (ms) and paired ratios to greedy, all pairings on the same matrices."""
    ds = [d.to(device) for d in ds]
    fns = {name: (lambda f=f: [f(d) for d in ds], device)
           for name, f in (("greedy", greedy), ("greedy_local", greedy_local), ("assignment", assignment))}
    t = interleaved(fns, rounds=rounds)
    per_call = {name: 1e3 * median(ts) / len(ds) for name, ts in t.items()}
    return {"greedy_ms": per_call["greedy"], "greedy_local_ms": per_call["greedy_local"],
            "assignment_ms": per_call["assignment"],
            "greedy_local_ratio": paired_ratio(t["greedy_local"], t["greedy"]),
            "assignment_ratio": paired_ratio(t["assignment"], t["greedy"])}


def run(device: torch.device, batches: list[int], n: int, rounds: int) -> list[dict[str, float | int | str]]:
    rows = []
    for batch in batches:
        for k, kind in enumerate(KINDS):
            ds = distance_matrices(kind, batch, n, seed=1000 * batch + k)
            row = {"batch": batch, "maps": kind, "matrices": n, **quality(ds), **timing(ds, device, rounds)}
            rows.append(row)
            print(f"  B={batch:3d} {kind:5s}: greedy_local {row['gain_mean_pct']:+.2f} % "
                  f"(min {row['gain_min_pct']:+.2f} %, {row['moves_mean']:.0f} moves), "
                  f"time x{row['greedy_local_ratio']:.1f}; assignment 2-cycles {row['assignment_2cycle_pct']:.0f} %",
                  file=sys.stderr)
    return rows


def table(rows: list[dict]) -> str:
    header = ["B", "maps", "greedy_local gain (mean / min)", "2-opt moves (mean / max)",
              "assignment: samples in 2-cycles", "assignment total vs greedy", "greedy (ms)",
              "greedy_local time", "assignment time"]
    body = [[str(r["batch"]), r["maps"], f"**{r['gain_mean_pct']:+.2f} %** / {r['gain_min_pct']:+.2f} %",
             f"{r['moves_mean']:.1f} / {r['moves_max']}", f"**{r['assignment_2cycle_pct']:.0f} %**",
             f"{r['assignment_gain_pct']:+.2f} %", f"{r['greedy_ms']:.2f}",
             f"**{r['greedy_local_ratio']:.1f}x**", f"{r['assignment_ratio']:.1f}x"] for r in rows]
    return markdown_table(header, body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", default="16,32,64,128,256", help="comma-separated batch sizes")
    parser.add_argument("--matrices", type=int, default=20, help="random distance matrices per (B, maps)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    if any(b < 2 for b in batches) or args.matrices < 1 or args.rounds < 1:
        parser.error("batches must be >= 2, matrices and rounds >= 1")
    rows = run(device, batches, args.matrices, args.rounds)
    print(f"## Pairing: greedy_local and assignment vs greedy (Algorithm 1) — {describe(device)}\n")
    print(table(rows))
    print(f"\n{args.matrices} matrices per row; gains are of sum_i D[i, partner[i]]; times are per matrix, "
          f"ratios to greedy are medians over {args.rounds} interleaved rounds.")
    if args.json:
        args.json.write_text(json.dumps({"device": describe(device), "rows": rows}, indent=2) + "\n")
    if not all(math.isfinite(r["gain_min_pct"]) and r["gain_min_pct"] >= 0 for r in rows):
        sys.exit("greedy_local fell below greedy on some matrix")


if __name__ == "__main__":
    main()
