"""Live progress of a sweep, from the driver: a Ray Tune `Callback` that sees every trial's every epoch.

One model (`Progress.snapshot`: each trial's row, the counts of running / queued / finished / failed trials,
the epochs done of all, and the sweep's ETA) drives two renderers, so both show the same numbers:

- on a terminal (`console.wants_live`), a live table (rich): per trial its epoch bar, current test error, the
  sweep metric once known, seconds per epoch and the device it holds; above it the counts and the ETA,
  refreshed 4 times a second. Events worth keeping (a trial finished, failed, was retried) print above it;
- elsewhere (a pipe, CI, `nohup`, a Ray job's log), one plain line per event: a trial started, an epoch of
  a trial (with the counts and the ETA), a trial ended. No control codes.

The ETA: each trial's seconds per epoch (wall time between its results, its first epoch counted only until
a later one is measured; a trial not measured yet takes the mean of the others) times its epochs left,
minus the time since its last result; the queued trials' epochs at the mean; all of it divided by the
trials that ran at once, and never less than the longest running trial's rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from ray.tune import Callback

from trainables.config import trial_name, validate_config
from trainables.meta import TrialMeta
from trainables.metrics import TEST_ERR

from .console import Terminal, terminal, wants_live

#: the width of a trial's epoch bar in the live table
BAR = 20
#: a trial's states as the table shows them; ENDED do not run again in this launch
ENDED = ("FINISHED", "FAILED", "STOPPED", "ERROR")


def _epochs_of(trial) -> int:
    """Epochs of a sampled trial, from its sampled config (grid trials: `Progress.epochs`)."""
    try:
        return validate_config((trial.config.get("trial") or {}).get("config") or {}).epochs
    except Exception:  # noqa: BLE001 - display only
        return 0


def clock(seconds: float | None) -> str:
    """H:MM:SS ("-" when unknown)."""
    if seconds is None:
        return "-"
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


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
    device: str = ""  #: what the trial holds ("cpu", "gpu 0"), as it reported it
    host: str = ""  #: the node's IP, as Ray reported it
    pid: int | None = None  #: the process that runs it (names its worker lines)
    last: float | None = None  #: monotonic time of its start or last result
    first_s: float | None = None  #: wall seconds of its first epoch (includes start-up)
    epoch_s: list[float] = field(default_factory=list)  #: wall seconds of its later epochs
    stalled: bool = False  #: stalled (`orchestrator.stall`), its process stopped: until Ray restarts it or fails it

    def seconds_per_epoch(self) -> float | None:
        """Its measured wall seconds per epoch (later epochs; the first alone until there are some)."""
        if self.epoch_s:
            recent = self.epoch_s[-5:]
            return sum(recent) / len(recent)
        return self.first_s


@dataclass(frozen=True)
class Snapshot:
    """What both renderers show at one moment."""

    rows: tuple[Row, ...]  #: every trial started in this launch, by name
    running: int
    queued: int
    finished: int  #: finished, or stopped early by the scheduler
    failed: int  #: failed for good, or errored after retries
    epochs_done: int
    epochs_total: int
    eta_s: float | None  #: seconds until the launch ends; None until an epoch was measured
    per_epoch_s: float | None  #: mean seconds per epoch of the trials measured

    @property
    def started(self) -> int:
        return len(self.rows)

    def counts_text(self) -> str:
        return f"{self.running} running, {self.queued} queued, {self.finished} finished, {self.failed} failed"

    def totals_text(self) -> str:
        return f"{self.epochs_done}/{self.epochs_total} epochs, ETA {clock(self.eta_s)}"


def metric_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def where_text(row: Row, several_hosts: bool) -> str:
    """The device a trial holds, and its node when the sweep runs on several."""
    where = row.device or "-"
    return f"{where}@{row.host}" if several_hosts and row.host else where


@dataclass
class Progress(Callback):
    """Tracks trial states for the summary and shows them (live table on a terminal, plain lines elsewhere).

    Args:
        metric: the sweep's metric (its column).
        names / epochs: run_hash -> display name / epochs of the grid trials of this launch (queued ones too).
        total: how many trials this launch runs (default: the grid's, or Tune's count at setup).
        out: where it prints (a `console.Terminal` over stderr by default).
        live: a live table (default: when `out` is a terminal; `console.wants_live`).
        title: what the live table's header names (the sweep and launch).
        on_start: called when a trial starts (the driver refreshes driver.json).
        log_hint: where the full logs are, printed with a failure.
    """

    metric: str
    names: dict[str, str] = field(default_factory=dict)  #: run_hash -> display name
    epochs: dict[str, int] = field(default_factory=dict)  #: run_hash -> epochs (the resolved trials')
    total: int = 0
    out: TextIO | None = None
    live: bool | None = None
    title: str = ""
    on_start: Callable[[], None] | None = None
    log_hint: str = ""
    rows: dict[str, Row] = field(default_factory=dict)  #: trial_id -> row
    fatal: str | None = None  #: a trial's reason to stop the whole sweep (a full disk)
    slots: int = 0  #: the most trials that ran at once
    _display: Any = None
    _term: Terminal | None = None

    def __post_init__(self) -> None:
        self._term = terminal(self.out)
        self.out = self._term
        if self.live is None:
            self.live = wants_live(self._term)
        self.total = self.total or len(self.names)

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks with the experiment (tuner.pkl): without the terminal, display and hooks."""
        return {**self.__dict__, "out": None, "_term": None, "_display": None, "on_start": None}

    # -- model --------------------------------------------------------------------------------
    def _row(self, trial) -> Row:
        if trial.trial_id not in self.rows:
            meta = TrialMeta.from_dict((trial.config.get("trial") or {}).get("meta"))
            key = meta.run_hash
            self.rows[trial.trial_id] = Row(self.names.get(key, meta.run_name or trial.trial_id), key,
                                            epochs=self.epochs.get(key) or _epochs_of(trial))
        return self.rows[trial.trial_id]

    def snapshot(self, now: float | None = None) -> Snapshot:
        """The rows, counts, epochs and ETA at monotonic time `now` (default: now)."""
        now = time.monotonic() if now is None else now
        rows = tuple(sorted(self.rows.values(), key=lambda r: r.name))
        started = {r.run_hash for r in rows if r.run_hash}
        pending = [r for r in rows if r.status == "PENDING"]
        unstarted = max(0, self.total - len(rows))
        known = [r.epochs for r in rows if r.epochs] or [e for e in self.epochs.values() if e]
        typical = round(sum(known) / len(known)) if known else 0
        later = [e for h, e in self.epochs.items() if h not in started][:unstarted]
        later += [typical] * (unstarted - len(later))  # a search's trials not sampled yet
        queued_epochs = later + [r.epochs for r in pending]
        running = [r for r in rows if r.status == "RUNNING"]
        steady = [r.seconds_per_epoch() for r in rows if r.epoch_s]  # later epochs: no start-up in them
        measured = steady or [r.first_s for r in rows if r.first_s is not None]
        mean = sum(measured) / len(measured) if measured else None
        # a trial's start-up (processes, data, model): its first epoch's time beyond its later epochs'
        startups = [max(0.0, r.first_s - sum(r.epoch_s[-5:]) / len(r.epoch_s[-5:])) for r in rows
                    if r.first_s is not None and r.epoch_s]
        startup = sum(startups) / len(startups) if startups else 0.0
        done = sum(r.epoch for r in rows)
        total = sum(r.epoch if r.status in ENDED and r.status != "FINISHED" else max(r.epochs, r.epoch)
                    for r in rows) + sum(later)
        queued = unstarted + len(pending)
        eta = None
        if not running and not queued:
            eta = 0.0
        elif mean is not None:
            rests = []
            for r in running:
                per = r.seconds_per_epoch() if r.epoch_s else mean
                since = now - r.last if r.last is not None else 0.0
                left = max(0, r.epochs - r.epoch) * per + (startup if r.first_s is None and not r.epoch_s else 0.0)
                rests.append(max(0.0, left - since))
            work = sum(rests) + sum(queued_epochs) * mean + startup * len(queued_epochs)
            eta = max(max(rests, default=0.0), work / max(1, self.slots, len(running)))
        return Snapshot(rows=rows, running=len(running), queued=queued,
                        finished=sum(r.status in ("FINISHED", "STOPPED") for r in rows),
                        failed=sum(r.status in ("FAILED", "ERROR") for r in rows),
                        epochs_done=done, epochs_total=max(total, done), eta_s=eta, per_epoch_s=mean)

    # -- Tune's callbacks -----------------------------------------------------------------------
    def setup(self, stop=None, num_samples=None, total_num_samples=None, **info: Any) -> None:
        if not self.total and total_num_samples:
            self.total = int(total_num_samples)
        self._show()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        row.status, row.last = "RUNNING", time.monotonic()
        self.slots = max(self.slots, sum(r.status == "RUNNING" for r in self.rows.values()))
        if self.on_start is not None:
            self.on_start()
        snap = self.snapshot()
        if not self.live:
            self._say(f"{snap.started} trials started: {snap.counts_text()} (latest: {row.name})")
        self._show()

    def row_of(self, trial) -> Row:
        """The row of a Tune trial (made on first sight)."""
        return self._row(trial)

    def stalled(self, trial, text: str) -> None:
        """`orchestrator.stall` found `trial` stalled and stops its process: say so (`text`), mark its row."""
        row = self._row(trial)
        row.stalled = True
        self._say(f"{row.name}: {text}")
        self._show()

    def on_trial_restore(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        row.status, row.last = "RUNNING", time.monotonic()

    def on_trial_recover(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        row.status, row.last = "RUNNING", time.monotonic()
        if row.stalled:
            row.stalled = False
            self._say(f"{row.name}: its stalled process was stopped; Ray runs it again from its last checkpoint")
            return
        self._say(f"{row.name}: its process failed; Ray runs it again from its last checkpoint (the traceback: "
                  f"{self.log_hint or 'the Ray log'})")

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        row = self._row(trial)
        now = time.monotonic()
        row.status = "RUNNING"
        epoch = int(result.get("epoch", row.epoch) or 0)
        if row.last is not None and epoch == row.epoch + 1:  # an epoch trained now (not re-reported)
            if row.epoch == 0 and row.first_s is None and not row.epoch_s:
                row.first_s = now - row.last
            else:
                row.epoch_s.append(now - row.last)
        row.last, row.epoch = now, epoch
        if TEST_ERR in result:
            row.current = float(result[TEST_ERR])
        if self.metric in result:
            row.final = float(result[self.metric])
        if result.get("error"):
            row.error = str(result["error"])
        if result.get("fatal") and self.fatal is None:
            self.fatal = str(result["fatal"])
            self._say(f"{row.name}: {self.fatal}; stopping the sweep")
        row.device = str(result.get("device", row.device) or "")
        row.host = str(result.get("node_ip", row.host) or "")
        if isinstance(result.get("pid"), int):
            row.pid = result["pid"]
        if result.get("run_hash") and not row.run_hash:  # sampled trials know their identity only now
            row.run_hash = str(result["run_hash"])
            row.name = self.names.get(row.run_hash, trial_name(row.run_hash))
        if not self.live and "epoch" in result and not result.get("error") and not result.get("fatal"):
            self._say(self.epoch_line(row, self.snapshot(now)))
        self._show()

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
        self._say(f"{row.status.lower()}: {row.name}  ({what})")
        self._show()

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        row = self._row(trial)
        row.status = "ERROR"
        row.error = str(getattr(trial, "error_file", "") or "trial raised; see the Ray log")
        hint = f"; full logs: {self.log_hint}" if self.log_hint else ""
        why = "it stalled; its retries are spent" if row.stalled else "after retries"
        self._say(f"error: {row.name} ({why}; see {row.error}{hint})")
        self._show()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.close()

    # -- rendering ------------------------------------------------------------------------------
    def epoch_line(self, row: Row, snap: Snapshot) -> str:
        """The plain line of one epoch event (the same numbers as the live table)."""
        per = row.seconds_per_epoch()
        several = len({r.host for r in snap.rows if r.host}) > 1
        return (f"{row.name}  epoch {row.epoch}/{row.epochs or '?'}  test err {metric_text(row.current)}"
                + (f"  {self.metric} {row.final:.2f}" if row.final is not None and self.metric != TEST_ERR else "")
                + (f"  {per:.1f} s/epoch" if per is not None else "") + f"  {where_text(row, several)}"
                + f"  | {snap.counts_text()}; {snap.totals_text()}")

    def _say(self, text: str) -> None:
        print(f"[mixsweep] {text}", file=self._term, flush=True)

    say = _say

    def _show(self) -> None:
        """Start the live table (once), or refresh it."""
        if not self.live:
            return
        if self._display is None:
            self._display = LiveTable(self, self._term)
            self._display.start()
        else:
            self._display.refresh()

    def close(self) -> None:
        """Stop the live table, leaving its last state on the screen; later prints go straight out."""
        if self._display is not None:
            self._display.stop()
            self._display = None

    def name_of(self, pid: Any, line: str = "") -> str | None:
        """The trial a worker's line is about: the one whose run_hash it names, else the running trial of that
        process (as its last result said; None before its first result: a reused process ran another trial)."""
        for row in self.rows.values():
            if row.run_hash and row.run_hash in line:
                return row.name
        for run_hash, name in self.names.items():
            if run_hash and run_hash in line:
                return name
        running = [r for r in self.rows.values() if r.pid == pid and r.status == "RUNNING"]
        return running[0].name if len(running) == 1 else None

    def worker_line(self, pid: Any, line: str) -> None:
        """A worker's line that is ours to show (`console.SHOWN`), named by its trial."""
        name = self.name_of(pid, line)
        self._say(f"{name or f'worker pid {pid}'}: {line.removeprefix('mixsweep: ')}")


class LiveTable:
    """The live display on a terminal: header (counts, epochs, ETA) and one row per trial (rich)."""

    REFRESH_PER_SECOND = 4

    def __init__(self, progress: Progress, term: Terminal) -> None:
        from rich.console import Console
        from rich.live import Live

        self.progress, self.term = progress, term
        self.console = Console(file=term.stream, highlight=False)
        self.live = Live(console=self.console, get_renderable=self.render, refresh_per_second=self.REFRESH_PER_SECOND,
                         transient=False, redirect_stdout=True, redirect_stderr=True)

    def start(self) -> None:
        self.live.start()
        self.term.attach(self.live)

    def refresh(self) -> None:
        self.live.refresh()

    def stop(self) -> None:
        self.term.attach(None)
        self.live.stop()

    def render(self):
        return render_table(self.progress.snapshot(), self.progress.metric, title=self.progress.title,
                            height=self.console.size.height)


def render_table(snap: Snapshot, metric: str, *, title: str = "", height: int = 50):
    """The live display's renderable for `snap`: a header line and the trials' table."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    header = Text()
    if title:
        header.append(f"{title}  ", style="bold")
    header.append(f"{snap.running} running", style="cyan")
    header.append(f" · {snap.queued} queued · ")
    header.append(f"{snap.finished} finished", style="green")
    header.append(" · ")
    header.append(f"{snap.failed} failed", style="red" if snap.failed else "")
    header.append(f" · {snap.epochs_done}/{snap.epochs_total} epochs · ETA {clock(snap.eta_s)}")
    if snap.per_epoch_s is not None:
        header.append(f" ({snap.per_epoch_s:.1f} s/epoch)", style="dim")
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, expand=False)
    table.add_column("trial", no_wrap=True, overflow="ellipsis", max_width=40)
    table.add_column("status", no_wrap=True)
    table.add_column("epochs", no_wrap=True)
    table.add_column("", no_wrap=True, justify="right")
    table.add_column("test err", justify="right", no_wrap=True)
    table.add_column(metric, justify="right", no_wrap=True)
    table.add_column("s/epoch", justify="right", no_wrap=True)
    table.add_column("device", no_wrap=True)
    several = len({r.host for r in snap.rows if r.host}) > 1
    order = {"RUNNING": 0, "ERROR": 1, "FAILED": 1, "PENDING": 2, "FINISHED": 3, "STOPPED": 3}
    rows = sorted(snap.rows, key=lambda r: (order.get(r.status, 4), r.status in ENDED and -(r.last or 0), r.name))
    room = max(3, height - 8)
    shown, hidden = rows[:room], rows[room:]
    styles = {"RUNNING": "cyan", "FINISHED": "green", "STOPPED": "yellow", "FAILED": "red", "ERROR": "red"}
    for r in shown:
        per = r.seconds_per_epoch()
        filled = min(BAR, round(BAR * r.epoch / r.epochs)) if r.epochs else 0
        bar = Text("━" * filled, style="green" if r.status == "FINISHED" else "cyan")
        bar.append("─" * (BAR - filled), style="dim")
        status = Text("stalled", style="red") if r.stalled else Text(r.status.lower(), style=styles.get(r.status, ""))
        table.add_row(r.name, status, bar,
                      f"{r.epoch}/{r.epochs or '?'}", metric_text(r.current), metric_text(r.final),
                      "-" if per is None else f"{per:.1f}", where_text(r, several))
    parts = [header, table]
    if hidden:
        parts.append(Text(f"… {len(hidden)} more trial(s) not shown", style="dim"))
    return Group(*parts)


__all__ = ["LiveTable", "Progress", "Row", "Snapshot", "clock", "render_table"]
