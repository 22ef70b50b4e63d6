"""The Ray Tune trial: `run_trial(config)` wraps `train()`.

`config` = {"config": <flat training config>, "meta": `TrialMeta.to_dict()`} (optionally wrapped as
{"trial": {...}}, which is how the orchestrator grids over explicit trials); the meta
(`trainables.meta`) holds the sweep name, run/config hashes, the trial's persistent `workdir`, the
MLflow tracking URI, experiment id and sweep run id. Only `ray.tune.*` APIs are used inside the trial (Ray 2.60,
Train V2: `tune.report`, `tune.get_checkpoint`, `tune.get_context`, `tune.Checkpoint`).

Where a trial continues from, newest first: its persistent workdir (`<storage>/<sweep>/trials/
<run_hash>`, which outlives driver crashes and Ray's experiment-state snapshots), then the Ray
checkpoint Tune hands back (a lost node, or storage that is not a shared file system). The
trial is idempotent: a finished workdir or checkpoint re-reports its final result and returns.
A trial that fails for a reason a retry cannot fix (it diverged; its config, data files or model
are wrong) is a result, not an infrastructure failure: it writes `failed.json`, reports the reason
(the driver prints it), is marked FAILED in MLflow, and returns without raising, so Ray does not
retry it. Anything else raises, and Ray retries it from its checkpoint.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, resolve_trial
from .files import disk_full
from .loop import pick_device
from .meta import TrialMeta
from .metrics import WORST
from .runtime import keep_freed_memory
from .tracking import TrialTracker, apply_http_defaults
from .train import SetupError, TrainingDiverged, train
from .trialdir import TrialDir, list_checkpoints


def _restore_from_ray(checkpoint, trial_dir: TrialDir) -> None:
    """Copy Ray's checkpoint into the workdir unless the workdir already has a newer one."""
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        theirs = list_checkpoints(folder)
        mine = trial_dir.list_checkpoints()
        if theirs and (not mine or mine[-1][0] < theirs[-1][0]):
            trial_dir.checkpoints.mkdir(parents=True, exist_ok=True)
            shutil.copy2(theirs[-1][1], trial_dir.checkpoints / theirs[-1][1].name)
        for name in TrialDir.RESULT_FILES:
            if (folder / name).exists() and not (trial_dir.folder / name).exists():
                shutil.copy2(folder / name, trial_dir.folder / name)


def _report(metrics: dict[str, Any], checkpoint_file: Path | None, trial_dir: TrialDir | None) -> None:
    from ray import tune

    clean = {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}
    if checkpoint_file is None or not checkpoint_file.exists():
        tune.report(clean)
        return
    with tempfile.TemporaryDirectory(prefix="mixsweep-ckpt-") as tmp:
        shutil.copy2(checkpoint_file, Path(tmp) / checkpoint_file.name)
        for name in TrialDir.RESULT_FILES:
            if trial_dir is not None and (trial_dir.folder / name).exists():
                shutil.copy2(trial_dir.folder / name, Path(tmp) / name)
        tune.report(clean, checkpoint=tune.Checkpoint.from_directory(tmp))


def _backfill(tracker: TrialTracker, trial_dir: TrialDir, before: int | None = None) -> None:
    """Log epochs present in metrics.jsonl but missing from MLflow (e.g. killed between the two; MLflow's own
    last step says which: an epoch is logged once)."""
    if tracker.active:
        for m in trial_dir.read_metrics():
            if before is None or int(m["epoch"]) < before:
                tracker.log_epoch(int(m["epoch"]), m)


def _fail(trial_dir: TrialDir | None, tracker: TrialTracker | None, error: str, epoch: int, node_id: str,
          run_hash: str) -> None:
    """End the trial as failed for good: failed.json, MLflow FAILED, one report with the reason (no retry)."""
    if trial_dir is not None:
        trial_dir.write_failed(error, epoch)
    if tracker is not None:
        tracker.finish("FAILED", error)
    _report({**WORST, "failed": 1, "error": error, "epoch": epoch, "node_id": node_id, "run_hash": run_hash},
            None, trial_dir)


