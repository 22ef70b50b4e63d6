"""A hung trial must not wedge a sweep (issue 19, item 3): it is found, reported, stopped and retried by Ray.

Real processes: a `mixsweep run` subprocess on a local Ray with a real sqlite MLflow store; the trial's worker
process is frozen with SIGSTOP (and never continued: only the stall mechanism may end it).
"""

from __future__ import annotations

import json
import os
import signal

import psutil
import pytest

from trainables.trialdir import TrialDir

from .reliability_helpers import assert_complete, run, start, wait_for, write_spec

EPOCHS = 5
#: well above an epoch of this tiny trial (seconds; ~1 s, 5-8 s on a 2-core machine at load 13): no stall but ours
STALL_TIMEOUT = 30


def trial_worker(driver: int) -> int | None:
    """The driver's one trial actor process (Ray titles an actor's worker `ray::ImplicitFunc...`)."""
    found = []
    for child in psutil.Process(driver).children(recursive=True):
        try:
            if "ImplicitFunc" in " ".join(child.cmdline()):
                found.append(child.pid)
        except psutil.Error:
            continue
    return found[0] if len(found) == 1 else None


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.slow
def test_stalled_trial_is_reported_stopped_and_retried_from_its_checkpoint(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "stall", epochs=EPOCHS, train_size=256, factors="mix.preset: [none]",
                      seeds=1, max_failures=2)
    spec.write_text(spec.read_text() + f"stall_timeout: {STALL_TIMEOUT}\n")
    storage = tmp_path / "runs"
    log = tmp_path / "run.log"
    proc = start("run", str(spec), "--storage", str(storage), log=log)
    try:
        wait_for(lambda: "epoch 1/" in log.read_text(), timeout=300, what="the trial's first epoch", proc=proc)
        found: list[int | None] = []
        wait_for(lambda: found.append(trial_worker(proc.pid)) or found[-1], timeout=60, what="the trial's process",
                 proc=proc)
        pid = found[-1]
        os.kill(pid, signal.SIGSTOP)  # hung: alive, silent (never continued)
        (workdir,) = (storage / "stall" / "trials").iterdir()
        done_when_stopped = TrialDir(workdir).epochs_done()
        assert 1 <= done_when_stopped < EPOCHS, "the trial ended before it could be stopped"

        wait_for(lambda: "none-s0: stalled: no progress for" in log.read_text(), timeout=120,
                 what="the stall reported", proc=proc)
        wait_for(lambda: not alive(pid), timeout=60, what="the stalled process stopped", proc=proc)
        assert proc.wait(timeout=300) == 0, log.read_text()[-4000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert f"limit {STALL_TIMEOUT} s, see stall_timeout" in text, text[-4000:]
    assert "Ray retries it from its last checkpoint (retry 1 of max_failures 2)" in text
    assert "none-s0: its stalled process was stopped; Ray runs it again from its last checkpoint" in text
    assert f"resuming {workdir} after epoch" in text  # from its checkpoint, not from scratch
    # each epoch once, in the trial folder and in MLflow; the run FINISHED
    assert [m["epoch"] for m in TrialDir(workdir).read_metrics()] == list(range(1, EPOCHS + 1))
    assert_complete(f"sqlite:///{storage / 'mlflow.db'}", "stall", n_trials=1, epochs=EPOCHS)
    assert json.loads((workdir / "stalled.json").read_text())["count"] == 1

    status = run("status", "stall", "--storage", str(storage), timeout=120)
    assert status.returncode == 0, status.stderr
    assert "none-s0: stalled once," in status.stdout, status.stdout
    assert f"limit {STALL_TIMEOUT:.1f} s: stall_timeout" in status.stdout


@pytest.mark.parametrize("value", ["0", "true", "'10s'", ".inf"])
def test_stall_timeout_must_be_positive_seconds(tmp_path, value):
    """`stall_timeout`: a number of seconds > 0 or null; anything else is one message, exit 2."""
    spec = write_spec(tmp_path / "s.yaml", "bad", seeds=1, factors="mix.preset: [none]")
    spec.write_text(spec.read_text() + f"stall_timeout: {value}\n")
    line = len(spec.read_text().splitlines())
    result = run("validate", str(spec), timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"stall_timeout (line {line}): expected a number of seconds > 0, or null for the default" in result.stderr
    assert "Traceback" not in result.stderr


def test_stall_timeout_is_listed_and_accepted(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "good", seeds=1, factors="mix.preset: [none]")
    spec.write_text(spec.read_text() + "stall_timeout: 2.5\n")
    assert run("validate", str(spec), timeout=120).returncode == 0
    listed = run("list", timeout=120)
    assert listed.returncode == 0 and "stall_timeout" in listed.stdout and "(default null)" in listed.stdout
