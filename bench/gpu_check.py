"""`make gpu-check`: the GPU acceptance run, one command; prints one table and writes it as JSON.

Steps (a step that crashes is recorded in the table and the others still run):
1. gpu_tests: the `gpu`-marked tests (`pytest -m gpu` in a subprocess; counts from its JUnit XML).
2. saliency: batched detectors vs OpenCV per image, B=256 at 32x32 and B=64 at 224x224 (`bench/saliency.py`).
   Goal for fine_grained at 32x32: >= 100x, and < 1 ms per batch.
3. overhead: a full ResNet-18 (CIFAR) training step per preset vs `none`, batch 256, bf16 autocast
   (`bench/train_step.py`). GuidedMixup's Table 2: SaliencyMix +353-923 %, Guided-SR +7 %, Guided-AP +78-89 %;
   goal: <= 5 % for every preset without gradient saliency.
4. packing: 1, 2 and 4 concurrent small_cnn trials on one GPU at `resources.gpu` 1/k, images/s in total
   (`bench/packing.py`).

The JSON (rewritten after every step, so a run cut short keeps what it measured) holds every row: step,
metric, value, goal, pass (null where there is no goal), and the device, torch version and date.
Exit status: 1 when a step crashed or a gpu test failed; 0 otherwise, missed goals included (they are
results, shown as "missed"; `--strict` turns a missed goal into exit 1).

Without CUDA it says so, runs every step on the CPU at tiny sizes so that a broken script is caught (rows
marked "self-check": not measurements), writes the JSON with "cuda": false and exits by the same rule.

    python bench/gpu_check.py --out mixsweep_runs/gpu_check.json [--device cuda:0] [--steps saliency,...] [--strict]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, markdown_table  # noqa: E402
from packing import cuda_env, packing_rows  # noqa: E402
from saliency import saliency_rows  # noqa: E402
from train_step import step_rows  # noqa: E402

from orchestrator.tracking import git_commit  # noqa: E402
from trainables.files import atomic_write_text  # noqa: E402
from trainables.runtime import keep_freed_memory  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STEPS = ("gpu_tests", "saliency", "overhead", "packing")
OVERHEAD_GOAL_PCT = 5.0
SPEEDUP_GOAL, BATCH_MS_GOAL = 100.0, 1.0  #: fine_grained at 32x32


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the real ones on a GPU, tiny ones for the CPU self-check."""

    rounds: int = 9
    shapes: tuple[tuple[int, int], ...] = ((256, 32), (64, 224))
    batch: int = 256
    step_rounds: int = 25
    presets: tuple[str, ...] | None = None  #: None: every preset
    amp: bool = True
    ks: tuple[int, ...] = (1, 2, 4)
    seconds: float = 10.0
    trial_overrides: tuple[tuple[str, Any], ...] = ()


SELF_CHECK = Plan(rounds=1, shapes=((8, 32),), batch=4, step_rounds=1, presets=("saliencymix",), amp=False, ks=(1,),
                  seconds=1.0, trial_overrides=(("data.train_size", 64), ("data.test_size", 16)))


def row(metric: str, value: str, goal: str = "", ok: bool | None = None, **detail: Any) -> dict[str, Any]:
    return {"metric": metric, "value": value, "goal": goal, "pass": ok, "detail": detail}


def gpu_tests(device: torch.device, plan: Plan) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        proc = subprocess.run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider",
                               f"--junitxml={xml}"], cwd=REPO, env=cuda_env(device), capture_output=True, text=True,
                              timeout=300)
        if not xml.exists():
            raise RuntimeError(f"pytest wrote no report (exit {proc.returncode}): "
                               f"{proc.stdout[-1000:]}{proc.stderr[-1000:]}")
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    passed = n["tests"] - n["failures"] - n["errors"] - n["skipped"]
    failed = n["failures"] + n["errors"]
    if failed:
        print(proc.stdout[-3000:], file=sys.stderr)
    ok = failed == 0 and (passed > 0 or device.type != "cuda")
    return [row("pytest -m gpu", f"{passed} passed, {failed} failed, {n['skipped']} skipped", "all pass", ok,
                passed=passed, failed=failed, skipped=n["skipped"], exit_code=proc.returncode)]


