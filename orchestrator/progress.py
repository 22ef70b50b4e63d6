"""Live progress of a sweep: a compact trial table while it runs, one line per finished trial.

A Ray Tune `Callback` in the driver. The table is printed when a trial starts or ends and at
most every `interval` seconds otherwise, so logs of long sweeps stay readable.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from trainables.config import trial_name, validate_config
from trainables.meta import TrialMeta
from trainables.metrics import TEST_ERR


def _epochs_of(trial) -> int:
    """Epochs of a sampled trial, from its sampled config (grid trials: `Progress.epochs`)."""
    try:
        return validate_config((trial.config.get("trial") or {}).get("config") or {}).epochs
    except Exception:  # noqa: BLE001 - display only
        return 0


@dataclass
class Row:
    """One trial's line in the progress table."""

    name: str
    run_hash: str = ""
    status: str = "PENDING"
    epoch: int = 0
    epochs: int = 0
    current: float | None = None  #: last test/top1_err
    final: float | None = None  #: the sweep metric when the trial finished
    error: str = ""
    node: str = ""


@dataclass
class Progress(Callback):
    """Tracks trial states for the summary and prints the table."""

    metric: str
    names: dict[str, str] = field(default_factory=dict)  #: run_hash -> display name
    epochs: dict[str, int] = field(default_factory=dict)  #: run_hash -> epochs (the resolved trials')
    interval: float = 20.0
    out: TextIO | None = None  #: default: sys.stderr at print time
    on_start: Callable[[], None] | None = None  #: called when a trial starts (the driver refreshes driver.json)
    rows: dict[str, Row] = field(default_factory=dict)  #: trial_id -> row
    fatal: str | None = None  #: a trial's reason to stop the whole sweep (a full disk)
    _last_print: float = 0.0

    def _row(self, trial) -> Row:
        if trial.trial_id not in self.rows:
            meta = TrialMeta.from_dict((trial.config.get("trial") or {}).get("meta"))
            key = meta.run_hash
            self.rows[trial.trial_id] = Row(self.names.get(key, meta.run_name or trial.trial_id), key,
                                            epochs=self.epochs.get(key) or _epochs_of(trial))
        return self.rows[trial.trial_id]

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._row(trial).status = "RUNNING"
        if self.on_start is not None:
            self.on_start()
        self.render(force=True)

    def on_trial_restore(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._row(trial).status = "RUNNING"

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        row = self._row(trial)
        row.status = "RUNNING"
        row.epoch = int(result.get("epoch", row.epoch) or 0)
        if TEST_ERR in result:
            row.current = float(result[TEST_ERR])
        if self.metric in result:
            row.final = float(result[self.metric])
        if result.get("error"):
            row.error = str(result["error"])
        if result.get("fatal") and self.fatal is None:
            self.fatal = str(result["fatal"])
            print(f"[mixsweep] {row.name}: {self.fatal}; stopping the sweep", file=self.out or sys.stderr, flush=True)
        row.node = str(result.get("node_id", ""))[:8]
        if result.get("run_hash") and not row.run_hash:  # sampled trials know their identity only now
            row.run_hash = str(result["run_hash"])
            row.name = self.names.get(row.run_hash, trial_name(row.run_hash))
        self.render()

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        if row.error:
            row.status = "FAILED"
        elif row.epochs and row.epoch < row.epochs:  # Tune ended it early: a scheduler (ASHA) stopped it
            row.status = "STOPPED"
        else:
            row.status = "FINISHED"
        what = f"{self.metric} {row.final:.2f}" if row.final is not None and not row.error else row.error
        if row.status == "STOPPED":
            what = f"stopped early after epoch {row.epoch}/{row.epochs}"
        print(f"[mixsweep] {row.status.lower()}: {row.name}  ({what})", file=self.out or sys.stderr, flush=True)
        self.render(force=True)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        row.status = "ERROR"
        row.error = str(getattr(trial, "error_file", "") or "trial raised; see the Ray log")
        print(f"[mixsweep] error: {row.name} (after retries; see {row.error})", file=self.out or sys.stderr, flush=True)
        self.render(force=True)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            out[row.status] = out.get(row.status, 0) + 1
        return out

    def render(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_print < self.interval:
            return
        self._last_print = now
        counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(self.counts().items()))
        lines = [f"[mixsweep] {len(self.rows)} trials started: {counts}",
                 f"  {'trial':40s} {'status':9s} {'epoch':>7s} {'test err':>9s} {self.metric:>16s}  node"]
        for row in sorted(self.rows.values(), key=lambda r: r.name):
            epoch = f"{row.epoch}/{row.epochs}" if row.epochs else str(row.epoch)
            cur = f"{row.current:.2f}" if row.current is not None else "-"
            fin = f"{row.final:.2f}" if row.final is not None else "-"
            lines.append(f"  {row.name[:40]:40s} {row.status:9s} {epoch:>7s} {cur:>9s} {fin:>16s}  {row.node}")
        print("\n".join(lines), file=self.out or sys.stderr, flush=True)
