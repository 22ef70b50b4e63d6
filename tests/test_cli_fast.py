"""The commands that only read specs and storage import neither torch, torchvision, MLflow nor Ray.

`mixsweep validate`, `list`, `status` and `--help` are what a user runs while editing a spec; each used
to import torch for the registries' names (~4 s a command). The registries are torch-free now
(`trainables.mixing.lazy`). These tests run each command in a fresh interpreter, as a user does, and
read `sys.modules` when it exits. Not timed: the imports are what made them slow, so the imports are
what is checked (and the answer, so that a command that fails early cannot pass).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "torchvision", "mlflow", "ray")

#: `orchestrator.cli.main(argv)`, then the heavy top-level packages that were imported, printed even when
#: the command leaves through SystemExit (`--help`) or an exception
RUN = f"""\
import sys
from orchestrator.cli import main
try:
    code = main(sys.argv[1:])
finally:
    loaded = sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r}))
    print("HEAVY_IMPORTS=" + ",".join(loaded), file=sys.stderr)
sys.exit(code)
"""

BASE = "name: fast\nbase: {dataset: synthetic_salient, model: small_cnn, epochs: 1}\nseeds: 2\n"
#: specs with one mistake each, found by comparing with a registry's names or a builder's options
BAD_SPECS = {
    "model_option": (BASE + "factors: {model.widht: [8, 16]}\n", "model.widht"),
    "data_option": (BASE + "factors: {data.clutr: [0.1, 0.5]}\n", "data.clutr"),
    "mask": (BASE + "factors: {mix.mask: [box, boxx]}\n", "'boxx'"),
    "saliency": (BASE + "factors: {mix.preset: [saliencymix], mix.saliency: [fine_graned]}\n", "'fine_graned'"),
    "model": (BASE.replace("small_cnn", "small_cnm") + "factors: {mix.preset: [none, cutmix]}\n", "'small_cnm'"),
}


def run_cli(args: list[str], cwd: Path) -> tuple[int, str, str, list[str]]:
    """(exit code, stdout, stderr without the marker line, heavy packages imported) of `mixsweep ARGS`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", RUN, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = proc.stderr.splitlines()
    marker = [line for line in lines if line.startswith("HEAVY_IMPORTS=")]
    assert marker, proc.stderr
    heavy = [name for name in marker[-1].removeprefix("HEAVY_IMPORTS=").split(",") if name]
    return proc.returncode, proc.stdout, "\n".join(line for line in lines if line not in marker), heavy


def test_validate_a_shipped_spec(tmp_path):
    code, out, err, heavy = run_cli(["validate", "smoke"], tmp_path)
    assert (code, heavy) == (0, []), err
    assert "smoke: OK" in out and "trials" in out


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_validate_finds_a_mistake(tmp_path, case):
    text, named = BAD_SPECS[case]
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err, heavy = run_cli(["validate", "bad.yaml"], tmp_path)
    assert (code, heavy) == (2, []), err
    assert err.startswith("mixsweep validate: error: bad.yaml: ") and named in err, err
    assert "Traceback" not in err


def test_list(tmp_path):
    code, out, err, heavy = run_cli(["list"], tmp_path)
    assert (code, heavy) == (0, []), err
    for section in ("sweep specs", "presets", "factor values", "recipes", "datasets (dataset): ", "models (model): "):
        assert section in out
    assert "small_cnn" in out and "synthetic_salient" in out and "fine_grained" in out


def test_status_of_a_missing_sweep(tmp_path):
    code, out, err, heavy = run_cli(["status", "nosuch", "--storage", str(tmp_path)], tmp_path)
    assert (code, heavy) == (2, []), err
    assert err.startswith("mixsweep status: error: ") and "nosuch" in err


@pytest.mark.parametrize("args", [["--help"], ["validate", "--help"], ["run", "--help"], ["submit", "--help"],
                                  ["jobs", "--help"]])
def test_help(tmp_path, args):
    code, out, err, heavy = run_cli(args, tmp_path)
    assert (code, heavy) == (0, []), err
    assert out.startswith("usage: ")


def test_submit_refuses_a_bad_spec_before_ray(tmp_path):
    """`mixsweep submit` checks the spec first: a bad one never reaches Ray (nor imports it)."""
    text, named = BAD_SPECS["mask"]
    (tmp_path / "bad.yaml").write_text(text)
    code, out, err, heavy = run_cli(["submit", "bad.yaml", "--address", "http://127.0.0.1:9", "--storage", "/abs"],
                                    tmp_path)
    assert (code, heavy) == (2, []), err
    assert err.startswith("mixsweep submit: error: bad.yaml: ") and named in err, err