def saliency(device: torch.device, plan: Plan) -> list[dict]:
    rows = []
    for r in saliency_rows(device, plan.rounds, plan.shapes):
        where = f"{r['kind']} B={r['batch']} {r['size']}x{r['size']}"
        goal_row = r["kind"] == "fine_grained" and r["size"] == 32
        rows.append(row(f"{where}: speed-up vs OpenCV per image", f"{r['speedup']:.1f}x",
                        f">= {SPEEDUP_GOAL:g}x" if goal_row else "", r["speedup"] >= SPEEDUP_GOAL if goal_row else None,
                        **r))
        ms = r["batched_s"] * 1e3
        rows.append(row(f"{where}: batched time", f"{ms:.3f} ms", f"< {BATCH_MS_GOAL:g} ms" if goal_row else "",
                        ms < BATCH_MS_GOAL if goal_row else None, ms=ms))
    return rows


def overhead(device: torch.device, plan: Plan) -> list[dict]:
    amp_dtype = torch.bfloat16 if plan.amp and device.type == "cuda" else None
    where = f"ResNet-18 B={plan.batch}{', bf16' if amp_dtype else ''}"
    rows = []
    for r in step_rows(device, plan.batch, plan.step_rounds, list(plan.presets) if plan.presets else None, amp_dtype):
        if r["preset"] == "none":
            rows.append(row(f"{where}: step with none", f"{r['step_s'] * 1e3:.2f} ms", **r))
        elif r["gradient"]:
            rows.append(row(f"{where}: {r['preset']} overhead vs none", f"{r['overhead_pct']:+.1f} %",
                            "none (gradient saliency)", None, **r))
        else:
            rows.append(row(f"{where}: {r['preset']} overhead vs none", f"{r['overhead_pct']:+.1f} %",
                            f"<= {OVERHEAD_GOAL_PCT:g} %", r["overhead_pct"] <= OVERHEAD_GOAL_PCT, **r))
    return rows


def packing(device: torch.device, plan: Plan) -> list[dict]:
    if device.type == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks are not the workers'
    return [row(f"small_cnn trials: {r['k']} at gpu {r['gpu_per_trial']:g}",
                f"{r['total_img_s']:.0f} img/s ({r['speedup']:.2f}x k={plan.ks[0]})", **r)
            for r in packing_rows(device, plan.ks, plan.seconds, dict(plan.trial_overrides))]


STEP_FNS: dict[str, tuple[str, Callable[[torch.device, Plan], list[dict]]]] = {
    "gpu_tests": ("the gpu-marked tests (pytest -m gpu)", gpu_tests),
    "saliency": ("batched saliency vs OpenCV per image", saliency),
    "overhead": ("training-step overhead per preset vs none", overhead),
    "packing": ("1, 2, 4 small_cnn trials packed on one device", packing),
}


def run_step(name: str, device: torch.device, plan: Plan, fn: Callable[[torch.device, Plan], list[dict]]) -> dict:
    """One step as a record: status ok / crashed, seconds, rows, the error (a crash does not propagate)."""
    t0 = time.perf_counter()
    try:
        rows, error = fn(device, plan), None
    except Exception as exc:  # GPU time is scarce: one broken step must not lose the others' numbers
        traceback.print_exc()
        rows, error = [], f"{type(exc).__name__}: {exc}"
    return {"name": name, "status": "crashed" if error else "ok", "seconds": time.perf_counter() - t0,
            "error": error, "rows": rows}


