"""Per-epoch checkpoints: atomic, the last two kept, loadable with `torch.load(weights_only=True)`.

A checkpoint holds everything needed to continue bit-identically: model, optimizer, scheduler,
every RNG state (torch CPU and CUDA, the data and mixing generators), the number of
completed epochs, the best metric, the metrics history (so `metrics.jsonl` can be rewritten
with each epoch exactly once) and the device seconds spent so far. Files are written to a
temporary name and renamed, so a kill during a write never leaves a torn checkpoint behind.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from .files import atomic_write_bytes
from .trialdir import checkpoint_path, list_checkpoints

FORMAT = 1
KEEP = 2


class ForeignCheckpoint(RuntimeError):
    """The newest checkpoint of a folder was written by another run (its `run_hash` differs): never adopted."""


def save_checkpoint(folder: Path, epoch: int, state: dict[str, Any], keep: int = KEEP, *, run_hash: str = "") -> Path:
    """Save `state` as the checkpoint of `epoch` completed epochs of run `run_hash` (the run it belongs to, see
    `load_latest`); prune all but the newest `keep`."""
    path = checkpoint_path(folder, epoch)
    owner = {"run_hash": run_hash} if run_hash else {}
    atomic_write_bytes(path, lambda f: torch.save({"format": FORMAT, "epoch": epoch, **owner, **state}, f))
    for _, old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest(folder: Path, map_location: str | torch.device = "cpu", *, run_hash: str = "") -> dict[str, Any] | None:
    """The newest checkpoint that loads (weights_only=True), or None when there is none.

    A file that does not load (damaged, or refused by the safe loader) is reported on stderr and
    the previous one is tried; temporary files left by a kill during a write are removed.
    `run_hash`: the run that resumes; a checkpoint that records another run (copied from another trial's
    folder) raises ForeignCheckpoint naming both and the file. Checkpoints from before the run was
    recorded carry none and load as they are.
    """
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
            theirs = state.get("run_hash")
            if run_hash and theirs and theirs != run_hash:
                raise ForeignCheckpoint(f"checkpoint {path} was written by run {theirs}, not by this run {run_hash}: "
                                        "refusing to continue another trial's training; remove the file (or move "
                                        "it back to its own trial's folder)")
            return state
    return None


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
