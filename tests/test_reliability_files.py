"""What a sweep reads back from disk, and a disk that is full or holds the wrong things.

Rule under test: every file we read back is replaced atomically or tolerates a torn last line;
anything unreadable is named with its path and what to do; a trial that cannot start fails once,
with its reason, and is not retried; a full disk stops the sweep with one message and exit 2.
Real processes and files throughout (a real tmpfs for the full disk), no mocks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from trainables.config import trial_hashes, validate_config
from trainables.mixing import list_presets
from trainables.recipes import RECIPES
from trainables.trialdir import read_config, write_config

from .reliability_helpers import assert_complete, finished, run, trial_runs, write_spec


def sqlite_uri(storage: Path) -> str:
    return f"sqlite:///{storage / 'mlflow.db'}"


def shipped_trial_configs() -> list[dict]:
    from orchestrator.spec import expand, is_grid, list_specs, load_spec

    out = []
    for name, _ in list_specs():
        spec = load_spec(name)
        out += [t.config for t in expand(spec)] if is_grid(spec) else [spec.base_config(resolved=True)]
    return out


@pytest.mark.parametrize("recipe", [None, *RECIPES.names()])
@pytest.mark.parametrize("preset", list_presets())
def test_written_config_reads_back(tmp_path, preset, recipe):
    """config.yaml is what sync and resume read when Ray has no result: it must validate to the same config."""
    cfg = validate_config({"mix.preset": preset, **({"recipe": recipe} if recipe else {})})
    write_config(tmp_path, cfg)
    again = validate_config(read_config(tmp_path / "config.yaml"))
    assert again == cfg and trial_hashes(again) == trial_hashes(cfg)


def test_every_shipped_trial_config_reads_back(tmp_path):
    configs = shipped_trial_configs()
    assert len(configs) > 100
    for config in configs:
        cfg = validate_config(config)
        write_config(tmp_path, cfg)
        assert validate_config(read_config(tmp_path / "config.yaml")) == cfg, config


def test_unreadable_config_yaml_is_named(tmp_path):
    from trainables.config import ConfigError
    from trainables.train import train

    (tmp_path / "config.yaml").write_bytes(b"\xff\xfe\x00garbage: [")
    with pytest.raises(ConfigError, match=r"config\.yaml cannot be read .*delete it if the folder is this run's"):
        train({"epochs": 1}, workdir=tmp_path, verbose=False)


def test_missing_data_fails_before_launch(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "nodata", epochs=1, factors="mix.preset: [none, cutmix]")
    storage = tmp_path / "runs"
    start = time.monotonic()
    result = run("run", str(spec), "--storage", str(storage), "--set", "dataset=cifar10",
                 "--set", f"data.root={tmp_path / 'nowhere'}")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("mixsweep run: error: cifar10: data not found in") and "data_batch_1" in last, last
    assert not (storage / "nodata" / "trials").exists() and not (storage / "nodata" / "ray").exists()
    assert time.monotonic() - start < 60


@pytest.mark.slow
def test_trial_that_cannot_start_fails_once_with_its_reason(tmp_path):
    """A value only the dataset checks (train_size 0) passes the spec; the trial fails at once, not 3 times."""
    spec = write_spec(tmp_path / "s.yaml", "nostart", epochs=2, factors="mix.preset: [none, cutmix]", seeds=1,
                      max_failures=2)
    storage = tmp_path / "runs"
    result = run("run", str(spec), "--storage", str(storage), "--set", "data.train_size=0")
    err = result.stderr
    assert result.returncode == 1, err[-4000:]
    failures = [line for line in err.splitlines() if line.startswith("[mixsweep] failed:")]
    assert len(failures) == 2, err[-4000:]  # one line per trial: no retries
    assert all("cannot start" in line and "train_size" in line for line in failures), failures
    assert "0 finished, 2 failed" in err and "0 not finished" in err, err[-3000:]
    assert "error: " not in "\n".join(line for line in err.splitlines() if line.startswith("[mixsweep] error"))
    for r in trial_runs(sqlite_uri(storage), "nostart"):
        assert r.info.status == "FAILED" and "train_size" in r.data.tags["mixsweep.error"]
    workdirs = list((storage / "nostart" / "trials").iterdir())
    assert len(workdirs) == 2 and all((w / "failed.json").exists() for w in workdirs)


@pytest.mark.slow
def test_damaged_files_are_named_and_recovered(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "damaged", epochs=2, factors="mix.preset: [none, cutmix]", seeds=2)
    storage = tmp_path / "runs"
    assert run("run", str(spec), "--storage", str(storage)).returncode == 0
    root = storage / "damaged"
    torn, garbage, unfinished, _ = sorted(finished(storage, "damaged"))
    # a finished trial's metrics.jsonl loses half of its last line (a crash mid-write on a filesystem without
    # atomic rename); another trial's config.yaml is garbage, and Ray's results are gone (a node-local disk)
    text = (torn / "metrics.jsonl").read_text()
    (torn / "metrics.jsonl").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    (garbage / "config.yaml").write_bytes(b"\xff\xfe\x00not yaml: [")
    shutil.rmtree(root / "ray")
    # a third one is back to mid-training (stopped before its last epoch ended): its last epoch is lost, its
    # log ends in a torn line, its run is KILLED
    from mlflow.tracking import MlflowClient

    victim = next(r for r in trial_runs(sqlite_uri(storage), "damaged")
                  if r.data.tags["mixsweep.run_hash"] == unfinished.name)
    MlflowClient(sqlite_uri(storage)).set_terminated(victim.info.run_id, "KILLED")
    (unfinished / "final.json").unlink()
    max(unfinished.glob("checkpoints/epoch_*.pt")).unlink()
    with (unfinished / "metrics.jsonl").open("a") as f:
        f.write('{"epoch": 3, "train/lo')
    # sweep.json is cut in half
    state = (root / "sweep.json").read_text()
    (root / "sweep.json").write_text(state[: len(state) // 2])

    status = run("status", "damaged", "--storage", str(storage))
    assert status.returncode == 2 and "Traceback" not in status.stderr
    assert f"{root / 'sweep.json'} cannot be read" in status.stderr
    assert f"mixsweep run {root / 'spec.yaml'} --storage {storage}" in status.stderr  # how to rebuild it

    rerun = run("run", str(root / "spec.yaml"), "--storage", str(storage))  # what the message says to do
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    assert "rebuilding it" in rerun.stderr and "3 finished" in rerun.stderr and "launching 1" in rerun.stderr
    assert "Traceback" not in rerun.stderr
    assert len((unfinished / "metrics.jsonl").read_text().splitlines()) == 2  # rewritten from its checkpoint

    status = run("status", "damaged", "--storage", str(storage))
    assert status.returncode == 0, status.stderr[-3000:]
    assert f"{torn / 'metrics.jsonl'}: line(s) 2 cannot be read" in status.stderr
    synced = run("sync", "damaged", "--storage", str(storage))
    assert synced.returncode == 0 and "Traceback" not in synced.stderr, synced.stderr[-3000:]
    assert_complete(sqlite_uri(storage), "damaged", n_trials=4, epochs=2)


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.slow
def test_full_disk_stops_with_one_message_and_resumes(tmp_path):
    storage = tmp_path / "small"
    if not _mount_tmpfs(storage, "2m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        spec = write_spec(tmp_path / "s.yaml", "full", epochs=3, factors="mix.preset: [none, cutmix]")
        result = run("run", str(spec), "--storage", str(storage))
        err = result.stderr
        assert result.returncode == 2, err[-4000:]
        ours = [line for line in err.splitlines() if line.startswith("mixsweep run: error:")]
        assert len(ours) == 1 and "no space left on " in ours[0], err[-4000:]
        assert f"Free some space, then: mixsweep resume full --storage {storage}" in ours[0]
        driver_lines = [line for line in err.splitlines() if not line.startswith("\x1b[36m(")]  # not a worker's
        assert not [line for line in driver_lines if "Traceback" in line], err[-6000:]
        assert err.count("marked KILLED") == 0 and "could not be updated" not in err
        subprocess.run(["mount", "-o", "remount,size=256m", str(storage)], check=True)
        resumed = run("resume", "full", "--storage", str(storage))
        assert resumed.returncode == 0, resumed.stderr[-4000:]
        assert_complete(sqlite_uri(storage), "full", n_trials=4, epochs=3)
        for workdir in finished(storage, "full"):
            assert json.loads((workdir / "final.json").read_text())["epochs"] == 3
            assert yaml.safe_load((workdir / "config.yaml").read_text())["epochs"] == 3
    finally:
        subprocess.run(["umount", "-l", str(storage)], capture_output=True)