def exit_code(steps: list[dict], strict: bool) -> int:
    crashed = any(s["status"] == "crashed" for s in steps)
    failed_tests = any(r["detail"].get("failed") for s in steps if s["name"] == "gpu_tests" for r in s["rows"])
    missed = any(r["pass"] is False for s in steps for r in s["rows"])
    return 1 if crashed or failed_tests or (strict and missed) else 0


def table(steps: list[dict], self_check: bool) -> str:
    lines = []
    for s in steps:
        if s["status"] != "ok":
            lines.append([s["name"], "(step " + s["status"] + ")", (s["error"] or "?").splitlines()[0][:200], "",
                          s["status"].upper()])
        for r in s["rows"]:
            result = "self-check" if self_check else {True: "met", False: "**missed**", None: ""}[r["pass"]]
            lines.append([s["name"], r["metric"], r["value"], r["goal"], result])
    return markdown_table(["step", "metric", "value", "goal", "result"], lines)


def report(steps: list[dict], device: torch.device, cuda: bool, plan: Plan, started: float) -> dict[str, Any]:
    self_check = not cuda
    for s in steps:
        for r in s["rows"]:
            r["step"], r["self_check"] = s["name"], self_check
            if self_check:
                r["pass"] = None  # tiny CPU sizes: a check that the code runs, not a measurement
    return {"cuda": cuda, "mode": "self-check" if self_check else "gpu", "device": describe(device),
            "torch": torch.__version__, "cuda_version": torch.version.cuda, "git_commit": git_commit(),
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": time.perf_counter() - started,
            "plan": asdict(plan), "steps": steps, "rows": [r for s in steps for r in s["rows"]]}


def main(argv: list[str] | None = None) -> int:
    keep_freed_memory()  # as in trial processes (see trainables/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "mixsweep_runs" / "gpu_check.json")
    parser.add_argument("--device", default="cuda", help="the CUDA device to check (default cuda)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed, too")
    args = parser.parse_args(argv)
    names = [s for s in args.steps.split(",") if s]
    if unknown := [s for s in names if s not in STEPS]:
        parser.error(f"unknown step(s) {', '.join(unknown)}; choose from {', '.join(STEPS)}")
    started, device = time.perf_counter(), torch.device(args.device)
    cuda = device.type == "cuda" and torch.cuda.is_available()
    plan = Plan() if cuda else SELF_CHECK
    if not cuda:
        why = "torch sees none" if device.type == "cuda" else f"--device {args.device}"
        print(f"[gpu-check] no CUDA device ({why}; torch {torch.__version__}): checking that the script runs, "
              f"on the CPU at tiny sizes (a self-check, not measurements)", flush=True)
        device = torch.device("cpu")
    else:
        print(f"[gpu-check] {describe(device)}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    steps: list[dict] = []
    for i, name in enumerate(names, 1):
        what, fn = STEP_FNS[name]
        print(f"[gpu-check] step {i}/{len(names)} {name}: {what} ...", flush=True)
        steps.append(run_step(name, device, plan, fn))
        s = steps[-1]
        print(f"[gpu-check] step {i}/{len(names)} {name}: {s['status']} in {s['seconds']:.1f} s", flush=True)
        # after every step, atomically: a run cut short (a CUDA fault, the lease ending) keeps what it measured
        partial = report(steps, device, cuda, plan, started)
        atomic_write_text(args.out, json.dumps(partial, indent=2, default=str) + "\n")
    data = report(steps, device, cuda, plan, started)
    code = exit_code(steps, args.strict)
    data["exit_code"] = code
    atomic_write_text(args.out, json.dumps(data, indent=2, default=str) + "\n")
    title = "self-check on the CPU at tiny sizes (not measurements)" if not cuda else "measured"
    print(f"\n## GPU acceptance run — {data['device']}, {title}, {data['seconds']:.0f} s (goal < 8 min)\n")
    print(table(steps, not cuda))
    print(f"\n[gpu-check] wrote {args.out}; exit {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
