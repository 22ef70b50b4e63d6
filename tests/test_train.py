"""The training loop: files, metrics, resume (incl. SIGKILL, bit-identical on CPU), errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from trainables.config import ConfigError
from trainables.data import build_dataset, make_loader
from trainables.models import build_model
from trainables.train import TrainingDiverged, train
from trainables.trialdir import TrialDir, list_checkpoints

TINY = {
    "dataset": "synthetic_salient", "data.train_size": 192, "data.test_size": 96, "model": "small_cnn",
    "model.width": 8, "batch_size": 64, "epochs": 2, "eval.robust_size": 64, "workers": 0, "device": "cpu",
    "mix.preset": "saliencymix", "mix.prob": 1.0,
}
EPOCH_KEYS = {"epoch", "train/loss", "test/loss", "test/top1_err", "test/top5_err", "lr", "time/epoch_s",
              "time/mix_s", "throughput/img_s"}
FINAL_KEYS = {"final/top1_err", "final/top5_err", "best/top1_err", "robust/fgsm_top1_err", "robust/noise_top1_err",
              "cost/device_s"}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _test_error(checkpoint: Path) -> float:
    """Top-1 error (%) of a TINY checkpoint's model on the whole test split, from its argmax predictions."""
    data = build_dataset(TINY["dataset"], train_size=TINY["data.train_size"], test_size=TINY["data.test_size"])
    model = build_model(TINY["model"], num_classes=data.num_classes, image_size=data.image_size, mean=data.mean,
                        std=data.std, width=TINY["model.width"])
    model.load_state_dict(torch.load(checkpoint, weights_only=True)["model"])
    model.eval()
    wrong = seen = 0
    with torch.no_grad():
        for images, labels in make_loader(data.test, 32, train=False):
            wrong += int((model(images).argmax(1) != labels).sum())
            seen += len(labels)
    assert seen == TINY["data.test_size"]
    return 100.0 * wrong / seen


def test_train_writes_everything(tmp_path):
    calls = []
    final = train(TINY, workdir=tmp_path, on_epoch=lambda m, p, done: calls.append((m, p, done)), verbose=False)
    assert set(final) >= FINAL_KEYS
    assert final["best/top1_err"] <= final["final/top1_err"]
    lines = TrialDir(tmp_path).read_metrics()
    assert [m["epoch"] for m in lines] == [1, 2] and all(set(m) >= EPOCH_KEYS for m in lines)
    # the logged error is the saved model's: its own predictions on every test image, counted here
    assert final["final/top1_err"] == pytest.approx(_test_error(tmp_path / "checkpoints" / "epoch_0002.pt"), abs=1e-9)
    assert lines[-1]["test/top1_err"] == final["final/top1_err"]
    assert final["best/top1_err"] == min(m["test/top1_err"] for m in lines)
    assert json.loads((tmp_path / "final.json").read_text()) == final
    cfg = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert cfg["mix.saliency"] == "fine_grained" and cfg["optim.lr"] == 0.05 and cfg["model.width"] == 8
    assert [e for e, _ in list_checkpoints(tmp_path / "checkpoints")] == [1, 2]
    assert (tmp_path / "preview.png").stat().st_size > 10_000
    assert [done for _, _, done in calls] == [False, True]
    assert set(calls[-1][0]) >= FINAL_KEYS and calls[-1][1].exists()
    state = torch.load(calls[-1][1], weights_only=True)  # safe loading works
    assert state["epoch"] == 2 and len(state["history"]) == 2
    # a finished workdir returns its result at once, without training
    t0 = time.perf_counter()
    assert train(TINY, workdir=tmp_path, verbose=False) == final
    assert time.perf_counter() - t0 < 5


def test_final_json_is_there_when_the_last_epoch_is_reported(tmp_path):
    """The last report's checkpoint carries final.json to Ray: it is written before that report, not after."""
    seen = []
    train({**TINY, "eval.robust_size": 0}, workdir=tmp_path, verbose=False,
          on_epoch=lambda m, p, done: seen.append((done, (tmp_path / "final.json").exists())))
    assert seen == [(False, False), (True, True)]


class _Stop(Exception):
    pass


def _stop(metrics, path, finished):
    raise _Stop


def test_old_checkpoints_with_a_scaler_entry_resume_bit_identically(tmp_path):
    """Earlier versions saved a (disabled) GradScaler's state in every checkpoint; they resume, ignoring it."""
    cfg = {**TINY, "eval.robust_size": 0}
    ref = train(cfg, workdir=tmp_path / "ref", verbose=False)
    with pytest.raises(_Stop):  # stopped after its first epoch
        train(cfg, workdir=tmp_path / "old", on_epoch=_stop, verbose=False)
    path = tmp_path / "old" / "checkpoints" / "epoch_0001.pt"
    ckpt = torch.load(path, weights_only=True)
    assert "scaler" not in ckpt
    torch.save({**ckpt, "scaler": torch.amp.GradScaler("cpu", enabled=False).state_dict()}, path)
    again = train(cfg, workdir=tmp_path / "old", verbose=False)
    a, b = (torch.load(tmp_path / d / "checkpoints" / "epoch_0002.pt", weights_only=True) for d in ("ref", "old"))
    assert "scaler" not in b
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert {k: v for k, v in again.items() if k != "cost/device_s"} == \
        {k: v for k, v in ref.items() if k != "cost/device_s"}


def test_keeps_only_the_last_two_checkpoints(tmp_path):
    train({**TINY, "epochs": 4, "eval.robust_size": 0}, workdir=tmp_path, verbose=False)
    assert [e for e, _ in list_checkpoints(tmp_path / "checkpoints")] == [3, 4]
    assert len(TrialDir(tmp_path).read_metrics()) == 4


