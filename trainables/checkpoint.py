"""Per-epoch checkpoints: atomic, the last two kept, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to continue bit-identically: model, optimizer, scheduler,
AMP scaler, every RNG state (torch CPU and CUDA, the data and mixing generators), the number of
completed epochs, the best metric, the metrics history (so `metrics.jsonl` can be rewritten
with each epoch exactly once) and the device seconds spent so far. Files are written to a
temporary name and renamed, so a kill during a write never leaves a torn checkpoint behind.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
KEEP = 2
_NAME = re.compile(r"^epoch_(\d{4,})\.pt$")


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch_{epoch:04d}.pt"


#: written into a trial's workdir when the trial failed for good (diverged, or cannot start)
FAILED_MARKER = "failed.json"
CONFIG_FILE = "config.yaml"
#: a search trial's config as the search algorithm sampled it (config.yaml is the resolved one)
SAMPLED_CONFIG = "sampled.json"
#: the workdir files that travel with every checkpoint reported to Ray (and back on a restore)
RESULT_FILES = ("final.json", CONFIG_FILE, "metrics.jsonl")


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


#: errno values of a full disk or an exhausted quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException | None) -> bool:
    """Was `exc` (or anything in its chain of causes) caused by a full disk? ENOSPC / EDQUOT, or sqlite's
    SQLITE_FULL (an MLflow sqlite store on a full disk)."""
    import sqlite3

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return True
        if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or disk_full(getattr(exc, "orig", None)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _no_space_left(folder: Path) -> bool:
    try:
        return os.statvfs(folder).f_bavail == 0
    except OSError:
        return False


def _umask() -> int:
    """The process umask, read without changing it (Linux); elsewhere set and restored at once."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1], 8) for line in status if line.startswith("Umask:"))
    except (OSError, StopIteration, IndexError, ValueError):
        old = os.umask(0)
        os.umask(old)
        return old


def atomic_write_bytes(path: Path, write) -> None:
    """Write via `write(fileobj)` to a temporary file in the same folder, fsync, then rename.

    The file gets the mode `open()` would give it (0666 minus the umask), not mkstemp's 0600: shared
    storage must stay readable by the team. A write that fails because the file system is full raises
    OSError(ENOSPC) naming `path`, whatever the writer raised (torch.save reports it as a RuntimeError).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        full = isinstance(exc, Exception) and not disk_full(exc) and _no_space_left(path.parent)
        Path(tmp).unlink(missing_ok=True)
        if full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def save_checkpoint(folder: Path, epoch: int, state: dict[str, Any], keep: int = KEEP) -> Path:
    """Save `state` as the checkpoint of `epoch` completed epochs; prune all but the newest `keep`."""
    path = checkpoint_path(folder, epoch)
    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, "epoch": epoch, **state}, f))
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(folder: Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint that loads (weights_only=True), or None when there is none.

    A file that does not load (damaged, or refused by the safe loader) is reported on stderr and
    the previous one is tried; temporary files left by a kill during a write are removed.
    """
    import sys

    for stale in folder.glob(".epoch_*.pt.*") if folder.is_dir() else []:
        stale.unlink(missing_ok=True)
    for _, path in reversed(list_checkpoints(folder)):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - fall back to the previous checkpoint, loudly
            print(f"mixsweep: checkpoint {path} does not load ({type(exc).__name__}: {str(exc)[:200]}); "
                  "trying the previous one", file=sys.stderr, flush=True)
            continue
        if isinstance(state, dict) and state.get("format") == FORMAT:
            return state
    return None


def read_metrics(workdir: Path) -> list[dict[str, Any]]:
    """The epoch lines of `workdir/metrics.jsonl` (empty when there is none).

    A line that does not parse (a torn write: a crash, a full disk) is left out and reported on
    stderr with the file's path; the trial rewrites the file from its checkpoint when it runs again.
    """
    import json
    import sys

    path = workdir / "metrics.jsonl"
    try:
        text = path.read_text(errors="replace")
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
        print(f"mixsweep: {path}: line(s) {', '.join(map(str, bad))} cannot be read (cut by a crash or a full "
              "disk?); skipped", file=sys.stderr, flush=True)
    return lines


def rng_state(generators: dict[str, torch.Generator]) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    state["cuda"] = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    state.update({name: g.get_state() for name, g in generators.items()})
    return state


def restore_rng(state: dict[str, Any], generators: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, g in generators.items():
        g.set_state(state[name])
