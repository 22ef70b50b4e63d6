"""Packing trials on one GPU: total training images/s of k concurrent `small_cnn` trials at `gpu: 1/k`.

A sweep with `resources: {gpu: 1/k}` has Ray run k trial processes on one GPU: each sees that GPU
(Ray sets CUDA_VISIBLE_DEVICES, and OMP_NUM_THREADS to the trial's CPUs) and nothing isolates their
memory or kernels. This runs that arrangement without Ray's start-up and the trials' evaluation and
checkpoints, so that only the training steps share the GPU: k worker processes, each building its trial
from the shipped `smoke` spec loaded with `seeds=k`, `resources.gpu=1/k` and one preset
(`orchestrator.spec.load_spec`, `trainables.loop.build_trial`), training one warm-up epoch and then,
started together, whole epochs (`trainables.loop.train_one_epoch`) for a fixed wall-clock window.
Reported per k: the sum of the workers' images/s and its ratio to the k=1 total.

    python bench/packing.py [--device cuda] [--k 1,2,4] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, markdown_table  # noqa: E402

PRESET = "saliencymix"  #: every packed trial mixes with it: the project's detectors run on the GPU too
SPEC = "smoke"  #: the demo's trials: small_cnn on synthetic_salient, batch 32, AdamW
MARK = "PACKING "  #: prefix of the worker's protocol lines on stdout (anything else there is ignored)


def trial_configs(k: int, device: torch.device, overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The configs of the k trials a sweep with `resources.gpu=1/k` would run (ValueError if Ray would not pack k)."""
    from orchestrator.spec import expand, load_spec

    spec = load_spec(SPEC, {"seeds": k, "resources.gpu": 1 / k, "factors.mix.preset": [PRESET],
                            "epochs": 1000, **(overrides or {})})  # epochs: the LR schedule outlasts the window
    if int(1 / spec.resources.gpu + 1e-9) != k:
        raise ValueError(f"resources.gpu={spec.resources.gpu} does not pack {k} trials on one GPU")
    return [{**t.config, "device": device.type, "cpu": spec.resources.cpu} for t in expand(spec)]


def cuda_env(device: torch.device) -> dict[str, str]:
    """The environment of a child process that is to see only `device` (as Ray gives a trial its GPU)."""
    env = dict(os.environ)
    if device.type == "cuda":
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        index = device.index or 0
        env["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
    return env


def worker(config: dict[str, Any], seconds: float) -> None:
    """One packed trial: build, warm up, say ready, wait for `go` on stdin, train whole epochs for `seconds`."""
    from trainables.config import validate_config
    from trainables.loop import build_trial, train_one_epoch
    from trainables.runtime import keep_freed_memory

    keep_freed_memory()  # as in trial processes
    config = dict(config)
    config.pop("cpu", None)
    setup, state = build_trial(validate_config(config))
    train_one_epoch(setup, state)  # warm-up: cuDNN autotuning, allocator, lazy inits (ends synchronised)
    print(MARK + "ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return
    images, t0 = 0.0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        m = train_one_epoch(setup, state)  # reads its device timer at the end: synchronised
        images += m["throughput/img_s"] * m["time/epoch_s"]
    elapsed = time.perf_counter() - t0
    print(MARK + json.dumps({"images": round(images), "seconds": elapsed}), flush=True)


def _lines(proc: subprocess.Popen, out: queue.Queue) -> None:
    for line in proc.stdout:
        if line.startswith(MARK):
            out.put((proc.pid, line[len(MARK):].strip()))
    out.put((proc.pid, None))  # stdout closed: the worker ended


def _collect(procs: list[subprocess.Popen], lines: queue.Queue, what: str, timeout: float) -> dict[int, str]:
    """One protocol line from every worker (RuntimeError when one ends without it or the time runs out)."""
    got: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(got) < len(procs):
        try:
            pid, line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            missing = len(procs) - len(got)
            raise RuntimeError(f"packing: no {what} from {missing} worker(s) in {timeout:.0f} s") from None
        if line is None:
            raise RuntimeError(f"packing: worker {pid} ended before {what}")
        got[pid] = line
    return got


def run_packed(configs: list[dict[str, Any]], device: torch.device, seconds: float, *,
               start_timeout: float = 300) -> dict[str, Any]:
    """Train the trials `configs` concurrently on `device` for `seconds` once all are warm; images/s per trial."""
    env = cuda_env(device)
    env["OMP_NUM_THREADS"] = str(int(configs[0].get("cpu", 1)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(__file__).resolve().parent.parent),
                                                    env.get("PYTHONPATH")) if p)
    procs: list[subprocess.Popen] = []
    lines: queue.Queue = queue.Queue()
    with tempfile.TemporaryFile("w+") as log:
        try:
            for config in configs:
                proc = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(config),
                                         "--seconds", str(seconds)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=log, text=True, env=env)
                procs.append(proc)
                threading.Thread(target=_lines, args=(proc, lines), daemon=True).start()
            _collect(procs, lines, "ready", start_timeout)
            for proc in procs:
                proc.stdin.write("go\n")
                proc.stdin.flush()
            results = [json.loads(r) for r in _collect(procs, lines, "result", seconds + start_timeout).values()]
        except RuntimeError as exc:
            log.seek(0)
            tail = log.read()[-1500:]
            raise RuntimeError(f"{exc}; workers' stderr ends with:\n{tail}") from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
    per_trial = [r["images"] / r["seconds"] for r in results]
    return {"k": len(configs), "gpu_per_trial": 1 / len(configs), "total_img_s": sum(per_trial),
            "per_trial_img_s": per_trial, "images": sum(r["images"] for r in results),
            "window_s": max(r["seconds"] for r in results)}


def packing_rows(device: torch.device, ks=(1, 2, 4), seconds: float = 10.0,
                 overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`run_packed` for every k, with `speedup` = total images/s over the first k's."""
    rows = []
    for k in ks:
        row = run_packed(trial_configs(k, device, overrides), device, seconds)
        row["speedup"] = row["total_img_s"] / rows[0]["total_img_s"] if rows else 1.0
        rows.append(row)
        print(f"  k={k}: {row['total_img_s']:8.0f} img/s in total ({row['speedup']:.2f}x k={ks[0]}), per trial "
              + ", ".join(f"{v:.0f}" for v in row["per_trial_img_s"]), file=sys.stderr)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--k", default="1,2,4", help="comma-separated numbers of packed trials")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed window per k")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(json.loads(args.worker), args.seconds)
        return
    device = torch.device(args.device)
    rows = packing_rows(device, [int(k) for k in args.k.split(",")], args.seconds)
    print(f"## Packing small_cnn trials ({PRESET}) on one device — {describe(device)}\n")
    print(markdown_table(["trials (gpu each)", "images/s in total", "vs first"],
                         [[f"{r['k']} ({r['gpu_per_trial']:g})", f"**{r['total_img_s']:.0f}**", f"{r['speedup']:.2f}x"]
                          for r in rows]))


if __name__ == "__main__":
    main()