def _cli(workdir: Path, *sets: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "trainables.train", "--workdir", str(workdir), "--quiet"]
    for key, value in {**TINY, "epochs": 4}.items():
        args += ["--set", f"{key}={value}"]
    for s in sets:
        args += ["--set", s]
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [1, 3])
def test_sigkill_and_resume_is_bit_identical(tmp_path, kill_after):
    ref_dir, dir_ = tmp_path / "ref", tmp_path / "killed"
    ref = _cli(ref_dir)
    assert ref.wait(timeout=300) == 0, ref.stderr.read()
    proc = _cli(dir_)
    ckpt = dir_ / "checkpoints" / f"epoch_{kill_after:04d}.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (dir_ / "final.json").exists(), "killed too late to test anything"
    again = _cli(dir_)
    assert again.wait(timeout=300) == 0, again.stderr.read()
    a = torch.load(ref_dir / "checkpoints" / "epoch_0004.pt", weights_only=True)
    b = torch.load(dir_ / "checkpoints" / "epoch_0004.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith(("time/", "throughput/"))} for m in ms]  # noqa: E731
    assert strip(TrialDir(ref_dir).read_metrics()) == strip(TrialDir(dir_).read_metrics())  # every epoch exactly once
    fa, fb = (json.loads((d / "final.json").read_text()) for d in (ref_dir, dir_))
    drop_cost = lambda f: {k: v for k, v in f.items() if k != "cost/device_s"}  # noqa: E731
    assert drop_cost(fa) == drop_cost(fb)


def test_divergence_names_epoch_and_step(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"non-finite loss at epoch 1, step \d+"):
        cfg = {k: v for k, v in TINY.items() if k != "mix.prob"}
        train({**cfg, "optim.lr": 1e30, "mix.preset": "none"}, workdir=tmp_path, verbose=False)
    assert not (tmp_path / "final.json").exists()


def test_workdir_belongs_to_one_config(tmp_path):
    train({**TINY, "epochs": 1, "eval.robust_size": 0}, workdir=tmp_path, verbose=False)
    with pytest.raises(ConfigError, match=r"different config \(differs in: mix.box_fit, mix.lam, mix.preset"):
        train({**TINY, "epochs": 1, "eval.robust_size": 0, "mix.preset": "cutmix"}, workdir=tmp_path)


@pytest.mark.parametrize("preset", ["mixup", "guided_sr", "guided_ap", "grafting"])
def test_presets_and_losses_train(tmp_path, preset):
    cfg = {**TINY, "epochs": 1, "mix.preset": preset, "loss": "bce_softmax", "eval.robust_size": 0,
           "label_smoothing": 0.1}
    final = train(cfg, workdir=tmp_path, verbose=False)
    assert 0 <= final["final/top1_err"] <= 100 and "robust/fgsm_top1_err" not in final


def test_cli_errors_exit_2_without_traceback(tmp_path):
    bad = subprocess.run([sys.executable, "-m", "trainables.train", "--workdir", str(tmp_path), "--set", "optim.lrr=1"],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "optim.lrr: unknown key (did you mean 'optim.lr'?)" in bad.stderr
    assert "Traceback" not in bad.stderr
    cfg = tmp_path / "c.yaml"
    cfg.write_text("epochs: [1\n")
    bad = subprocess.run([sys.executable, "-m", "trainables.train", "--workdir", str(tmp_path), "--config", str(cfg)],
                         env=ENV, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "not valid YAML" in bad.stderr and "line 1" in bad.stderr


def test_train_cli_reads_set_values_as_yaml(tmp_path, monkeypatch, capsys):
    """`python -m trainables.train --set` uses the one `--set` reader: a quoted value stays a string, `--set`
    wins over --config, and a malformed item is exit 2 with one message."""
    import trainables.train as entry

    seen = {}
    monkeypatch.setattr(entry, "train", lambda config, **kw: seen.update(config) or {"final/top1_err": 1.0})
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim: {lr: 0.5}\nepochs: 9\n")
    args = ["--workdir", str(tmp_path / "w"), "--config", str(cfg), "--set", 'data.root="123"', "--set", "epochs=2",
            "--set", "mix.lam=beta(1,1)", "--set", "sched.milestones=[1, 2]"]
    assert entry.main(args) == 0
    assert seen == {"optim.lr": 0.5, "epochs": 2, "data.root": "123", "mix.lam": "beta(1,1)",
                    "sched.milestones": [1, 2]}
    capsys.readouterr()
    assert entry.main(["--workdir", str(tmp_path / "w"), "--set", "epochs"]) == 2
    assert capsys.readouterr().err == "error: --set 'epochs': expected KEY=VALUE, e.g. --set optim.lr=0.1\n"


def test_trial_identity_ignores_where_data_lives_but_not_which_folder_dataset():
    from trainables.config import trial_hashes, validate_config

    def run_hash(**cfg):
        return trial_hashes(validate_config({"model": "small_cnn", **cfg}))[1]

    # moving a sweep to a machine whose CIFAR copy lives elsewhere keeps its finished trials
    assert run_hash(dataset="cifar10", **{"data.root": "/a"}) == run_hash(dataset="cifar10", **{"data.root": "/b"})
    # two image folders are two datasets: never one trial (one workdir, one MLflow run)
    assert run_hash(dataset="imagefolder", **{"data.root": "/a"}) != \
        run_hash(dataset="imagefolder", **{"data.root": "/b"})
