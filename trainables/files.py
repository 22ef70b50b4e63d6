"""Files that survive a kill: atomic writes, and telling a full disk from other failures.

Torch-free, so the driver (`orchestrator`) and a trial share it without loading torch. A file
is written to a temporary name in its folder, fsynced and renamed: a kill during a write never
leaves a torn file behind, only a stray temporary one that the next write does not mind.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

#: errno values of a full disk or an exhausted quota
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full(exc: BaseException | None) -> bool:
    """Was `exc` (or anything in its chain of causes) caused by a full disk? ENOSPC / EDQUOT, or sqlite's
    SQLITE_FULL (an MLflow sqlite store on a full disk)."""
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
