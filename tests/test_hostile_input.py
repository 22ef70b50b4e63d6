"""Hostile input and identities (issue 19, items 8, 9, 11, 12, 15), attacked through real `mixsweep` processes.

- a checkpoint copied from another trial's folder is refused, naming both run hashes and the file;
- a long spec `description:` is cut to fit MLflow's tag limit, the summary and links kept;
- YAML bombs (aliases, nesting, size) in a spec, a `--set` value or a trial's config.yaml: exit 2, quickly,
  within a memory bound, with the file (or `--set`) named;
- experiment and sweep names that would escape the storage or read as an option are refused.
"""

from __future__ import annotations

import re
import resource
import shutil
import subprocess
import sys
import time

import pytest

from tests.reliability_helpers import ENV, run, trial_runs, write_spec

GiB = 1 << 30


def _bounded(memory: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return limit


def _cmd(argv: list[str], memory: int = 2 * GiB, timeout: float = 60) -> tuple[subprocess.CompletedProcess, float]:
    """Run `argv` (a python module) with at most `memory` bytes of address space; (result, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, *argv], env=ENV, capture_output=True, text=True, timeout=timeout,
                          preexec_fn=_bounded(memory))
    return proc, time.monotonic() - t0


def _alias_bomb(levels: int, width: int = 10) -> str:
    """The "billion laughs" as one flow sequence: `levels` levels of `width` aliases of the level below
    (width**levels leaves, in a few hundred bytes)."""
    items = [f"&l0 [{', '.join(['lol'] * width)}]"]
    items += [f"&l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    return f"[{', '.join(items)}]"


SPEC_HEAD = "name: bomb\nbase: {dataset: synthetic_salient, model: small_cnn}\n"
BOMBS = {
    "alias-9": SPEC_HEAD + f"description: {_alias_bomb(9)}\n",
    "alias-10": SPEC_HEAD + f"factors: {{mix.lam: {_alias_bomb(10)}}}\n",
    "nested-brackets": SPEC_HEAD + "description: " + "[" * 100_000 + "]" * 100_000 + "\n",
    "over-1MiB": SPEC_HEAD + "description: '" + "x" * (1 << 20) + "'\n",
}
EXPECT = {
    "alias-9": r"more than 100,000 values once its aliases are expanded",
    "alias-10": r"more than 100,000 values once its aliases are expanded",
    "nested-brackets": r"nested more than 64 levels deep",
    "over-1MiB": r"larger than 1,048,576 bytes \(1 MiB\)",
}


@pytest.mark.parametrize("kind", list(BOMBS))
def test_yaml_bombs_in_a_spec_exit_2_quickly(tmp_path, kind):
    spec = tmp_path / f"{kind}.yaml"
    spec.write_text(BOMBS[kind])
    proc, seconds = _cmd(["-m", "orchestrator.cli", "validate", str(spec)])
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr
    assert f"{spec}: " in proc.stderr and "refused: " in proc.stderr, proc.stderr
    assert re.search(EXPECT[kind], proc.stderr), proc.stderr
    assert seconds < 15, seconds


def test_yaml_bombs_in_set_values_and_a_trial_config_exit_2(tmp_path):
    spec = write_spec(tmp_path / "ok.yaml", "ok", epochs=1, seeds=1)
    proc, seconds = _cmd(["-m", "orchestrator.cli", "validate", str(spec), "--set", f"description={_alias_bomb(9)}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--set description: the value" in proc.stderr and "aliases are expanded" in proc.stderr, proc.stderr
    assert seconds < 15, seconds
    deep = "[" * 50_000 + "]" * 50_000
    proc, _ = _cmd(["-m", "orchestrator.cli", "validate", str(spec), "--set", f"factors.mix.preset={deep}"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "--set factors.mix.preset: the value" in proc.stderr and "nested more than 64" in proc.stderr

    config = tmp_path / "config.yaml"  # `python -m trainables.train --config`: a trial's config file
    config.write_text(f"dataset: synthetic_salient\nmix.lam: {_alias_bomb(10)}\n")
    proc, seconds = _cmd(["-m", "trainables.train", "--config", str(config), "--workdir", str(tmp_path / "w")],
                         memory=8 * GiB)  # torch alone reserves ~3 GiB of address space
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{config}: refused: line " in proc.stderr and "aliases are expanded" in proc.stderr, proc.stderr
    assert seconds < 30, seconds


@pytest.mark.parametrize("experiment", ["../../x", "a/b", "..", "-rf", "tab\there"])
def test_experiment_names_that_name_other_folders_are_refused(tmp_path, experiment):
    spec = write_spec(tmp_path / "s.yaml", "s", epochs=1, seeds=1)
    spec.write_text(spec.read_text() + f"experiment: {experiment!r}\n".replace("'", '"').replace("\t", "\\t"))
    proc = run("validate", str(spec), timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"{spec}: experiment (line " in proc.stderr and "is not allowed: an experiment name is any text " \
        "without '/', '\\' or control characters, not starting with '-', and not '.' or '..'" in proc.stderr, \
        proc.stderr


def test_names_that_read_as_options_are_refused(tmp_path):
    spec = write_spec(tmp_path / "s.yaml", "s", epochs=1, seeds=1)
    allowed = "1..64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit"
    for argv in (["--set", "name=-rf"], ["--set", "name=_x"]):
        proc = run("validate", str(spec), *argv, timeout=60)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"name (from --set name): must be {allowed}" in proc.stderr, proc.stderr
    spec.write_text(spec.read_text().replace("name: s\n", "name: -rf\n"))
    proc = run("validate", str(spec), timeout=60)
    assert proc.returncode == 2 and f"name (line 1): must be {allowed}" in proc.stderr, proc.stderr
    proc = run("status", "--storage", str(tmp_path), "--", "-rf", timeout=60)
    assert proc.returncode == 2 and f"sweep name '-rf' is not allowed: use {allowed}" in proc.stderr, proc.stderr


# -- a real tiny sweep: one arm, one seed, one epoch, a 20 KB description -------------------------------------------


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """(storage, spec, `mixsweep run` result) of a finished sweep `hostile` (mix.preset: [none]) whose spec has a
    20 KB description."""
    tmp = tmp_path_factory.mktemp("hostile")
    spec = write_spec(tmp / "hostile.yaml", "hostile", epochs=1, train_size=128, factors="mix.preset: [none]",
                      seeds=1)
    long = "".join(f"  line {i:04d} of a long description {'.' * 50}\n" for i in range(300))  # ~20 KB
    spec.write_text(spec.read_text() + "description: |\n" + long)
    storage = tmp / "runs"
    proc = run("run", str(spec), "--storage", str(storage), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return storage, spec, proc


def test_a_long_description_is_cut_and_the_summary_reaches_the_run(sweep):
    from mlflow.tracking import MlflowClient

    storage, spec, proc = sweep
    assert len(spec.read_text()) > 20_000
    assert "could not save the MLflow UI views" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    client = MlflowClient(f"sqlite:///{storage / 'mlflow.db'}")
    exp = client.get_experiment_by_name("mixsweep")
    (sweep_run,) = client.search_runs([exp.experiment_id], "tags.`mixsweep.role` = 'sweep'")
    note = sweep_run.data.tags["mlflow.note.content"]
    assert len(note) <= 8000
    assert note.startswith("## Compare in the MLflow UI") and "viewStateShareKey=mixsweep-hostile" in note
    summary = note.split("## Summary", 1)[1].split("## About this sweep", 1)[0]
    assert "mix.preset" in summary and "none" in summary and "mixsweep report hostile" in summary, note
    about = note.split("## About this sweep", 1)[1]
    assert "line 0000 of a long description" in about and "line 0299" not in about
    assert about.endswith("… (cut to fit MLflow's 8,000-character limit: the whole description is in the run's "
                          "spec.yaml)"), about[-300:]


def test_a_checkpoint_copied_from_another_trial_is_refused(sweep):
    from mlflow.tracking import MlflowClient

    from orchestrator.spec import load_spec

    storage, spec, _ = sweep
    uri = f"sqlite:///{storage / 'mlflow.db'}"
    trials = storage / "hostile" / "trials"
    (none,) = trial_runs(uri, "hostile")
    source = trials / none.data.tags["mixsweep.run_hash"]
    extended = {"factors.mix.preset": ["none", "mixup"]}
    (mixup,) = [t for t in load_spec(spec, extended).trials if t.name == "mixup-s0"]
    victim = trials / mixup.run_hash
    # the attack: none-s0's checkpoint copied into the folder of mixup-s0, which the extended grid then runs
    (victim / "checkpoints").mkdir(parents=True)
    shutil.copy2(source / "checkpoints" / "epoch_0001.pt", victim / "checkpoints" / "epoch_0001.pt")

    proc = run("run", str(spec), "--storage", str(storage), "--set", "factors.mix.preset=[none, mixup]", timeout=600)
    out = proc.stdout + proc.stderr
    refusal = (f"checkpoint {victim / 'checkpoints' / 'epoch_0001.pt'} was written by run {source.name}, not by "
               f"this run {victim.name}: refusing to continue another trial's training")
    assert refusal in out, out[-3000:]
    assert proc.returncode != 0, out[-3000:]
    assert refusal in (victim / "failed.json").read_text()
    assert not (victim / "final.json").exists() and not (victim / "metrics.jsonl").exists()
    client = MlflowClient(uri)
    runs = {r.info.run_name: r for r in trial_runs(uri, "hostile")}
    assert runs["mixup-s0"].info.status == "FAILED", runs["mixup-s0"].info.status
    assert refusal in runs["mixup-s0"].data.tags["mixsweep.error"]
    assert client.get_metric_history(runs["mixup-s0"].info.run_id, "test/top1_err") == []  # not none-s0's history
    assert [m.step for m in client.get_metric_history(none.info.run_id, "test/top1_err")] == [1]
