"""Bad input everywhere: exit code 2, one message naming the problem, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import main

GOOD = """\
name: ok
base: {dataset: synthetic_salient, model: small_cnn, epochs: 1}
factors: {mix.preset: [none, cutmix]}
seeds: 2
"""

# (case id, spec text or None for "use GOOD", extra CLI args, expected fragment of the message)
SPECS = [
    ("unknown-top-key", GOOD + "schedular: fifo\n",
     r"schedular \(line 5\): unknown top-level key \(did you mean 'scheduler'\?\)"),
    ("unknown-base-key", GOOD.replace("epochs: 1", "epochz: 1"), r"base.epochz.*unknown key"),
    ("unknown-factor-value", GOOD.replace("cutmix]", "cutmixx]"), r"factors.mix.preset\[1\].*'cutmixx'.*allowed"),
    ("wrong-type-seeds", GOOD.replace("seeds: 2", "seeds: abc"), r"seeds"),
    ("cpu-out-of-range", GOOD + "resources: {cpu: 0}\n", r"resources.cpu"),
    ("bad-lam-string", GOOD.replace("{mix.preset: [none, cutmix]}", "{mix.preset: [cutmix], mix.lam: ['beta(0,1)']}"),
     r"factors.mix.lam\[0\].*bad lam distribution 'beta\(0,1\)'"),
    ("empty-factor-list", GOOD.replace("[none, cutmix]", "[]"), r"factors.mix.preset.*empty"),
    ("bad-name", GOOD.replace("name: ok", "name: My Sweep!"), r"name.*\[a-z0-9_-\]"),
    ("yaml-syntax", GOOD.replace("seeds: 2", "seeds: [2"), r"line \d+"),
    ("empty-file", "", r"empty"),
    ("top-level-list", "- a\n- b\n", r"mapping"),
    ("missing-name", GOOD.replace("name: ok\n", ""), r"name"),
    ("factor-in-base", GOOD.replace("epochs: 1}", "epochs: 1, mix.preset: none}"), r"mix.preset"),
    ("seed-as-factor", GOOD.replace("[none, cutmix]}", "[none, cutmix], seed: [0, 1]}"), r"seeds"),
    ("duplicate-levels", GOOD.replace("[none, cutmix]", "[cutmix, cutmix]"), r"duplicate"),
    ("negative-max-failures", GOOD + "max_failures: -1\n", r"max_failures"),
    ("unknown-metric", GOOD + "metric: accuracy\n", r"metric.*final/top1_err"),
    ("bad-mode", GOOD + "mode: maximize\n", r"mode"),
    ("optuna-many-seeds", GOOD.replace("factors: {mix.preset: [none, cutmix]}\n", "")
     + "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: 'loguniform(0.01, 0.3)'}}\n", r"seed"),
    ("invalid-combination", GOOD.replace("[none, cutmix]}", "[none, cutmix], mix.prob: [0.5]}"),
     r"combination.*mix.preset=none"),
    ("name-escapes", GOOD.replace("name: ok", "name: ../evil"), r"name"),
    ("removed-optimal-pairing",
     GOOD.replace("{mix.preset: [none, cutmix]}", "{mix.preset: [guided_sr], mix.pairing: [greedy, optimal]}"),
     r"factors.mix.pairing\[1\].*'optimal' was removed.*use 'greedy_local'"),
    ("bad-optuna-distribution",
     GOOD.replace("factors: {mix.preset: [none, cutmix]}\n", "").replace("seeds: 2", "seeds: 1")
     + "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: loguniform(0.3)}}\n", r"loguniform"),
]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_clean_message(code: int, err: str, pattern: str) -> None:
    import re

    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mixsweep ") and ": error: " in lines[0]
    assert "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(("case", "text", "pattern"), SPECS, ids=[c[0] for c in SPECS])
def test_malformed_specs(tmp_path, monkeypatch, capsys, case, text, pattern):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    before = tree(tmp_path)
    code, err = run_cli(["run", str(spec), "--storage", str(tmp_path / "runs")], capsys)
    assert_one_clean_message(code, err, pattern)
    assert tree(tmp_path) == before, "nothing may be written"


def test_non_utf8_spec(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    code, err = run_cli(["validate", str(spec)], capsys)
    assert_one_clean_message(code, err, r"UTF-8")


def _cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    spec = tmp / "good.yaml"
    a_file = tmp / "a_file"
    return [
        ("missing-spec-file", ["run", str(tmp / "nope.yaml"), "--storage", str(tmp / "runs")], r"nope.yaml"),
        ("unknown-spec-name", ["run", "selection_schemez", "--storage", str(tmp / "runs")],
         r"did you mean 'selection_schemes'"),
        ("storage-is-a-file", ["run", str(spec), "--storage", str(a_file)], r"is a file"),
        ("storage-under-a-file", ["run", str(spec), "--storage", str(a_file / "sub")], r"cannot be created"),
        ("set-unknown-key", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "optim.lrr=0.1"],
         r"optim.lrr.*did you mean 'optim.lr'"),
        ("set-unknown-key-with-factors", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "nonexistent=1"],
         r"base\.nonexistent \(from --set nonexistent\): unknown key;"),
        ("validate-set-unknown-key", ["validate", "smoke", "--set", "nonexistent=1"],
         r"smoke: base\.nonexistent \(from --set nonexistent\): unknown key;"),
        ("set-bad-value", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "epochs=0"], r"epochs"),
        ("set-no-equals", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "epochs"],
         r"KEY=VALUE|key=value"),
        ("set-a-factor", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "mix.preset=mixup"], r"factor"),
        ("relative-sqlite", ["run", str(spec), "--storage", str(tmp / "runs"), "--tracking-uri", "sqlite:///x.db"],
         r"folder .* does not exist|absolute"),
        ("unreachable-server", ["run", str(spec), "--storage", str(tmp / "runs"), "--tracking-uri",
                                "http://127.0.0.1:9"], r"cannot reach the MLflow tracking server"),
        ("bad-address", ["run", str(spec), "--storage", str(tmp / "runs"), "--address", "not an address!"],
         r"--address"),
        ("resume-unknown", ["resume", "nosuch", "--storage", str(tmp)], r"unknown sweep 'nosuch'"),
        ("status-unknown", ["status", "nosuch", "--storage", str(tmp)], r"unknown sweep 'nosuch'"),
        ("report-unknown", ["report", "nosuch", "--storage", str(tmp)], r"unknown sweep 'nosuch'"),
        ("sync-unknown", ["sync", "nosuch", "--storage", str(tmp)], r"unknown sweep 'nosuch'"),
        ("ui-unknown", ["ui", "nosuch", "--storage", str(tmp)], r"unknown sweep 'nosuch'"),
        ("resume-escaping-name", ["resume", "../../etc", "--storage", str(tmp)], r"not allowed"),
        ("status-missing-storage", ["status", "x", "--storage", str(tmp / "absent")], r"does not exist"),
        ("status-corrupt-state", ["status", "corrupt", "--storage", str(tmp)],
         r"sweep.json cannot be read .*`mixsweep run` rebuilds it: mixsweep run \S*spec.yaml"),
        ("status-newer-state", ["status", "newer", "--storage", str(tmp)],
         r"newer/sweep.json was written by a newer mixsweep \(sweep state format 99; this one reads format 1\): "
         r"upgrade mixsweep to continue sweep 'newer'"),
        ("resume-newer-state", ["resume", "newer", "--storage", str(tmp)], r"written by a newer mixsweep"),
        ("status-older-state", ["status", "older", "--storage", str(tmp)],
         r"older/sweep.json cannot be read \(sweep state format 0 of an older mixsweep; this one reads format 1\)\. "
         r"`mixsweep run` rebuilds it: mixsweep run \S*older/spec.yaml"),
        ("report-storage-is-file", ["report", "x", "--storage", str(a_file)], r"is a file"),
        ("validate-missing", ["validate", str(tmp / "missing.yaml")], r"missing.yaml"),
        ("preview-bad-preset", ["preview", "--presets", "cutmixx", "--out", str(tmp / "p.png")], r"did you mean"),
        ("preview-bad-photo", ["preview", "--photos", "nosuchphoto", "--out", str(tmp / "p.png")], r"nosuchphoto"),
        ("fidelity-bad-preset", ["fidelity", "--presets", "cutmixx", "--png", str(tmp / "f.png")],
         r"unknown preset 'cutmixx' \(did you mean 'cutmix'\?\)"),
        ("fidelity-bad-value", ["fidelity", "--set", "mix.selection=random,randon", "--png", str(tmp / "f.png")],
         r"mix.selection: unknown value 'randon'.*allowed"),
        ("fidelity-unknown-key", ["fidelity", "--set", "mix.pairng=greedy", "--out", str(tmp / "fid")],
         r"did you mean 'mix.pairing'"),
    ]


def _setup(tmp: Path) -> None:
    (tmp / "good.yaml").write_text(GOOD)
    (tmp / "a_file").write_text("x")
    (tmp / "corrupt").mkdir()
    (tmp / "corrupt" / "sweep.json").write_text("{not json")
    for name, version in (("newer", 99), ("older", 0)):
        (tmp / name).mkdir()
        (tmp / name / "sweep.json").write_text(json.dumps({
            "format": version, "name": name, "tracking_uri": "sqlite:////nowhere/mlflow.db", "experiment_id": "1",
            "sweep_run_id": "r", "trials": []}))


@pytest.mark.parametrize("index", range(len(_cli_cases(Path("/x")))), ids=[c[0] for c in _cli_cases(Path("/x"))])
def test_bad_cli_calls(tmp_path, monkeypatch, capsys, index):
    monkeypatch.chdir(tmp_path)
    _setup(tmp_path)
    case, args, pattern = _cli_cases(tmp_path)[index]
    before = tree(tmp_path)
    code, err = run_cli(args, capsys)
    assert_one_clean_message(code, err, pattern)
    assert tree(tmp_path) == before, "nothing may be written"


def test_corpus_is_large_enough():
    assert len(SPECS) + 1 + len(_cli_cases(Path("/x"))) >= 30


@pytest.mark.parametrize("args", [["run", "nosuch_spec"], ["status", "nosuch"], ["validate", "-"]])
def test_real_process_exit_2_without_traceback(tmp_path, args):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, *(["--storage", str(tmp_path)]
                           if args[0] != "validate" else [])], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1
    assert list(tmp_path.iterdir()) == []


def test_list_says_what_every_preset_runs(capsys):
    """`mixsweep list` shows each preset's resolved factors and one line per factor value."""
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index(next(line for line in lines if line.strip().startswith("saliencymix ")))
    assert "box_fit=shift" in lines[at + 1] and "scope=per_sample" in lines[at + 1]
    at = lines.index(next(line for line in lines if line.strip().startswith("cutmix ")))
    assert "box_fit=clip" in lines[at + 1] and "scope=per_batch" in lines[at + 1]
    assert any(line.split()[:1] == ["shift"] and "SaliencyMix paper" in line for line in lines)
    assert any(line.split()[:1] == ["greedy_local"] for line in lines)
    assert not any(line.split()[:1] == ["optimal"] for line in lines)
