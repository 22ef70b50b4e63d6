"""Where a sweep lives on disk, and its state file.

    <storage>/mlflow.db                      default MLflow store (sqlite), shared by the sweeps here
    <storage>/mlartifacts/<experiment>/      its artifacts
    <storage>/<sweep>/sweep.json             the sweep's state: spec, tracking, trials and their hashes
    <storage>/<sweep>/spec.yaml              the spec as launched (resume uses this copy)
    <storage>/<sweep>/trials/<run_hash>/     each trial's workdir: checkpoints, metrics.jsonl, final.json
    <storage>/<sweep>/ray/                   Ray Tune's experiment folders (one per launch)
    <storage>/<sweep>/driver.json            the running driver: pid, Ray session (to detect leftovers)
    <storage>/<sweep>/report/                `mixsweep report` output

For a multi-node cluster `<storage>` must be a path every node sees (NFS), so trials resume
from their workdir wherever they run; Ray checkpoints are the fallback otherwise.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError

NAME = re.compile(r"^[a-z0-9_-]{1,64}$")
DEFAULT_STORAGE = "mixsweep_runs"


@dataclass(frozen=True)
class SweepPaths:
    storage: Path
    name: str

    @property
    def root(self) -> Path:
        return self.storage / self.name

    @property
    def trials(self) -> Path:
        return self.root / "trials"

    @property
    def ray(self) -> Path:
        return self.root / "ray"

    @property
    def state(self) -> Path:
        return self.root / "sweep.json"

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def driver(self) -> Path:
        return self.root / "driver.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    def workdir(self, run_hash: str) -> Path:
        return self.trials / run_hash


def resolve_storage(arg: str | os.PathLike | None, *, create: bool) -> Path:
    """The storage folder, absolute. `create`: it must exist as a writable directory or be creatable
    (it is NOT created here: `mixsweep run` creates it only after its fail-fast checks); otherwise
    it must exist and be readable."""
    path = Path(arg if arg is not None else DEFAULT_STORAGE).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise UserError(f"--storage {path} is a file, not a directory")
    if not path.exists():
        if not create:
            raise UserError(f"--storage {path} does not exist")
        ancestor = next(p for p in path.parents if p.exists())
        if not ancestor.is_dir():
            raise UserError(f"--storage {path} cannot be created: {ancestor} is a file")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise UserError(f"--storage {path} cannot be created: {ancestor} is not writable")
        return path
    if create:
        try:
            with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
                pass
        except OSError as exc:
            raise UserError(f"--storage {path} is not writable: {exc.strerror}") from None
    elif not os.access(path, os.R_OK | os.X_OK):
        raise UserError(f"--storage {path} is not readable")
    return path


def sweep_paths(storage: Path, name: str) -> SweepPaths:
    """Paths of sweep `name`; names that could escape the storage folder are refused."""
    if not isinstance(name, str) or not NAME.match(name):
        raise UserError(f"sweep name {name!r} is not allowed: use 1-64 of a-z, 0-9, '_' and '-'")
    paths = SweepPaths(storage, name)
    if paths.root.resolve().parent != storage.resolve():
        raise UserError(f"sweep name {name!r} escapes the storage folder {storage}")
    return paths


def known_sweeps(storage: Path) -> list[str]:
    if not storage.is_dir():
        return []
    return sorted(p.parent.name for p in storage.glob("*/sweep.json"))


def load_state(paths: SweepPaths) -> dict[str, Any]:
    if not paths.state.exists():
        known = known_sweeps(paths.storage)
        listing = f"; sweeps in {paths.storage}: {', '.join(known)}" if known else f"; {paths.storage} holds no sweep"
        raise UserError(f"unknown sweep {paths.name!r}{listing}")
    try:
        state = json.loads(paths.state.read_text())
    except (OSError, ValueError) as exc:
        state, why = None, f"{type(exc).__name__}: {str(exc)[:200]}"
    else:
        why = "not a sweep state" if not isinstance(state, dict) or "trials" not in state else ""
    if why:
        raise DamagedState(f"{paths.state} cannot be read ({why}). `mixsweep run` rebuilds it: mixsweep run "
                           f"{paths.spec} --storage {paths.storage} (with the --tracking-uri the sweep used, unless it "
                           "was the default); trials that finished are kept and not run again")
    return state


class DamagedState(UserError):
    """sweep.json exists but cannot be read; `mixsweep run` rebuilds it."""


def save_state(paths: SweepPaths, state: dict[str, Any]) -> None:
    from trainables.checkpoint import atomic_write_text

    atomic_write_text(paths.state, json.dumps(state, indent=1, default=str) + "\n")


@contextmanager
def sweep_lock(paths: SweepPaths, what: str) -> Iterator[None]:
    """Exclusive lock of a sweep for `what` (run, resume, sync): two drivers never share trials."""
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.root / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"sweep {paths.name!r} is busy: another mixsweep process (run, resume or sync) holds "
                            f"{paths.root / '.lock'}; wait for it or stop it") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