def held_device(kind: str, gpu_ids: list | None = None) -> str:
    """What a trial holds, as the driver's progress shows it: "cpu", or "gpu 3" (Ray's GPU ids: the machine's)."""
    if kind != "cuda":
        return kind
    ids = ",".join(str(i) for i in gpu_ids or [])
    return f"gpu {ids}" if ids else "gpu"


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable for one mixsweep trial."""
    import ray
    from ray import tune

    keep_freed_memory()  # this is a trial process of ours
    apply_http_defaults()  # a worker on another node does not inherit the driver's environment
    config = config.get("trial", config)  # the orchestrator grids over whole {"config", "meta"} dicts
    meta = TrialMeta.from_dict(config.get("meta"))  # built by the driver; never changed here
    ctx = tune.get_context()
    required = ctx.get_trial_resources().required_resources
    raw = dict(config["config"])
    if not required.get("GPU") and raw.get("device", "auto") == "auto":
        raw["device"] = "cpu"  # Ray reserved no GPU for this trial: it must not use one unaccounted
    cpus = required.get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    trial_id = ctx.get_trial_id()
    node_id = ray.get_runtime_context().get_node_id()
    try:
        trial = resolve_trial(raw, name=meta.run_name or None)
    except ConfigError as exc:  # the driver checked it; a worker with other registries may still refuse it
        return _fail(meta.trial_dir, None, f"ConfigError: {exc}", 0, node_id, meta.run_hash)
    cfg = trial.cfg
    if not meta.run_hash:  # sampled by a search algorithm: identity known only now
        meta = meta.identified(config_hash=trial.config_hash, run_hash=trial.run_hash,
                               run_name=meta.run_name or trial.name)
        if meta.trials_dir:
            # the params as sampled, so that a later launch of the search can run this trial again
            meta.trial_dir.write_sampled(config["config"])
    trial_dir = meta.trial_dir or TrialDir(Path.cwd() / "work")
    trial_dir.folder.mkdir(parents=True, exist_ok=True)
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        _restore_from_ray(checkpoint, trial_dir)

    kind = pick_device(cfg.device).type
    tracker = TrialTracker(meta, cfg.flat(), trial_id=trial_id, node_id=node_id, device=kind)
    try:
        device = held_device(kind, ray.get_gpu_ids() if kind == "cuda" else None)
    except Exception:  # noqa: BLE001 - display only
        device = kind
    logged_before = tracker.last_step
    reported = []

    def on_epoch(metrics: dict[str, float], path: Path, finished: bool) -> None:
        # the epochs before this one first: metrics.jsonl is complete only now (training rewrites it from the
        # checkpoint it resumed, which may hold an epoch whose metrics line a full disk or a kill cut off)
        _backfill(tracker, trial_dir, before=int(metrics["epoch"]))  # this one is logged with what it has here
        tracker.log_epoch(int(metrics["epoch"]), metrics)
        if finished:
            tracker.log_artifacts(*trial_dir.artifacts)
        _report({**metrics, "node_id": node_id, "run_hash": meta.run_hash, "device": device}, path, trial_dir)
        reported.append(metrics["epoch"])

    try:
        final = train(cfg, workdir=trial_dir.folder, on_epoch=on_epoch, owned=meta.trial_dir is not None)
    except TrainingDiverged as exc:
        return _fail(trial_dir, tracker, str(exc), exc.epoch, node_id, meta.run_hash)
    except (SetupError, ConfigError) as exc:
        return _fail(trial_dir, tracker, f"cannot start: {exc}", 0, node_id, meta.run_hash)
    except (KeyboardInterrupt, SystemExit):  # Tune stopped the trial (sweep stopped, ASHA, preemption)
        tracker.finish("KILLED", "stopped by Ray Tune; the trial keeps its last checkpoint")
        raise
    except Exception as exc:
        if disk_full(exc):  # a retry would fail the same way: the driver stops the sweep and says where
            where = exc.filename if isinstance(exc, OSError) and exc.filename else trial_dir.folder
            _report({"fatal": f"no space left on {where}", "node_id": node_id, "run_hash": meta.run_hash}, None,
                    trial_dir)
            return
        tracker.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    if not reported:  # already finished: re-report the final result and its checkpoint
        _backfill(tracker, trial_dir)  # every epoch line, as rewritten from the last checkpoint
        last = trial_dir.read_metrics()[-1]
        if logged_before < last["epoch"]:  # MLflow has not seen the last epoch's final metrics yet
            tracker.log_final(int(last["epoch"]), final)
        tracker.log_artifacts(*trial_dir.artifacts)
        ckpts = trial_dir.list_checkpoints()
        _report({**last, **final, "node_id": node_id, "run_hash": meta.run_hash, "device": device},
                ckpts[-1][1] if ckpts else None, trial_dir)
    tracker.finish("FINISHED")
