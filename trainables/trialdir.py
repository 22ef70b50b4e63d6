"""A trial's folder: every file name in it, and the state its files say the trial is in.

Modelled on submitit's `JobPaths`: one small class knows the layout, and everything else (the
training loop, the Ray trainable, the driver's planning, sync, status, search) asks it for paths
instead of spelling file names. Torch-free, so the driver uses it without loading torch.

    <workdir>/config.yaml               the resolved config (dotted keys): which config the folder belongs to
    <workdir>/sampled.json              a search trial's params as the search algorithm sampled them
    <workdir>/metrics.jsonl             one line per completed epoch, replaced as a whole
    <workdir>/checkpoints/epoch_NNNN.pt the last two checkpoints (see `trainables.checkpoint`)
    <workdir>/preview.png               the first mixed batch
    <workdir>/final.json                the final metrics: the trial finished
    <workdir>/failed.json               {"error", "epoch"}: the trial failed for good (diverged, cannot start)
    <workdir>/stalled.json              written by the driver: the trial stalled and was stopped (`orchestrator.stall`)

A sweep keeps its trials in `<storage>/<sweep>/trials/<run_hash>/` (`orchestrator.storage`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from .files import atomic_write_text
from .mixing.errors import ConfigError
from .yamlio import load_yaml, read_bounded

if TYPE_CHECKING:
    from .config import TrainConfig

_CHECKPOINT = re.compile(r"^epoch_(\d{4,})\.pt$")


def checkpoint_path(folder: Path, epoch: int) -> Path:
    """The checkpoint of `epoch` completed epochs in `folder`."""
    return folder / f"epoch_{epoch:04d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in `folder` (a trial's, or a Ray checkpoint's), oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CHECKPOINT.match(p.name))]
    return sorted(found)


class TrialState(StrEnum):
    """What a trial's folder says about it (the words `status` and `run --dry-run` print)."""

    FINISHED = "finished"  #: final.json: it ended with its final metrics
    FAILED = "failed"  #: failed.json: it failed for good (a retry would fail the same way)
    PARTIAL = "partial"  #: checkpoints but no end: it continues from its last epoch when launched
    NEW = "new"  #: nothing yet: it starts from scratch


