"""`make gpu-check` without CUDA: it says so, runs its own code on the CPU at tiny sizes, writes its JSON, exits 0.

With CUDA, `make gpu-check` is the real run of several minutes (run it by hand), so the end-to-end test is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, make gpu-check is the real multi-minute run")
@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_gpu_check_without_cuda(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    # -o install: the interpreter running this suite is installed already; PY: that interpreter
    # a session of its own: on a timeout, make and everything under it (the script, its pytest, the packing
    # workers) are killed together, not left running into the next tests
    make = subprocess.Popen(["make", "-C", str(REPO), "--no-print-directory", "-o", "install", "gpu-check",
                             f"PY={sys.executable}", f"RUNS={tmp_path}"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        stdout, stderr = make.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(make.pid, signal.SIGKILL)
        make.communicate()
        raise
    proc = subprocess.CompletedProcess(make.args, make.returncode, stdout, stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "[gpu-check] no CUDA device" in proc.stdout
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["cuda"] is False and data["mode"] == "self-check" and data["exit_code"] == 0
    assert data["torch"] == torch.__version__ and data["date"] and data["device"].startswith("CPU")
    assert [s["name"] for s in data["steps"]] == list(gpu_check.STEPS)
    for step in data["steps"]:
        assert step["status"] == "ok" and step["error"] is None and step["rows"], step
    assert data["rows"] and all(r["self_check"] and r["pass"] is None for r in data["rows"])
    assert {r["step"] for r in data["rows"]} == set(gpu_check.STEPS)
    tests = data["steps"][0]["rows"][0]["detail"]
    assert tests["failed"] == 0 and tests["skipped"] > 0  # the gpu-marked tests exist and skip here
    table = proc.stdout[proc.stdout.index("| step | metric |"):]
    assert all(f"| {name} |" in table for name in gpu_check.STEPS) and "self-check" in table


def _rows(*passes):
    return [gpu_check.row(f"m{i}", "1", "goal" if p is not None else "", p) for i, p in enumerate(passes)]


def test_a_crashing_step_is_recorded_and_the_others_run():
    plan = gpu_check.SELF_CHECK
    cpu = torch.device("cpu")

    def boom(device, plan):
        raise RuntimeError("CUDA error: out of memory\nmore")

    steps = [gpu_check.run_step("saliency", cpu, plan, boom),
             gpu_check.run_step("overhead", cpu, plan, lambda d, p: _rows(True, None))]
    assert steps[0]["status"] == "crashed" and steps[0]["error"] == "RuntimeError: CUDA error: out of memory\nmore"
    assert steps[1]["status"] == "ok" and len(steps[1]["rows"]) == 2
    assert gpu_check.exit_code(steps, strict=False) == 1
    table = gpu_check.table(steps, self_check=False)
    assert "| saliency | (step crashed) | RuntimeError: CUDA error: out of memory |  | CRASHED |" in table
    assert "| overhead | m0 | 1 | goal | met |" in table


def test_exit_code_missed_goals_and_failed_gpu_tests():
    ok = {"name": "overhead", "status": "ok", "rows": _rows(True, False, None)}
    assert gpu_check.exit_code([ok], strict=False) == 0  # a missed goal is a result ...
    assert gpu_check.exit_code([ok], strict=True) == 1  # ... unless --strict
    tests = {"name": "gpu_tests", "status": "ok",
             "rows": [gpu_check.row("pytest -m gpu", "", "all pass", False, passed=3, failed=1, skipped=0)]}
    assert gpu_check.exit_code([tests], strict=False) == 1
    assert "**missed**" in gpu_check.table([ok], self_check=False)
