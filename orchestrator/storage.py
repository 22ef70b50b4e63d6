"""Where a sweep lives on disk, and its state file.

    <storage>/mlflow.db                      default MLflow store (sqlite), shared by the sweeps here
    <storage>/mlartifacts/<experiment>/      its artifacts
    <storage>/<sweep>/sweep.json             the sweep's state: spec, tracking, trials and their hashes
    <storage>/<sweep>/spec.yaml              the spec as launched (resume uses this copy)
    <storage>/<sweep>/trials/<run_hash>/     each trial's workdir: checkpoints, metrics.jsonl, final.json
    <storage>/<sweep>/ray/                   Ray Tune's experiment folders (one per launch)
    <storage>/<sweep>/driver.json            the running driver: pid, Ray session (to detect leftovers)
    <storage>/<sweep>/report/                `mixsweep report` output
    <storage>/<sweep>/logs/                  what the terminal does not show: Ray's and MLflow's log lines
                                             (driver.log), the trial processes' output (workers.log)

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
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from trainables.files import atomic_write_text
from trainables.metrics import FINAL_ERR
from trainables.trialdir import TrialDir

from .errors import UserError

#: a sweep's name: a folder in the storage, a word in every printed command (`resume NAME`), so never an option
NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
NAME_RULE = "1..64 characters from a-z, 0-9, '_' and '-', starting with a letter or digit (pattern [a-z0-9][a-z0-9_-]*)"
DEFAULT_STORAGE = "mixsweep_runs"


@dataclass(frozen=True)
class SweepPaths:
    """The folders and files of sweep `name` in `storage` (the layout above)."""

    storage: Path
    name: str

    STATE: ClassVar[str] = "sweep.json"

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
        return self.root / self.STATE

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def driver(self) -> Path:
        return self.root / "driver.json"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def trial(self, run_hash: str) -> TrialDir:
        """The folder of trial `run_hash` (its file names: `trainables.trialdir.TrialDir`)."""
        return TrialDir(self.trials / run_hash)

    def trial_dirs(self) -> list[TrialDir]:
        """Every trial folder on this machine, by name."""
        return [TrialDir(p) for p in sorted(self.trials.glob("*"))]


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
        raise UserError(f"sweep name {name!r} is not allowed: use {NAME_RULE}")
    paths = SweepPaths(storage, name)
    if paths.root.resolve().parent != storage.resolve():
        raise UserError(f"sweep name {name!r} escapes the storage folder {storage}")
    return paths


def known_sweeps(storage: Path) -> list[str]:
    if not storage.is_dir():
        return []
    return sorted(p.parent.name for p in storage.glob(f"*/{SweepPaths.STATE}"))


class DamagedState(UserError):
    """sweep.json exists but cannot be read; `mixsweep run` rebuilds it.

    `reason`: what is wrong, without the remedy (for callers that rebuild it themselves).
    """

    def __init__(self, reason: str, remedy: str) -> None:
        super().__init__(f"{reason}. {remedy}")
        self.reason = reason


#: the layout of sweep.json this code reads and writes. A file without a `format` field has layout 1 (the
#: field came later); a newer one is refused (rebuilding it would lose what a newer version keeps there),
#: an older one is rebuilt by `mixsweep run` like a damaged one.
STATE_FORMAT = 1


@dataclass(frozen=True)
class TrialEntry:
    """One trial as sweep.json lists it (grid: every trial of the spec; search: those sampled so far)."""

    run_hash: str
    name: str
    config_hash: str = ""  #: empty for a search trial
    seed: int = 0
    levels: dict[str, Any] = field(default_factory=dict)  #: factor -> level (search: the sampled params)


@dataclass(frozen=True)
class SweepState:
    """sweep.json: what a sweep is (its spec's name, metric and tracking) and which trials it holds.

    Written by `run` (atomically, as a whole) before and after each launch; read by `resume`, `status`,
    `sync`, `report` and `ui`. Load it with `SweepState.load(paths)`; change it with `dataclasses.replace`.
    """

    name: str
    tracking_uri: str
    experiment_id: str
    sweep_run_id: str
    source: str = ""  #: the spec as the user named it
    spec_hash: str = ""
    metric: str = FINAL_ERR
    mode: str = "min"
    address: str = ""  #: the Ray cluster the sweep ran on ("" = a local instance)
    launches: int = 0  #: Tune experiments launched so far (`ray/launch-NNN`, `ray/search-NNN`)
    stopped: tuple[str, ...] = ()  #: run_hashes that ASHA stopped early (ended, without final.json)
    trials: tuple[TrialEntry, ...] = ()
    format: int = STATE_FORMAT

    @property
    def names(self) -> dict[str, str]:
        """run_hash -> display name of every listed trial."""
        return {t.run_hash: t.name for t in self.trials}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {"format": data.pop("format"), **data, "stopped": list(self.stopped)}

    @classmethod
    def from_dict(cls, data: Any) -> SweepState:
        """The state in `data` (parsed sweep.json); ValueError saying what is wrong with it."""
        if not isinstance(data, dict):
            raise ValueError(f"expected an object, got {type(data).__name__}")
        missing = [k for k in ("name", "tracking_uri", "experiment_id", "sweep_run_id", "trials") if k not in data]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {f.name for f in fields(cls)}
        try:
            trials = tuple(TrialEntry(**t) for t in data["trials"])
            return cls(**{**{k: v for k, v in data.items() if k in known}, "trials": trials,
                          "stopped": tuple(data.get("stopped", ()))})
        except TypeError as exc:
            raise ValueError(f"a field has the wrong shape ({exc})") from None

    @classmethod
    def load(cls, paths: SweepPaths) -> SweepState:
        """sweep.json of `paths`: UserError for an unknown sweep or a newer format, DamagedState when it cannot
        be read (or is older than this code reads; `mixsweep run` rebuilds both)."""
        if not paths.state.exists():
            known = known_sweeps(paths.storage)
            listing = (f"; sweeps in {paths.storage}: {', '.join(known)}" if known
                       else f"; {paths.storage} holds no sweep")
            raise UserError(f"unknown sweep {paths.name!r}{listing}")
        rebuild = (f"`mixsweep run` rebuilds it: mixsweep run {paths.spec} --storage {paths.storage} (with the "
                   "--tracking-uri the sweep used, unless it was the default); trials that finished are kept and not "
                   "run again")
        try:
            data = json.loads(paths.state.read_text())
        except (OSError, ValueError) as exc:
            raise DamagedState(f"{paths.state} cannot be read ({type(exc).__name__}: {str(exc)[:200]})",
                               rebuild) from None
        version = data.get("format", 1) if isinstance(data, dict) else None
        if isinstance(version, int) and version > STATE_FORMAT:
            raise UserError(f"{paths.state} was written by a newer mixsweep (sweep state format {version}; this one "
                            f"reads format {STATE_FORMAT}): upgrade mixsweep to continue sweep {paths.name!r}")
        if isinstance(version, int) and version < STATE_FORMAT:
            raise DamagedState(f"{paths.state} cannot be read (sweep state format {version} of an older mixsweep; "
                               f"this one reads format {STATE_FORMAT})", rebuild)
        try:
            if not isinstance(version, int):
                raise ValueError(f"format {version!r}")
            return cls.from_dict(data)
        except ValueError as exc:
            raise DamagedState(f"{paths.state} cannot be read (not a sweep state: {exc})", rebuild) from None

    def save(self, paths: SweepPaths) -> None:
        """Replace sweep.json as a whole (atomically)."""
        atomic_write_text(paths.state, json.dumps(self.to_dict(), indent=1, default=str) + "\n")


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