@dataclass(frozen=True)
class TrialDir:
    """The folder of one trial: its files' paths, reading and writing them, and `state()`.

    Args:
        folder: the trial's workdir (absolute in a sweep: Ray trials chdir into their own folder).
    """

    folder: Path

    CONFIG: ClassVar[str] = "config.yaml"
    SAMPLED: ClassVar[str] = "sampled.json"
    METRICS: ClassVar[str] = "metrics.jsonl"
    FINAL: ClassVar[str] = "final.json"
    FAILED: ClassVar[str] = "failed.json"
    STALLED: ClassVar[str] = "stalled.json"
    PREVIEW: ClassVar[str] = "preview.png"
    CHECKPOINTS: ClassVar[str] = "checkpoints"
    #: the files that travel with every checkpoint reported to Ray (and come back on a restore)
    RESULT_FILES: ClassVar[tuple[str, ...]] = (FINAL, CONFIG, METRICS)

    @property
    def name(self) -> str:
        """The folder's name: a sweep trial's run_hash."""
        return self.folder.name

    @property
    def config(self) -> Path:
        return self.folder / self.CONFIG

    @property
    def sampled(self) -> Path:
        return self.folder / self.SAMPLED

    @property
    def metrics(self) -> Path:
        return self.folder / self.METRICS

    @property
    def final(self) -> Path:
        return self.folder / self.FINAL

    @property
    def failed(self) -> Path:
        return self.folder / self.FAILED

    @property
    def stalled(self) -> Path:
        return self.folder / self.STALLED

    @property
    def preview(self) -> Path:
        return self.folder / self.PREVIEW

    @property
    def checkpoints(self) -> Path:
        return self.folder / self.CHECKPOINTS

    @property
    def artifacts(self) -> tuple[Path, Path]:
        """What a trial's MLflow run gets as artifacts once it finished."""
        return self.preview, self.config

    def checkpoint(self, epoch: int) -> Path:
        return checkpoint_path(self.checkpoints, epoch)

    def list_checkpoints(self) -> list[tuple[int, Path]]:
        return list_checkpoints(self.checkpoints)

    def state(self) -> TrialState:
        """finished | failed | partial | new, from the files (an end beats checkpoints)."""
        if self.final.exists():
            return TrialState.FINISHED
        if self.failed.exists():
            return TrialState.FAILED
        if self.list_checkpoints():
            return TrialState.PARTIAL
        return TrialState.NEW

    def epochs_done(self) -> int:
        """Completed epochs, as metrics.jsonl records them."""
        return len(self.read_metrics())

    # -- metrics.jsonl ----------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        """The epoch lines of metrics.jsonl (empty when there is none).

        A line that does not parse (a torn write: a crash, a full disk) is left out and reported on
        stderr with the file's path; the trial rewrites the file from its checkpoint when it runs again.
        """
        try:
            text = self.metrics.read_text(errors="replace")
        except FileNotFoundError:
            return []
        lines, bad = [], []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                entry = None
            if isinstance(entry, dict) and isinstance(entry.get("epoch"), int):
                lines.append(entry)
            else:
                bad.append(number)
        if bad:
            print(f"mixsweep: {self.metrics}: line(s) {', '.join(map(str, bad))} cannot be read (cut by a crash or a "
                  "full disk?); skipped", file=sys.stderr, flush=True)
        return lines

    def write_metrics(self, history: Iterable[Mapping[str, Any]]) -> None:
        """metrics.jsonl: one line per epoch, replaced as a whole (never a torn line from us)."""
        atomic_write_text(self.metrics, "".join(json.dumps(dict(m)) + "\n" for m in history))

    # -- the end of a trial -----------------------------------------------------------------
    def write_final(self, final: Mapping[str, float]) -> None:
        """final.json: the trial finished with these metrics."""
        atomic_write_text(self.final, json.dumps(dict(final), indent=1) + "\n")

    def write_failed(self, error: str, epoch: int) -> None:
        """failed.json: the trial failed for good at `epoch` (0: it could not start)."""
        atomic_write_text(self.failed, json.dumps({"error": error, "epoch": epoch}) + "\n")

    def write_stalled(self, *, epoch: int, silent_s: float, limit_s: float) -> None:
        """stalled.json (the driver's): the trial stalled at `epoch`, silent for `silent_s` s (its limit `limit_s`),
        and its process was stopped; `count` says how many times so far."""
        count = int((self.read_stalled() or {}).get("count", 0)) + 1
        record = {"count": count, "epoch": epoch, "silent_s": round(silent_s, 1), "limit_s": round(limit_s, 1),
                  "at": time.strftime("%Y-%m-%d %H:%M:%S")}
        atomic_write_text(self.stalled, json.dumps(record) + "\n")

    def read_stalled(self) -> dict[str, Any] | None:
        """The record of stalled.json; None when the trial never stalled (or the file cannot be read)."""
        try:
            data = json.loads(self.stalled.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_sampled(self, params: Mapping[str, Any]) -> None:
        """sampled.json: the params a search algorithm gave this trial (so a later launch can run it again)."""
        atomic_write_text(self.sampled, json.dumps(dict(params), sort_keys=True))

    def read_sampled(self) -> dict[str, Any]:
        """The params of sampled.json; OSError / ValueError when it is missing or cannot be read."""
        data = json.loads(self.sampled.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{self.sampled}: expected an object, got {type(data).__name__}")
        return data


def write_config(workdir: Path, cfg: TrainConfig) -> None:
    """`config.yaml`: the resolved config as dotted keys; `read_config` + `validate_config` give `cfg` back."""
    atomic_write_text(TrialDir(workdir).config, yaml.safe_dump(cfg.flat(), sort_keys=False))


def read_config(path: Path) -> dict[str, Any]:
    """A `config.yaml` written by `write_config`; ConfigError naming the file when it cannot be read."""
    try:
        data = load_yaml(read_bounded(path).decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError((), f"{path} cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
    if not isinstance(data, dict):
        raise ConfigError((), f"{path} cannot be read (expected a mapping of config keys, got {type(data).__name__})")
    return data
