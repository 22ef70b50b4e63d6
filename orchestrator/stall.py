"""Stall detection: a trial that stops making progress is reported, recorded, and handed to Ray's retry.

A trial process can hang without dying (a deadlocked data loader, a hung file system or GPU driver, a
SIGSTOP): Ray sees nothing wrong, and the sweep would wait forever. `StallWatch`, a Tune callback next to
`progress.Progress`, times each running trial from its start and from each result (one per epoch). A trial
silent for longer than its limit

- is reported on the terminal (`Progress.stalled`) and in its folder (`stalled.json`, which `mixsweep
  status` reads; `TrialDir.write_stalled`),
- then its actor is killed (`ray.kill`, on whichever node it runs; a stopped process is killed too), so
  Tune sees an actor failure: Ray retries the trial from its last checkpoint under `FailureConfig`,
  counting against `max_failures`, and once they are spent it fails like a crash.

The limit (`stall_timeout` in the spec, seconds): the spec's value, or by default max(`FLOOR_S`,
`FACTOR` x the slowest epoch measured in this launch: the trial's own, else the slowest of any trial). Before
a trial's first result since it (re)started, which includes its start-up (processes, data loading, the model),
it gets `STARTUP_FACTOR` times as long, and at least `STARTUP_MIN_S`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune import Callback

from trainables.meta import TrialMeta
from trainables.trialdir import TrialDir

#: the default limit's floor (seconds without a finished epoch)
FLOOR_S = 600.0
#: the default limit: this many times the slowest epoch measured
FACTOR = 10.0
#: before a trial's first result since it (re)started: this many times its limit (start-up included) ...
STARTUP_FACTOR = 3.0
#: ... and at least this long: starting a process, importing torch and loading data do not scale with an epoch
STARTUP_MIN_S = 120.0


def stall_limit(timeout: float | None, slowest: float | None, started: bool) -> float:
    """Seconds a trial may go without a result: `timeout` (the spec's `stall_timeout`) or the default from the
    `slowest` epoch measured (None: none yet); `STARTUP_FACTOR` times as long until it reported since it
    (re)`started`."""
    limit = timeout if timeout is not None else max(FLOOR_S, FACTOR * (slowest or 0.0))
    return limit if started else max(STARTUP_FACTOR * limit, STARTUP_MIN_S)


@dataclass
class _Clock:
    """One trial's timing, as the driver sees it."""

    since: float  #: monotonic time of its (re)start or its last result
    running: bool = True  #: started and not ended (a failed trial is not running until it starts again)
    reported: bool = False  #: a result came since it (re)started
    slowest: float | None = None  #: its slowest epoch (between two results; start-up not included)


class StallWatch(Callback):
    """Finds trials silent for longer than their limit, reports and records them, and kills their actor.

    Args:
        progress: the launch's `Progress` (names the trials and prints).
        timeout: the spec's `stall_timeout` (None: the default, see `stall_limit`).
        max_failures: the spec's retries (for the message).
    """

    def __init__(self, progress, timeout: float | None, max_failures: int) -> None:
        self.progress, self.timeout, self.max_failures = progress, timeout, max_failures
        self.clocks: dict[str, _Clock] = {}  # trial_id -> its clock

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "clocks": {}}

    # -- Tune's callbacks -----------------------------------------------------------------------
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        clock = self.clocks.get(trial.trial_id)
        self.clocks[trial.trial_id] = _Clock(time.monotonic(), slowest=clock.slowest if clock else None)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        now = time.monotonic()
        clock = self.clocks.setdefault(trial.trial_id, _Clock(now))
        if clock.reported:
            clock.slowest = max(clock.slowest or 0.0, now - clock.since)
        clock.since, clock.reported = now, True

    def _ended(self, iteration: int, trials: list, trial, **info: Any) -> None:
        if trial.trial_id in self.clocks:
            self.clocks[trial.trial_id].running = False

    on_trial_recover = on_trial_complete = on_trial_error = _ended

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        slowest = max((c.slowest for c in self.clocks.values() if c.slowest is not None), default=None)
        for trial in trials:
            clock = self.clocks.get(trial.trial_id)
            if clock is None or not clock.running or trial.status != "RUNNING":
                continue
            limit = stall_limit(self.timeout, clock.slowest or slowest, clock.reported)
            if now - clock.since > limit:
                clock.running = False  # once: Tune's failure (or a late result) comes next
                self._stop(trial, now - clock.since, limit)

    # -- acting ---------------------------------------------------------------------------------
    def _stop(self, trial, silent_s: float, limit: float) -> None:
        """Report and record the stalled `trial`, then kill its actor (Tune retries it, or fails it)."""
        import ray

        row = self.progress.row_of(trial)
        failures = getattr(getattr(trial, "run_metadata", None), "num_failures", 0)
        retry = (f"Ray retries it from its last checkpoint (retry {failures + 1} of max_failures "
                 f"{self.max_failures})" if failures < self.max_failures
                 else f"its retries are spent (max_failures {self.max_failures}): it fails")
        self.progress.stalled(trial, f"stalled: no progress for {silent_s:.0f} s at epoch {row.epoch}/"
                                     f"{row.epochs or '?'} (limit {limit:.0f} s, see stall_timeout); stopping its "
                                     f"process, {retry}")
        folder = self._folder(trial, row.run_hash)
        if folder is not None:
            try:
                folder.write_stalled(epoch=row.epoch, silent_s=silent_s, limit_s=limit)
            except OSError as exc:
                self.progress.say(f"{row.name}: cannot record the stall in {folder.stalled}: {exc}")
        actor = getattr(trial.temporary_state, "ray_actor", None)
        if actor is not None:
            try:
                ray.kill(actor, no_restart=True)
            except Exception as exc:  # noqa: BLE001 - the trial stays stalled; say why
                self.progress.say(f"{row.name}: cannot stop its process ({type(exc).__name__}: {exc})")

    @staticmethod
    def _folder(trial, run_hash: str) -> TrialDir | None:
        meta = TrialMeta.from_dict((trial.config.get("trial") or {}).get("meta"))
        if meta.trial_dir is not None:
            return meta.trial_dir
        return TrialDir(Path(meta.trials_dir) / run_hash) if meta.trials_dir and run_hash else None


__all__ = ["FACTOR", "FLOOR_S", "STARTUP_FACTOR", "STARTUP_MIN_S", "StallWatch", "stall_limit"]
