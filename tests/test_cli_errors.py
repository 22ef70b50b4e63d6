"""Bad input everywhere: exit code 2, one message naming the problem, no traceback, nothing written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.cli import build_parser, main
from orchestrator.spec import list_specs
from trainables.mixing import list_presets

GOOD = """\
name: ok
base: {dataset: synthetic_salient, model: small_cnn, epochs: 1}
factors: {mix.preset: [none, cutmix]}
seeds: 2
"""

# (case id, spec text, what the message says right after `SPEC_FILE: `): where (the spec path and its line, or
# the YAML line and column), what is wrong, the value it got and what is allowed - what a user acts on
SPECS = [
    ("unknown-top-key", GOOD + "schedular: fifo\n",
     r"schedular \(line 5\): unknown top-level key \(did you mean 'scheduler'\?\); allowed: name, description, "
     r"experiment, base, factors, seeds, search, scheduler, "),
    ("unknown-base-key", GOOD.replace("epochs: 1", "epochz: 1"),
     r"base\.epochz \(line 2\): unknown key \(did you mean 'epochs'\?\); allowed: amp, batch_size, dataset, device, "
     r"epochs, "),
    ("unknown-factor-value", GOOD.replace("cutmix]", "cutmixx]"),
     r"factors\.mix\.preset\[1\] \(line 3\): unknown value 'cutmixx' \(did you mean 'cutmix'\?\); allowed: none, "
     r"mixup, cutmix, saliencymix, "),
    ("wrong-type-seeds", GOOD.replace("seeds: 2", "seeds: abc"),
     r"seeds \(line 4\): expected an integer N >= 1 \(meaning seeds 0\.\.N-1\) or a list of distinct integers >= 0 "
     r"\(got 'abc'\)$"),
    ("cpu-out-of-range", GOOD + "resources: {cpu: 0}\n", r"resources\.cpu \(line 5\): must be > 0 \(got 0\)$"),
    ("bad-lam-string", GOOD.replace("{mix.preset: [none, cutmix]}", "{mix.preset: [cutmix], mix.lam: ['beta(0,1)']}"),
     r"factors\.mix\.lam\[0\] \(line 3\): bad lam distribution 'beta\(0,1\)': parameters out of range; expected "
     r"uniform\(a,b\) with 0<=a<=b<=1, beta\(a,b\) with a,b>0, fixed\(v\)"),
    ("empty-factor-list", GOOD.replace("[none, cutmix]", "[]"),
     r"factors\.mix\.preset \(line 3\): empty list; a factor needs at least one level \(drop the factor, or move a "
     r"fixed value to base\)$"),
    ("bad-name", GOOD.replace("name: ok", "name: My Sweep!"),
     r"name \(line 1\): must be 1\.\.64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit "
     r"\(pattern \[a-z0-9\]\[a-z0-9_-\]\*\), e\.g\. "
     r"'my_sweep' \(got 'My Sweep!'\)$"),
    ("yaml-syntax", GOOD.replace("seeds: 2", "seeds: [2"),
     r"line 5, column 1: invalid YAML: expected ',' or '\]', but got '<stream end>' \(while parsing a flow sequence "
     r"started at line 4\)$"),
    ("empty-file", "", r"the spec is empty; a sweep spec is a YAML mapping with at least `name:` \(e\.g\. "
                       r"`name: my_sweep`\)"),
    ("top-level-list", "- a\n- b\n", r"the top level must be a mapping of spec fields \(name, description, .*\), got "
                                     r"list \['a', 'b'\]$"),
    ("missing-name", GOOD.replace("name: ok\n", ""),
     r"name: required field is missing: give the sweep a name of 1\.\.64 characters .*, e\.g\. name: my_sweep$"),
    ("factor-in-base", GOOD.replace("epochs: 1}", "epochs: 1, mix.preset: none}"),
     r"factors\.mix\.preset \(line 3\): also fixed in base \(base\.mix\.preset = none\); a key is either fixed in base "
     r"or varied in factors - remove one$"),
    ("seed-as-factor", GOOD.replace("[none, cutmix]}", "[none, cutmix], seed: [0, 1]}"),
     r"factors\.seed \(line 3\): seeds are their own axis, not a factor: write `seeds: \[0, 1, 2\]` \(or `seeds: 3`\) "
     r"at the top level$"),
    ("duplicate-levels", GOOD.replace("[none, cutmix]", "[cutmix, cutmix]"),
     r"factors\.mix\.preset\[1\] \(line 3\): duplicate level cutmix \(already mix\.preset\[0\]\); levels must be "
     r"distinct$"),
    ("negative-max-failures", GOOD + "max_failures: -1\n", r"max_failures \(line 5\): must be >= 0 \(got -1\)$"),
    ("unknown-metric", GOOD + "metric: accuracy\n",
     r"metric \(line 5\): unknown metric 'accuracy'; allowed: train/loss, test/loss, test/top1_err, test/top5_err, "
     r"final/top1_err, "),
    ("bad-mode", GOOD + "mode: maximize\n", r"mode \(line 5\): unknown value 'maximize'; allowed: min, max$"),
    ("optuna-many-seeds", GOOD.replace("factors: {mix.preset: [none, cutmix]}\n", "")
     + "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: 'loguniform(0.01, 0.3)'}}\n",
     r"seeds \(line 3\): search\.algorithm=optuna tunes one seed, so seeds must hold exactly one \(got 2: \[0, 1\]\); "
     r"re-run the best config over several seeds with a grid spec$"),
    ("invalid-combination", GOOD.replace("[none, cutmix]}", "[none, cutmix], mix.prob: [0.5]}"),
     r"factors \(line 3\): the combination mix\.preset=none × mix\.prob=0\.5 is invalid: mix\.preset=none does not "
     r"mix, so it takes no other mix\.\* keys \(got mix\.prob\)$"),
    ("name-escapes", GOOD.replace("name: ok", "name: ../evil"),
     r"name \(line 1\): must be 1\.\.64 characters from a-z, 0-9, '_' and '-', .*, e\.g\. 'evil' \(got '\.\./evil'\)$"),
    ("removed-optimal-pairing",
     GOOD.replace("{mix.preset: [none, cutmix]}", "{mix.preset: [guided_sr], mix.pairing: [greedy, optimal]}"),
     r"factors\.mix\.pairing\[1\] \(line 3\): 'optimal' was removed: .*; use 'greedy_local'"),
    ("bad-optuna-distribution",
     GOOD.replace("factors: {mix.preset: [none, cutmix]}\n", "").replace("seeds: 2", "seeds: 1")
     + "search: {algorithm: optuna, num_trials: 4, space: {optim.lr: loguniform(0.3)}}\n",
     r"search\.space\.optim\.lr \(line 4\): loguniform takes two numbers loguniform\(a,b\), got 1 in "
     r"'loguniform\(0\.3\)'; expected loguniform\(a,b\) with 0<a<b, uniform\(a,b\) with a<b"),
]


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.err


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def assert_one_clean_message(code: int, err: str, pattern: str) -> None:
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
    assert_one_clean_message(code, err, rf"^mixsweep run: error: {re.escape(str(spec))}: {pattern}")
    assert tree(tmp_path) == before, "nothing may be written"


def test_non_utf8_spec(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(b"name: ok\ndescription: caf\xe9\n")
    code, err = run_cli(["validate", str(spec)], capsys)
    assert_one_clean_message(code, err, r"UTF-8")


SHIPPED = re.escape(", ".join(name for name, _ in list_specs()))  # the message lists every shipped spec
PRESETS = re.escape(", ".join(list_presets()))
REBUILD = ("`mixsweep run` rebuilds it: mixsweep run {spec} --storage {storage} (with the --tracking-uri the sweep "
           "used, unless it was the default); trials that finished are kept and not run again")


def _cli_cases(tmp: Path) -> list[tuple[str, list[str], str]]:
    """(case id, arguments, the whole message): where (flag, file or key), the value it got, what is allowed."""
    spec = tmp / "good.yaml"
    a_file = tmp / "a_file"
    e = re.escape
    job = r"expected the job server of the cluster's head, http://HEAD:8265 \(its dashboard port\)$"
    unknown = rf"unknown sweep 'nosuch'; sweeps in {e(str(tmp))}: corrupt, newer, older$"
    return [
        ("missing-spec-file", ["run", str(tmp / "nope.yaml"), "--storage", str(tmp / "runs")],
         rf"^mixsweep run: error: {e(str(tmp / 'nope.yaml'))}: no such spec file; give a path to a \.yaml file or the "
         rf"name of a shipped spec: {SHIPPED}"),
        ("unknown-spec-name", ["run", "selection_schemez", "--storage", str(tmp / "runs")],
         r"^mixsweep run: error: 'selection_schemez': not a spec file and not a shipped spec \(did you mean "
         rf"'selection_schemes'\?\); give a path to a \.yaml file or the name of a shipped spec: {SHIPPED}"),
        ("storage-is-a-file", ["run", str(spec), "--storage", str(a_file)],
         rf"^mixsweep run: error: --storage {e(str(a_file))} is a file, not a directory$"),
        ("storage-under-a-file", ["run", str(spec), "--storage", str(a_file / "sub")],
         rf"^mixsweep run: error: --storage {e(str(a_file / 'sub'))} cannot be created: {e(str(a_file))} is a file$"),
        ("set-unknown-key", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "optim.lrr=0.1"],
         r"base\.optim\.lrr \(from --set optim\.lrr\): unknown key \(did you mean 'optim\.lr'\?\); allowed: "
         r"optim\.name, optim\.lr, "),
        ("set-unknown-key-with-factors", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "nonexistent=1"],
         r"base\.nonexistent \(from --set nonexistent\): unknown key; allowed: amp, batch_size, dataset, "
         r".*data\.<option>, model\.<option>, mix\.preset, "),
        ("validate-set-unknown-key", ["validate", "smoke", "--set", "nonexistent=1"],
         r"^mixsweep validate: error: search_spaces:smoke: base\.nonexistent \(from --set nonexistent\): unknown key; "
         r"allowed: amp, batch_size, "),
        ("set-bad-value", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "epochs=0"],
         r"good\.yaml: base\.epochs \(from --set epochs\): must be >= 1 \(got 0\)$"),
        ("set-no-equals", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "epochs"],
         r"error: --set 'epochs': expected KEY=VALUE, e\.g\. --set optim\.lr=0\.1$"),
        ("set-a-factor", ["run", str(spec), "--storage", str(tmp / "runs"), "--set", "mix.preset=mixup"],
         r"--set mix\.preset: mix\.preset is a factor of this spec \(levels: none, cutmix\); it cannot also be fixed - "
         r"change its levels with --set 'factors\.mix\.preset=\[\.\.\.\]'$"),
        ("relative-sqlite", ["run", str(spec), "--storage", str(tmp / "runs"), "--tracking-uri", "sqlite:///x.db"],
         r"^mixsweep run: error: tracking URI sqlite:///x\.db: sqlite paths must be absolute "
         r"\(sqlite:////abs/path/mlflow\.db\); Ray trials run in other folders$"),
        ("unreachable-server", ["run", str(spec), "--storage", str(tmp / "runs"), "--tracking-uri",
                                "http://127.0.0.1:9"],
         r"^mixsweep run: error: cannot reach the MLflow tracking server at http://127\.0\.0\.1:9 \(.+\); start it "
         r"\(mlflow server --host 127\.0\.0\.1 --port PORT \.\.\.\) or pass another --tracking-uri$"),
        ("bad-address", ["run", str(spec), "--storage", str(tmp / "runs"), "--address", "not an address!"],
         r"^mixsweep run: error: --address 'not an address!': expected 'auto' or HOST:PORT \(a cluster's GCS\); from "
         r"outside the cluster, use mixsweep submit --address http://HEAD:8265$"),
        ("ray-client", ["run", str(spec), "--storage", str(tmp / "runs"), "--address", "ray://127.0.0.1:10001"],
         r"^mixsweep run: error: --address ray://127\.0\.0\.1:10001: Ray Client \(ray://\) is not supported: .+ "
         r"mixsweep submit SPEC --address http://HEAD:8265 .+$"),
        ("submit-gcs-address", ["submit", str(spec), "--address", "127.0.0.1:6379", "--storage", "/abs/runs"],
         rf"^mixsweep submit: error: --address '127\.0\.0\.1:6379': {job}"),
        ("submit-unreachable-head", ["submit", str(spec), "--address", "http://127.0.0.1:9", "--storage", "runs"],
         r"^mixsweep submit: error: cannot reach the Ray job server at http://127\.0\.0\.1:9 .+$"),
        ("jobs-bad-address", ["jobs", "--address", "nope"], rf"^mixsweep jobs: error: --address 'nope': {job}"),
        ("logs-bad-address", ["logs", "x", "--address", "nope"], rf"^mixsweep logs: error: --address 'nope': {job}"),
        ("stop-bad-address", ["stop", "x", "--address", "nope"], rf"^mixsweep stop: error: --address 'nope': {job}"),
        ("resume-unknown", ["resume", "nosuch", "--storage", str(tmp)], rf"^mixsweep resume: error: {unknown}"),
        ("status-unknown", ["status", "nosuch", "--storage", str(tmp)], rf"^mixsweep status: error: {unknown}"),
        ("report-unknown", ["report", "nosuch", "--storage", str(tmp)], rf"^mixsweep report: error: {unknown}"),
        ("sync-unknown", ["sync", "nosuch", "--storage", str(tmp)], rf"^mixsweep sync: error: {unknown}"),
        ("ui-unknown", ["ui", "nosuch", "--storage", str(tmp)], rf"^mixsweep ui: error: {unknown}"),
        ("resume-escaping-name", ["resume", "../../etc", "--storage", str(tmp)],
         r"^mixsweep resume: error: sweep name '\.\./\.\./etc' is not allowed: use 1\.\.64 characters "
         r"from a-z, 0-9, '_' and '-', starting with a letter or digit \(pattern \[a-z0-9\]\[a-z0-9_-\]\*\)$"),
        ("status-missing-storage", ["status", "x", "--storage", str(tmp / "absent")],
         rf"^mixsweep status: error: --storage {e(str(tmp / 'absent'))} does not exist$"),
        ("status-corrupt-state", ["status", "corrupt", "--storage", str(tmp)],
         rf"^mixsweep status: error: {e(str(tmp / 'corrupt' / 'sweep.json'))} cannot be read \(JSONDecodeError: .+\)\. "
         + e(REBUILD.format(spec=tmp / "corrupt" / "spec.yaml", storage=tmp)) + "$"),
        ("status-newer-state", ["status", "newer", "--storage", str(tmp)],
         r"newer/sweep.json was written by a newer mixsweep \(sweep state format 99; this one reads format 1\): "
         r"upgrade mixsweep to continue sweep 'newer'"),
        ("resume-newer-state", ["resume", "newer", "--storage", str(tmp)],
         rf"^mixsweep resume: error: {e(str(tmp / 'newer' / 'sweep.json'))} was written by a newer mixsweep \(sweep "
         r"state format 99; this one reads format 1\): upgrade mixsweep to continue sweep 'newer'$"),
        ("status-older-state", ["status", "older", "--storage", str(tmp)],
         r"older/sweep.json cannot be read \(sweep state format 0 of an older mixsweep; this one reads format 1\)\. "
         r"`mixsweep run` rebuilds it: mixsweep run \S*older/spec.yaml"),
        ("report-storage-is-file", ["report", "x", "--storage", str(a_file)],
         rf"^mixsweep report: error: --storage {e(str(a_file))} is a file, not a directory$"),
        ("validate-missing", ["validate", str(tmp / "missing.yaml")],
         rf"^mixsweep validate: error: {e(str(tmp / 'missing.yaml'))}: no such spec file; give a path to a \.yaml file "
         rf"or the name of a shipped spec: {SHIPPED}"),
        ("preview-bad-preset", ["preview", "--presets", "cutmixx", "--out", str(tmp / "p.png")],
         rf"^mixsweep preview: error: mix\.preset: unknown value 'cutmixx' \(did you mean 'cutmix'\?\); allowed: "
         rf"{PRESETS}$"),
        ("preview-bad-photo", ["preview", "--photos", "nosuchphoto", "--out", str(tmp / "p.png")],
         r"^mixsweep preview: error: unknown photo 'nosuchphoto'; known: chelsea, coffee, astronaut, rocket, camera, "
         r"hubble_deep_field$"),
        ("fidelity-bad-preset", ["fidelity", "--presets", "cutmixx", "--png", str(tmp / "f.png")],
         rf"^mixsweep fidelity: error: --presets: unknown preset 'cutmixx' \(did you mean 'cutmix'\?\); allowed: "
         rf"{PRESETS}$"),
        ("fidelity-bad-value", ["fidelity", "--set", "mix.selection=random,randon", "--png", str(tmp / "f.png")],
         r"^mixsweep fidelity: error: --set mix\.selection: unknown value 'randon' \(did you mean 'random'\?\); "
         r"allowed: salient_to_corresponding, salient_to_salient, .*, random$"),
        ("fidelity-unknown-key", ["fidelity", "--set", "mix.pairng=greedy", "--out", str(tmp / "fid")],
         r"^mixsweep fidelity: error: --set mix\.pairng: unknown mixing key \(did you mean 'mix\.pairing'\?\); "
         r"allowed: mix\.saliency, mix\.selection, .*mix\.pairing, "),
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
    assert err.lstrip().startswith(f"mixsweep {args[0]}: error: "), err  # the command that refused
    assert tree(tmp_path) == before, "nothing may be written"


def test_every_command_that_reads_input_has_a_bad_call():
    """Each `mixsweep` command a user can give a wrong name, file, flag or value is exercised above."""
    subcommands = build_parser()._subparsers._group_actions[0].choices
    exercised = {args[0] for _, args, _ in _cli_cases(Path("/x"))}
    assert exercised == set(subcommands) - {"list"}  # `list` reads nothing


def test_quoted_set_values_stay_strings(tmp_path, monkeypatch, capsys):
    """`--set 'name="123"'` is the string 123 (a YAML scalar keeps its quotes' type); unquoted it is a number."""
    monkeypatch.chdir(tmp_path)
    _setup(tmp_path)
    spec = str(tmp_path / "good.yaml")
    assert main(["validate", spec, "--set", 'name="123"', "--set", 'experiment="007"']) == 0
    assert capsys.readouterr().out.startswith(f"{spec}: OK - 123: 2 arms x 2 seeds = 4 trials")
    code, err = run_cli(["validate", spec, "--set", "name=123"], capsys)
    assert_one_clean_message(code, err, rf"^mixsweep validate: error: {re.escape(spec)}: name \(from --set name\): "
                                        r"must be 1\.\.64 characters .* \(got 123\)$")


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
