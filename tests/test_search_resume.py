"""Optuna search sweeps survive a killed driver and keep their sampler's history; ASHA stops count.

Real processes throughout (the `mixsweep` CLI, a local Ray, sqlite MLflow), like test_reliability.
"""

from __future__ import annotations

import glob
import json
import pickle
import re
import signal
from pathlib import Path

import pytest

from orchestrator.launch import leftover_ray_processes, stop_processes
from orchestrator.storage import sweep_paths

from .reliability_helpers import run, snapshot, start, trial_runs, wait_for, write_spec

pytestmark = pytest.mark.slow


def search_spec(path: Path, name: str, *, num_trials: int, space: str, metric: str, epochs: int,
                max_concurrent: int = 2) -> Path:
    write_spec(path, name, epochs=epochs, train_size=128, factors="{}", seeds=1)
    path.write_text(path.read_text() + f"search: {{algorithm: optuna, num_trials: {num_trials}, max_concurrent: "
                    f"{max_concurrent}, space: {{optim.lr: '{space}'}}}}\nscheduler: asha\n"
                    f"asha: {{grace_period: 1, reduction_factor: 2}}\nmetric: {metric}\n")
    return path


def sqlite_uri(storage: Path) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


def workdirs(storage: Path, name: str) -> list[Path]:
    """The trials that started: a sampled trial writes its params first thing."""
    return sorted(Path(p).parent for p in glob.glob(str(storage / name / "trials/*/sampled.json")))


def sampled_lr(workdir: Path) -> float:
    return json.loads((workdir / "sampled.json").read_text())["optim.lr"]


def summary(err: str, name: str) -> dict[str, int]:
    """The driver's last summary line: finished / failed / stopped by ASHA / not finished / of."""
    found = re.findall(rf"sweep {name}: (\d+) finished, (\d+) failed, (\d+) stopped by ASHA, (\d+) not finished of "
                       rf"(\d+)", err)
    assert found, err[-4000:]
    return dict(zip(("finished", "failed", "stopped", "unfinished", "of"), map(int, found[-1])))


def check_runs(storage: Path, name: str, n_trials: int) -> tuple[set[str], set[str]]:
    """One MLflow run per trial, each FINISHED or stopped by ASHA; returns (finished, stopped) run_hashes."""
    runs = trial_runs(sqlite_uri(storage), name)
    hashes = [r.data.tags["mixsweep.run_hash"] for r in runs]
    assert len(runs) == n_trials and len(set(hashes)) == n_trials, sorted(hashes)
    assert set(hashes) == {wd.name for wd in workdirs(storage, name)}
    finished = {r.data.tags["mixsweep.run_hash"] for r in runs if r.info.status == "FINISHED"}
    stopped = {r.data.tags["mixsweep.run_hash"] for r in runs if r.info.status == "KILLED"
               and "stopped early by ASHA" in r.data.tags.get("mixsweep.error", "")}
    assert len(finished) + len(stopped) == n_trials, [(r.info.run_name, r.info.status,
                                                       r.data.tags.get("mixsweep.error")) for r in runs]
    assert finished == {wd.name for wd in workdirs(storage, name) if (wd / "final.json").exists()}
    return finished, stopped


