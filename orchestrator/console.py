"""What a sweep's terminal shows, and where everything else goes.

The terminal gets mixsweep's own lines (`[mixsweep] ...`), the live progress (`orchestrator.progress`) and
the end-of-sweep summary. Everything else is kept, in `<storage>/<sweep>/logs/`:

    driver.log    the driver's Python loggers: Ray (its start-up, token-auth warning, Tune's "Wrote the latest
                  version of all result files", its `Tuner.restore` advice after Ctrl+C, trial tracebacks) and
                  MLflow's INFO lines (its warnings still reach the terminal)
    workers.log   every line the trial processes print (their epoch lines, Ray Train's "Checkpoint successfully
                  created", tracebacks, "Exception ignored" at a worker's exit), prefixed by the process

Worker lines that are ours to show (`mixsweep: ...` warnings, `resuming ... after epoch k/n`) are forwarded to
the terminal as well, named by their trial. Worker output reaches the driver through Ray's log stream
(`log_to_driver=True`); its printer (with its ANSI colours and its de-duplication, "[repeated 8x across
cluster]") is replaced by ours while the sweep runs (`WorkerOutput`).

`Terminal` is the stream the driver prints to: while a live display is shown, each line it gets is printed
above the display (rich's `Console.print`), so signal handlers, warnings and events never tear it.
"""

from __future__ import annotations

import importlib
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TextIO

#: the environment variable that forces plain lines on a terminal too (`--plain`)
PLAIN_ENV = "MIXSWEEP_PLAIN"
DRIVER_LOG, WORKERS_LOG = "driver.log", "workers.log"
#: worker lines shown on the terminal (the rest only in workers.log)
SHOWN = re.compile(r"^(mixsweep: |resuming )")
#: Ray's own processes whose lines go to workers.log only
_RAY_SOURCES = ("raylet", "autoscaler", "gcs_server")


def wants_live(stream: Any) -> bool:
    """A live display on `stream`: a terminal, unless MIXSWEEP_PLAIN is set or TERM=dumb."""
    if os.environ.get(PLAIN_ENV, "").strip() not in ("", "0") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


