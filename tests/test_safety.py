"""Safety: no code runs from checkpoints or specs, no eval, the UI stays local, names stay inside storage."""

from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest

from orchestrator.errors import UserError
from orchestrator.spec import parse_spec
from orchestrator.storage import sweep_paths
from trainables.checkpoint import load_latest, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("orchestrator", "trainables", "search_spaces", "bench") for p in (ROOT / d).rglob("*.py")]


class _Payload:
    """Unpickling this would create a marker file (what a malicious checkpoint would do)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_checkpoints_load_weights_only(tmp_path):
    marker = tmp_path / "pwned"
    folder = tmp_path / "checkpoints"
    save_checkpoint(folder, 1, {"model": {}, "history": []})
    evil = folder / "epoch_0002.pt"
    evil.write_bytes(pickle.dumps({"format": 1, "epoch": 2, "x": _Payload(str(marker))}))
    state = load_latest(folder)
    assert not marker.exists(), "a checkpoint executed code"
    assert state is not None and state["epoch"] == 1  # the damaged/malicious newest one is skipped


def test_spec_loader_is_a_safe_loader():
    import yaml

    from orchestrator.spec import _UniqueKeyLoader
    from trainables.yamlio import BoundedSafeLoader

    assert issubclass(_UniqueKeyLoader, BoundedSafeLoader) and issubclass(BoundedSafeLoader, yaml.SafeLoader)


def test_specs_load_with_safe_yaml(tmp_path):
    marker = tmp_path / "pwned"
    text = f"name: x\nbase: !!python/object/apply:os.mkdir ['{marker}']\n"
    with pytest.raises(UserError):
        parse_spec(text, source="evil.yaml")
    assert not marker.exists()


def _builtin_calls(tree: ast.AST) -> list[str]:
    """Names of bare-name calls (`eval(...)`, not `model.eval()`)."""
    return [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]


def test_no_eval_exec_or_unsafe_loaders_in_sources():
    assert SOURCES
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        calls = _builtin_calls(tree)
        assert "eval" not in calls and "exec" not in calls, path
        text = path.read_text()
        assert "yaml.unsafe_load" not in text and "yaml.full_load" not in text, path
        for line in text.splitlines():  # yaml.load only in trainables.yamlio (a bounded SafeLoader subclass)
            if "yaml.load(" in line:
                assert path.name == "yamlio.py" and "Loader=loader" in line, (path, line)
            assert "yaml.safe_load(" not in line, (path, line)  # unbounded: trainables.yamlio.load_yaml
        assert "pickle.load" not in text, path  # CIFAR uses a restricted pickle.Unpickler (test below)
        for node in ast.walk(tree):  # every torch.load passes weights_only=True
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                kw = {k.arg: k.value for k in node.keywords}
                assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, path


def test_ui_binds_localhost_by_default(monkeypatch, tmp_path):
    from orchestrator import cli

    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert cli.main(["ui", "--storage", str(tmp_path)]) == 0
    cmd = calls[0]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--backend-store-uri") + 1] == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert cli.main(["ui", "--storage", str(tmp_path), "--host", "0.0.0.0"]) == 0  # only when told
    assert calls[1][calls[1].index("--host") + 1] == "0.0.0.0"


@pytest.mark.parametrize("name", ["../x", "..", "a/b", "/abs", "x\x00", "", "UPPER", "a" * 65, "~user"])
def test_sweep_names_cannot_escape_storage(tmp_path, name):
    with pytest.raises(UserError, match="not allowed"):
        sweep_paths(tmp_path, name)


def test_spec_names_cannot_escape_storage():
    with pytest.raises(UserError, match="name"):
        parse_spec("name: ../../etc\n", source="x.yaml")


def test_cifar_pickles_cannot_run_code(tmp_path):
    """A pickle planted in a CIFAR data root is refused before anything unpickles it."""
    from trainables.data import build_dataset

    marker = tmp_path / "pwned"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({"data": _Payload(str(marker)), "labels": [0]}))
    with pytest.raises(ValueError, match=r"refusing to load posix.mkdir|not CIFAR python-pickle batches"):
        build_dataset("cifar10", root=str(tmp_path))
    assert not marker.exists()


def test_allocator_tuning_is_opt_in():
    """Importing the library changes nothing process-wide; only our entry points opt in."""
    import subprocess
    import sys

    code = ("import trainables.mixing, trainables.train, trainables.trainable, orchestrator.cli;"
            "import trainables.runtime as r; print(r._done); print(r.keep_freed_memory())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.split() == ["False", "True"]