def test_search_sigkill_then_resume(tmp_path):
    name, n = "killed-search", 8
    spec = search_spec(tmp_path / "s.yaml", name, num_trials=n, space="loguniform(0.001, 0.5)",
                       metric="best/top1_err", epochs=4)
    storage = tmp_path / "runs"
    proc = start("run", str(spec), "--storage", str(storage), log=tmp_path / "run.log")

    # kill while one trial has finished and another has started. This holds from the second wave of trials
    # to the last one (seconds); waiting for a trial at exactly epoch 1 missed its window one run in a few
    # on a quiet machine (an epoch of this sweep takes 0.1 s there)
    def finished_and_started() -> bool:
        wds = workdirs(storage, name)
        return any((wd / "final.json").exists() for wd in wds) and any(
            not (wd / "final.json").exists() for wd in wds)

    wait_for(finished_and_started, timeout=300, what="a finished trial and a started one", proc=proc, poll=0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Ray fate-shares its processes with the driver, but a busy worker can take a moment to notice and may
    # finish its trial meanwhile; stop what the killed driver left (as `resume` would first) before counting
    stop_processes(leftover_ray_processes(json.loads(sweep_paths(storage, name).driver.read_text())))
    before = workdirs(storage, name)
    done = {wd: snapshot(wd) for wd in before if (wd / "final.json").exists()}
    partial = {wd: (wd / "metrics.jsonl").read_text() for wd in before
               if not (wd / "final.json").exists() and (wd / "metrics.jsonl").exists()}
    lrs = {wd.name: sampled_lr(wd) for wd in before}
    assert done and len(before) > len(done), "nothing left to continue"

    resumed = run("resume", name, "--storage", str(storage), timeout=600)
    err = resumed.stderr
    assert resumed.returncode == 0, err[-4000:]
    assert not re.search(r"^Traceback", err, re.M), err[-4000:]  # the driver's (Ray workers' lines are prefixed)
    assert (f"optuna search, {n} trials - {len(done)} finished, 0 failed, 0 stopped by ASHA, "
            f"{len(before) - len(done)} to continue; launching {n - len(done)}") in err, err[-4000:]
    # every trial ended: finished, or stopped by ASHA, as the driver, sweep.json and MLflow all say
    counts = summary(err, name)
    assert counts["unfinished"] == 0 and counts["failed"] == 0 and counts["of"] == n, counts
    finished, stopped = check_runs(storage, name, n)
    assert (len(finished), len(stopped)) == (counts["finished"], counts["stopped"])
    assert set(json.loads((storage / name / "sweep.json").read_text())["stopped"]) == stopped
    # the sampler kept its history: the trials sampled before the kill ran on with their own params
    # (same workdirs), and the new ones are new configs, not the old ones sampled again
    after = workdirs(storage, name)
    assert set(before) <= set(after) and len(after) == n
    assert {wd.name: sampled_lr(wd) for wd in before} == lrs
    assert len({sampled_lr(wd) for wd in after}) == n
    # ... and the resumed launch's study was told the results of the trials that had ended
    state_file = sorted(glob.glob(str(storage / name / "ray/search-*/searcher-state-*.pkl")))[-1]
    study = pickle.loads(Path(state_file).read_bytes())["_ot_study"]
    told = {t.params["trial/config/optim.lr"]: t.value for t in study.trials if t.state.name == "COMPLETE"}
    assert len(study.trials) == n
    for wd in done:
        last = json.loads((wd / "metrics.jsonl").read_text().splitlines()[-1])
        assert told[lrs[wd.name]] == last["best/top1_err"]
    # nothing redone: finished trials untouched, partial ones continued from their checkpoint
    for wd, snap in done.items():
        assert snapshot(wd) == snap
    for wd, text in partial.items():
        assert (wd / "metrics.jsonl").read_text().startswith(text), wd.name
    # done: a further resume runs nothing and says so
    again = run("resume", name, "--storage", str(storage))
    assert again.returncode == 0 and "nothing to run" in again.stderr, again.stderr[-4000:]


def test_search_asha_stops_hopeless_trials(tmp_path):
    # the seeded sampler's first five learning rates are about 4e-4, 4e-3, 8e-4, 3e-4 and 6e-5: the
    # fifth starts once three trials have ended, and one epoch at a rate 6x below all of theirs leaves
    # its test loss above their median (same seed, same data, same init), so ASHA must stop it
    name = "asha-search"
    spec = search_spec(tmp_path / "s.yaml", name, num_trials=5, space="loguniform(0.0000001, 0.3)",
                       metric="test/loss", epochs=3)
    storage = tmp_path / "runs"
    first = run("run", str(spec), "--storage", str(storage), timeout=600)
    assert first.returncode == 0, first.stderr[-4000:]
    counts = summary(first.stderr, name)
    assert counts["stopped"] >= 1 and counts["unfinished"] == 0 and counts["of"] == 5, counts
    _, stopped = check_runs(storage, name, 5)
    assert len(stopped) == counts["stopped"]
    assert min(sampled_lr(storage / name / "trials" / h) for h in stopped) < 1e-4
    # the stopped trials have ended: a resume runs nothing, and status shows them as stopped
    again = run("resume", name, "--storage", str(storage))
    assert again.returncode == 0, again.stderr[-4000:]
    assert (f"optuna search, 5 trials - {5 - len(stopped)} finished, 0 failed, {len(stopped)} stopped by ASHA, "
            "0 to continue; launching 0") in again.stderr and "nothing to run" in again.stderr, again.stderr[-4000:]
    status = run("status", name, "--storage", str(storage))
    rows = [line.split() for line in status.stdout.splitlines() if line.strip().startswith("trial-")]
    assert len(rows) == 5 and sum(r[1] == "stopped" for r in rows) == len(stopped), status.stdout