class Terminal(io.TextIOBase):
    """The driver's output stream (stderr by default); lines go above the live display while one is shown."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self.live = None  #: a rich `Live` while one is shown
        self._partial = ""
        self._lock = threading.RLock()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", None) or "utf-8"

    def isatty(self) -> bool:
        try:
            return bool(self.stream.isatty())
        except (AttributeError, ValueError, OSError):
            return False

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            if self.live is None:
                self.stream.write(text)
                return len(text)
            self._partial += text
            *lines, self._partial = self._partial.split("\n")
            for line in lines:
                self._above(line)
            return len(text)

    def flush(self) -> None:
        with self._lock:
            if self.live is None:
                self.stream.flush()

    def _above(self, line: str) -> None:
        from rich.text import Text

        self.live.console.print(Text(line), soft_wrap=True)

    def attach(self, live) -> None:
        """Print through `live` from now on (None: straight to the stream again)."""
        with self._lock:
            if live is None and self._partial and self.live is not None:
                self._above(self._partial)
                self._partial = ""
            self.live = live

    def line(self, text: str) -> None:
        """Print one line and flush."""
        print(text, file=self, flush=True)


def terminal(out: TextIO | None) -> Terminal:
    """`out` (default: stderr) as a `Terminal` (itself when it is one)."""
    out = out if out is not None else sys.stderr
    return out if isinstance(out, Terminal) else Terminal(out)


# ----------------------------------------------------------------------------------- the log files


class _Formatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")


class SweepLogs:
    """The sweep's log folder while a session runs: Ray's and MLflow's loggers into driver.log.

    Entered around a `mixsweep run` / `resume` session; `__exit__` puts every logger back as it was (a test
    that runs sessions in-process sees no change). Ray's loggers lose their terminal handler (Ray writes its
    start-up, auth and Tune lines at INFO/WARNING; a failure of ours is reported by the driver with a pointer
    here); MLflow keeps its warnings on the terminal and gives its INFO lines to the file.
    """

    #: loggers whose terminal handlers are replaced by the file (they do not propagate to the root)
    QUIET = ("ray",)
    #: loggers that keep their terminal handlers at WARNING and give the file what is below
    MUTED = ("mlflow", "alembic")

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._saved: list[tuple[logging.Logger, list, bool, int]] = []
        self._levels: list[tuple[logging.Handler, int]] = []
        self._handler: logging.Handler | None = None

    @property
    def driver_log(self) -> Path:
        return self.folder / DRIVER_LOG

    @property
    def workers_log(self) -> Path:
        return self.folder / WORKERS_LOG

    def __enter__(self) -> SweepLogs:
        for module in ("ray", "mlflow"):  # each sets its loggers up when first imported: before they are rerouted
            with suppress(ImportError):
                importlib.import_module(module)
        self.folder.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.driver_log, encoding="utf-8", delay=False)
        handler.setFormatter(_Formatter())
        handler.setLevel(logging.DEBUG)
        self._handler = handler
        handler.stream.write(f"\n==== mixsweep driver pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
        handler.flush()
        for name in self.QUIET:
            logger = logging.getLogger(name)
            self._saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
            logger.handlers = [handler]
            logger.propagate = False
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)
        for name in self.MUTED:
            logger = logging.getLogger(name)
            self._saved.append((logger, list(logger.handlers), logger.propagate, logger.level))
            for old in logger.handlers:
                self._levels.append((old, old.level))
                old.setLevel(max(old.level, logging.WARNING))
            logger.addHandler(handler)
        return self

    def __exit__(self, *exc_info) -> None:
        for logger, handlers, propagate, level in reversed(self._saved):
            logger.handlers = handlers
            logger.propagate = propagate
            logger.setLevel(level)
        for handler, level in self._levels:
            handler.setLevel(level)
        self._saved, self._levels = [], []
        if self._handler is not None:
            self._handler.close()
            self._handler = None


# ----------------------------------------------------------------------------------- worker output


class WorkerOutput:
    """Ray's printer of the workers' output, replaced: every line into workers.log, ours on the terminal.

    `forward(pid, line)` gets the lines to show (`SHOWN`); the driver names their trial. Installed on Ray's
    stream dispatcher (`ray._private.ray_logging.global_worker_stdstream_dispatcher`, where `ray.init` put
    its printer "ray_print_logs"); when that private API is missing, Ray's printer stays and prints as before.
    """

    NAME = "mixsweep_worker_logs"

    def __init__(self, path: Path, forward: Callable[[Any, str], None] | None = None) -> None:
        self.path, self.forward = path, forward
        self._file = None
        self._lock = threading.Lock()
        self._dispatcher = None
        self._printer = None

    def install(self) -> bool:
        """Take over from Ray's printer; False when this Ray has none to take over (then nothing changed)."""
        try:  # a private API: if a Ray release moves it, Ray's printer stays (noisy, not broken)
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            printers = [pair for pair in list(dispatcher.handlers) if pair[0] == "ray_print_logs"]
        except Exception:  # noqa: BLE001
            logging.getLogger("ray").warning("mixsweep: Ray's worker-output printer not found; its output stays on "
                                             "the terminal")
            return False
        if not printers:
            return False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8", buffering=1)
        self._file.write(f"\n==== mixsweep driver pid {os.getpid()}, {time.strftime('%Y-%m-%d %H:%M:%S')} ====\n")
        self._dispatcher, self._printer = dispatcher, printers[0]
        dispatcher.remove_handler("ray_print_logs")
        dispatcher.add_handler(self.NAME, self.handle)
        return True

    def uninstall(self) -> None:
        """Back to Ray's printer (it prints whatever comes after), the file closed."""
        if self._dispatcher is not None:
            self._dispatcher.remove_handler(self.NAME)
            # only while Ray is still connected: `ray.shutdown` removed its printer, and the next `ray.init` in this
            # process adds a new one (putting the old one back would print every worker line twice)
            import ray

            if ray.is_initialized() and not any(pair[0] == "ray_print_logs" for pair in self._dispatcher.handlers):
                self._dispatcher.add_handler(*self._printer)
            self._dispatcher = None
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def handle(self, data: dict[str, Any]) -> None:
        """One batch of lines of one process (Ray's dict: pid, ip, is_err, lines, actor_name, task_name)."""
        pid = data.get("pid")
        lines = data.get("lines", [])
        if pid == "autoscaler":  # its periodic status report: Ray's printer too keeps only its events
            lines = _autoscaler_events(lines)
        who = data.get("actor_name") or data.get("task_name") or ""
        prefix = f"({who + ' ' if who else ''}pid={pid}{', ip=' + data['ip'] if data.get('ip') else ''})"
        stream = "err" if data.get("is_err") else "out"
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            if self._file is not None:
                for line in lines:
                    self._file.write(f"{stamp} {prefix} {stream}: {line}\n")
        if self.forward is None or pid in _RAY_SOURCES:
            return
        for line in lines:
            if SHOWN.match(line):
                with suppress(Exception):  # never break Ray's log thread over a display
                    self.forward(pid, line)


def _autoscaler_events(lines: list[str]) -> list[str]:
    """The events among the autoscaler's lines (node added, resources infeasible), as Ray's printer keeps them."""
    try:
        from ray._private.worker import filter_autoscaler_events

        return list(filter_autoscaler_events(lines))
    except Exception:  # noqa: BLE001 - without Ray's GCS client (or this private API): none
        return []


def ray_env() -> None:
    """The environment the driver sets before Ray and Tune start (each only where the user did not set it)."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # no experiment box, "View detailed results", TensorBoard hint
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # the JSON/CSV loggers are passed explicitly


__all__ = ["DRIVER_LOG", "PLAIN_ENV", "SHOWN", "WORKERS_LOG", "SweepLogs", "Terminal", "WorkerOutput",
           "ray_env", "terminal", "wants_live"]
