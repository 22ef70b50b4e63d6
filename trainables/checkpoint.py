"""Per-epoch checkpoints: atomic, the last two kept, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to continue bit-identically: model, optimizer, scheduler,
AMP scaler, every RNG state (torch CPU and CUDA, the data and mixing generators), the number of
completed epochs, the best metric, the metrics history (so `metrics.jsonl` can be rewritten
with each epoch exactly once) and the device seconds spent so far. Files are written to a
temporary name and renamed, so a kill during a write never leaves a torn checkpoint behind.
"""

from __future__ import annotations

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


#: written into a trial's workdir when the trial diverges
FAILED_MARKER = "failed.json"
#: a search trial's config as the search algorithm sampled it (config.yaml is the resolved one)
SAMPLED_CONFIG = "sampled.json"
#: the workdir files that travel with every checkpoint reported to Ray (and back on a restore)
RESULT_FILES = ("final.json", "config.yaml", "metrics.jsonl")


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, path) of the checkpoints in `folder`, oldest first."""
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def atomic_write_bytes(path: Path, write) -> None:
    """Write via `write(fileobj)` to a temporary file in the same folder, fsync, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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
    """The epoch lines of `workdir/metrics.jsonl` (empty when there is none)."""
    import json

    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
