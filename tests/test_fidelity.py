"""Label fidelity: the measurement on hand-built cases, the dataset hook, the CLI and the per-epoch metrics."""

from __future__ import annotations

import csv
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from orchestrator.cli import main
from orchestrator.fidelity import cluster_mean_ci, parse_sets, split_values
from trainables.data import build_dataset, object_sample
from trainables.data.synthetic import generate
from trainables.mixing import MixInfo
from trainables.mixing.fidelity import always_mixing, label_fidelity, measure_fidelity, moved_source_masks
from trainables.mixing.masks import box_mask, paste_boxes
from trainables.train import train

H = W = 8


def info_of(applied, partner, lam, boxes, source_boxes, source_weight) -> MixInfo:
    """A MixInfo by keyword (fields the measurement does not read are None)."""
    return MixInfo(applied=applied, partner=partner, lam=lam, boxes=boxes, source_boxes=source_boxes,
                   source_weight=source_weight, saliency=None, source_saliency=None)


def square(y: int, x: int, side: int = 2) -> torch.Tensor:
    m = torch.zeros(H, W)
    m[y:y + side, x:x + side] = 1.0
    return m


def box_info(partner, lam, boxes, source_boxes=None) -> MixInfo:
    boxes = torch.tensor(boxes)
    source_boxes = boxes if source_boxes is None else torch.tensor(source_boxes)
    sw = box_mask(boxes, (H, W)).float()
    return info_of(True, torch.tensor(partner), torch.tensor(lam), boxes, source_boxes, sw)


def blend_info(partner, lam) -> MixInfo:
    lam = torch.tensor(lam)
    zeros = torch.zeros(len(partner), 4, dtype=torch.long)
    sw = (1 - lam)[:, None, None].expand(len(partner), H, W)
    return info_of(True, torch.tensor(partner), lam, zeros, zeros, sw)


# -- the measurement on cases with known answers ------------------------------------------------


def test_box_that_pastes_the_whole_source_object():
    # target 0: object at (0,0); source 1: object at (4,4); the box pastes exactly the source object
    masks = torch.stack([square(0, 0), square(4, 4)])
    labels = torch.tensor([0, 1])
    info = box_info([1, 0], [1 - 4 / 64, 1 - 4 / 64], [[4, 4, 6, 6], [4, 4, 6, 6]])
    fid = label_fidelity(masks, labels, info)
    # sample 0: 4 target + 4 source pixels visible -> e = (1/2, 1/2); label (15/16, 1/16)
    assert fid.tv[0].item() == pytest.approx(0.5 - 1 / 16)
    assert fid.target_visible[0].item() == 4 and fid.source_visible[0].item() == 4
    # sample 1: the box covers its own object with the source's background (its object is at (0,0)):
    # no object visible at all
    assert bool(fid.no_object[1]) and math.isnan(fid.tv[1].item())
    assert not bool(fid.empty[0]) and not bool(fid.empty[1])  # 1 - lam = 1/16 < 0.1: not an empty label
    assert fid.source_share[0].item() == pytest.approx(4 / 64)
    summary = fid.summary()
    assert summary["label_tv"] == pytest.approx(0.4375) and summary["no_object_rate"] == 0.5


def test_empty_box_makes_an_empty_label():
    masks = torch.stack([square(0, 0), square(4, 4)])
    labels = torch.tensor([0, 1])
    # a 4x4 box (lam = 0.75) at x 0..4, y 4..8: neither the source object (x 4..6) nor the target's
    info = box_info([1, 0], [0.75, 0.75], [[0, 4, 4, 8], [0, 4, 4, 8]])
    fid = label_fidelity(masks, labels, info)
    assert bool(fid.empty[0]) and fid.source_visible[0].item() == 0
    assert fid.tv[0].item() == pytest.approx(0.25)  # e = (1, 0), label (0.75, 0.25)
    # sample 1: the source (object at (0,0)) is not in the box either, its own object at (4,4) is visible
    assert bool(fid.empty[1]) and fid.tv[1].item() == pytest.approx(0.25)


def test_blend_tv_is_lam_against_visible_share():
    # Mixup at lam = 0.3: the target object counts with 0.3, the source's with 0.7
    masks = torch.stack([square(0, 0), torch.zeros(H, W)])
    masks[1, 2:5, 2:6] = 1.0  # 12 source pixels against 4 target pixels
    labels = torch.tensor([3, 5])
    fid = label_fidelity(masks, labels, blend_info([1, 0], [0.3, 0.3]))
    share_t = 4 * 0.3 / (4 * 0.3 + 12 * 0.7)
    assert fid.tv[0].item() == pytest.approx(abs(0.3 - share_t), abs=1e-6)
    # equal object areas: the evidence follows lam exactly
    same_area = torch.stack([square(0, 0), square(4, 4)])
    assert label_fidelity(same_area, labels, blend_info([1, 0], [0.3, 0.3])).tv.abs().max().item() < 1e-6
    assert not fid.empty.any() and fid.source_share[0].item() == pytest.approx(0.7)


def test_tv_equals_half_l1_of_label_minus_evidence():
    torch.manual_seed(0)
    masks = torch.rand(6, H, W)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])
    partner = torch.tensor([1, 2, 0, 4, 5, 3])
    lam = torch.rand(6)
    sw = torch.rand(6, H, W)
    zeros = torch.zeros(6, 4, dtype=torch.long)
    fid = label_fidelity(masks, labels, info_of(True, partner, lam, zeros, zeros, sw))
    eye = torch.eye(3, dtype=torch.float64)
    v_t = (masks * (1 - sw)).sum((1, 2)).double()
    v_s = (masks[partner] * sw).sum((1, 2)).double()
    e = (v_t[:, None] * eye[labels] + v_s[:, None] * eye[labels[partner]]) / (v_t + v_s)[:, None]
    y = lam.double()[:, None] * eye[labels] + (1 - lam.double())[:, None] * eye[labels[partner]]
    assert torch.allclose(fid.tv.double(), 0.5 * (y - e).abs().sum(1), atol=1e-6)


def test_off_place_box_moves_the_source_mask():
    masks = torch.stack([square(0, 0), square(4, 4)])
    labels = torch.tensor([0, 1])
    # cut the source object's box (4,4)-(6,6) and paste it at x 0..2, y 6..8 in the target
    info = box_info([1, 0], [1 - 4 / 64] * 2, [[0, 6, 2, 8], [0, 6, 2, 8]], [[4, 4, 6, 6], [4, 4, 6, 6]])
    moved = moved_source_masks(masks, info.partner, info.source_boxes, info.boxes)
    assert torch.equal(moved[0] * info.source_weight[0], square(6, 0))
    fid = label_fidelity(masks, labels, info)
    assert fid.source_visible[0].item() == 4 and fid.tv[0].item() == pytest.approx(0.5 - 1 / 16)
    # the same boxes read as "in place" would miss the source object entirely
    in_place = label_fidelity(masks, labels, replace(info, source_boxes=info.boxes))
    assert in_place.source_visible[0].item() == 0


def test_same_class_pair_and_unmixed_batch():
    masks = torch.stack([square(0, 0), square(4, 4)])
    labels = torch.tensor([7, 7])
    info = box_info([1, 0], [0.75, 0.75], [[0, 4, 4, 8], [0, 4, 4, 8]])  # the empty box of above
    fid = label_fidelity(masks, labels, info)
    # the source weight lands on class 7, whose (target) object is visible: no empty label, TV 0
    assert fid.tv.tolist() == [0.0, 0.0] and not fid.empty.any()
    no_box = torch.zeros(2, 4, dtype=torch.long)
    unmixed = info_of(False, torch.arange(2), torch.ones(2), no_box, no_box, None)
    fid = label_fidelity(masks, torch.tensor([0, 1]), unmixed)
    assert fid.tv.tolist() == [0.0, 0.0] and not fid.empty.any() and fid.source_share.tolist() == [0.0, 0.0]


def test_bad_inputs_raise():
    info = blend_info([1, 0], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"masks must be \(B,H,W\)"):
        label_fidelity(torch.zeros(2, 1, H, W), torch.tensor([0, 1]), info)
    with pytest.raises(ValueError, match=r"labels must be integer"):
        label_fidelity(torch.zeros(2, H, W), torch.tensor([0.0, 1.0]), info)


# -- against the real mixer and dataset ----------------------------------------------------------


@pytest.fixture(scope="module")
def sample():
    images, labels, masks = generate(range(64), seed=1)
    return images.float() / 255, labels, masks


@pytest.mark.parametrize("selection", ["salient_to_salient", "nonsalient_to_salient", "salient_to_corresponding"])
def test_moved_mask_matches_how_the_mixer_moves_pixels(sample, selection):
    images, labels, masks = sample
    mixer = always_mixing({"preset": "saliencymix", "selection": selection})
    out = mixer(images, labels, num_classes=10, generator=torch.Generator().manual_seed(0))
    info = out.info
    pasted, _ = paste_boxes(masks[:, None], info.partner, info.source_boxes, info.boxes,
                            aligned=bool(torch.equal(info.boxes, info.source_boxes)))
    moved = moved_source_masks(masks, info.partner, info.source_boxes, info.boxes)
    inside = info.source_weight > 0
    assert torch.equal(pasted[:, 0][inside], moved[inside])
    # and the mixed image's pixels in the box are the moved source's pixels
    src_img = torch.stack([moved_source_masks(images[:, c], info.partner, info.source_boxes, info.boxes)
                           for c in range(3)], 1)
    assert torch.equal(out.images.permute(1, 0, 2, 3)[:, inside], src_img.permute(1, 0, 2, 3)[:, inside])


def test_object_masks_hook_and_sample():
    bundle = build_dataset("synthetic_salient", seed=1, train_size=40, test_size=8)
    images, labels, masks = bundle.object_masks("train", torch.arange(5))
    assert torch.equal(images, bundle.train.images[:5]) and torch.equal(labels, bundle.train.labels[:5])
    assert masks.shape == (5, 32, 32) and masks.dtype == torch.float32 and masks.min() >= 0 and masks.max() <= 1
    x, y, m = object_sample(bundle, 100, split="test")  # clipped to the split's size
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and x.max() <= 1
    assert torch.equal(y, bundle.test.labels)
    import pickle

    back = pickle.loads(pickle.dumps(bundle))
    assert torch.equal(back.object_masks("train", torch.arange(3))[2], masks[:3])
    with pytest.raises(ValueError, match="no object masks"):
        object_sample(replace(bundle, object_masks=None), 4)


def test_measure_fidelity_batches_and_determinism(sample):
    images, labels, masks = sample
    mixer = always_mixing({"preset": "cutmix"})
    assert mixer.config.prob == 1.0 and always_mixing({"preset": "none"}).config.mask is None

    def run():
        return measure_fidelity(mixer, images, labels, masks, num_classes=10, batch_size=16,
                                generator=torch.Generator().manual_seed(3))

    a, b = run(), run()
    assert len(a) == 64 and a.batch.tolist() == [i // 16 for i in range(64)]
    assert torch.equal(a.empty, b.empty) and torch.equal(a.tv.nan_to_num(-1), b.tv.nan_to_num(-1))
    s = a.summary()
    assert 0 <= s["label_tv"] <= 1 and 0 <= s["empty_label_rate"] <= 1 and s["n"] == 64


def test_cluster_bootstrap_and_value_splitting():
    import numpy as np

    values = np.r_[np.zeros(50), np.ones(50)]
    lo, hi = cluster_mean_ci(values, np.repeat([0, 1], 50), seed=0)  # two clusters, all-or-nothing
    assert lo == 0.0 and hi == 1.0
    lo, hi = cluster_mean_ci(values, np.arange(100) % 10, seed=0)  # every cluster half and half
    assert lo == hi == 0.5
    assert split_values("beta(1,1),uniform(0, 1)") == ["beta(1,1)", "uniform(0, 1)"]
    assert split_values("0,0.5") == [0, 0.5] and split_values("[a, b]") == ["a", "b"]
    # the one `--set` value reader: quoted values stay strings, quotes keep their commas
    assert split_values('"123",\'a,b\',1') == ["123", "a,b", 1] and split_values('["0", 1]') == ["0", 1]
    assert parse_sets(["data.clutter=0,2", "mix.selection=[random]"]) == {"data.clutter": [0, 2],
                                                                          "mix.selection": ["random"]}


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_table_png_and_csv(tmp_path, capsys):
    code = main(["fidelity", "--presets", "cutmix,saliencymix", "--set", "mix.lam=beta(1,1),uniform(0,1)",
                 "--pairs", "256", "--batch-size", "64", "--out", str(tmp_path / "fid")])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "mix.prob forced to 1.0" in out
    for row in ("cutmix / mix.lam=beta(1,1)", "cutmix / mix.lam=uniform(0,1)", "saliencymix / mix.lam=beta(1,1)"):
        assert row in out
    assert (tmp_path / "fid" / "fidelity.png").stat().st_size > 10_000
    with open(tmp_path / "fid" / "fidelity.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 and {r["n"] for r in rows} == {"256"}
    assert all(0 <= float(r["label_tv"]) <= 1 and float(r["empty_ci_low"]) <= float(r["empty_label_rate"])
               for r in rows)
    assert str((tmp_path / "fid" / "fidelity.png").resolve()) in out


def test_cli_default_presets_leave_out_gradient_ones(tmp_path, capsys):
    code = main(["fidelity", "--pairs", "64", "--batch-size", "32", "--png", str(tmp_path / "f.png"),
                 "--set", "data.clutter=0"])
    out = capsys.readouterr().out
    assert code == 0 and "left out guided_ap, grafting" in out and "| mixup" in out and "clutter=0" in out
    assert "| none" not in out and (tmp_path / "f.png").exists()


def test_cli_explicit_gradient_preset_uses_an_untrained_model(tmp_path, capsys):
    code = main(["fidelity", "--presets", "guided_ap", "--pairs", "32", "--batch-size", "16",
                 "--png", str(tmp_path / "f.png")])
    out = capsys.readouterr().out
    assert code == 0 and "untrained small_cnn" in out


@pytest.mark.parametrize(("args", "pattern"), [
    (["--presets", "cutmixx"], r"unknown preset 'cutmixx' \(did you mean 'cutmix'\?\)"),
    (["--set", "mix.selecton=random"], r"mix.selecton: unknown mixing key \(did you mean 'mix.selection'\?\)"),
    (["--set", "mix.selection=randon"], r"mix.selection: unknown value 'randon'"),
    (["--set", "mix.prob=0.5"], r"forced to 1.0"),
    (["--set", "optim.lr=0.1"], r"mix.\* and data.\* keys"),
    (["--set", "data.clutterr=1"], r"data.clutterr: unknown option"),
    (["--set", "data.clutter=9"], r"clutter must be in"),
    (["--set", "mix.lam=beta(0,1)"], r"mix.lam"),
    (["--presets", "mixup", "--set", "mix.selection=random"], r"preset mixup: .*does not apply"),
    (["--dataset", "cifar100", "--pairs", "4"], r"no object masks|not|missing"),
    (["--pairs", "1"], r"--pairs"),
    (["--set", "mix.selection=[random, salient_to_salient"],
     r"--set value '\[random, salient_to_salient' is not a valid list: expected ',' or '\]', but got '<stream end>' "
     r"\(column 28\)"),
    (["--set", "mix.selection=random,,salient_to_salient"], r"has an empty item; give values as v1,v2,\.\.\."),
    (["--set", "mix.selection"], r"--set 'mix.selection': expected KEY=VALUE or KEY=V1,V2,\.\.\."),
    (["--set", "data.clutter=0", "--set", "data.clutter=1"], r"--set data.clutter: given twice"),
])
def test_cli_errors_exit_2(tmp_path, capsys, args, pattern):
    import re

    code = main(["fidelity", *args, "--png", str(tmp_path / "f.png")])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mixsweep fidelity: error: ") and re.search(pattern, lines[0]), lines[0]
    assert not (tmp_path / "f.png").exists()


# -- per-epoch training metrics -------------------------------------------------------------------


TINY = {
    "dataset": "synthetic_salient", "data.train_size": 96, "data.test_size": 16, "model": "small_cnn",
    "model.width": 8, "batch_size": 64, "epochs": 2, "eval.robust_size": 0, "workers": 0, "device": "cpu",
    "mix.preset": "cutmix",
}
MIX_KEYS = {"mix/label_tv", "mix/empty_label_rate"}


def _lines(workdir: Path) -> list[dict]:
    from trainables.trialdir import TrialDir

    return TrialDir(workdir).read_metrics()


def test_epochs_log_label_fidelity_on_a_dataset_with_masks(tmp_path):
    train(TINY, workdir=tmp_path, verbose=False)
    lines = _lines(tmp_path)
    assert len(lines) == 2 and all(set(m) >= MIX_KEYS for m in lines)
    assert all(0 <= m["mix/label_tv"] <= 1 and 0 <= m["mix/empty_label_rate"] <= 1 for m in lines)


def test_no_fidelity_keys_without_masks(tmp_path):
    from PIL import Image

    for split, n in (("train", 4), ("val", 2)):
        for k, cls in enumerate(("a", "b")):
            for i in range(n):
                (tmp_path / "data" / split / cls).mkdir(parents=True, exist_ok=True)
                colour = (40 + 150 * k, 30 * i, 90)
                Image.new("RGB", (20, 20), colour).save(tmp_path / "data" / split / cls / f"{i}.png")
    cfg = {**{k: v for k, v in TINY.items() if not k.startswith("data.")}, "dataset": "imagefolder",
           "data.root": str(tmp_path / "data"), "data.image_size": 16, "batch_size": 4, "epochs": 1}
    train(cfg, workdir=tmp_path / "run", verbose=False)
    lines = _lines(tmp_path / "run")
    assert len(lines) == 1 and not MIX_KEYS & set(lines[0]) and "test/top1_err" in lines[0]


def test_measuring_leaves_training_untouched(tmp_path, monkeypatch):
    """The probe (own generator, forked global RNG, gradient saliency with the model) changes no weight."""
    cfg = {**TINY, "mix.preset": "guided_ap", "model.dropout": 0.3}
    train(cfg, workdir=tmp_path / "with", verbose=False)
    from trainables import loop

    monkeypatch.setattr(loop, "epoch_fidelity", lambda setup, state: {})
    train(cfg, workdir=tmp_path / "without", verbose=False)
    assert set(_lines(tmp_path / "with")[0]) >= MIX_KEYS and not MIX_KEYS & set(_lines(tmp_path / "without")[0])
    # epoch 2 trained after epoch 1's measurement
    a = torch.load(tmp_path / "with" / "checkpoints" / "epoch_0002.pt", weights_only=True)
    b = torch.load(tmp_path / "without" / "checkpoints" / "epoch_0002.pt", weights_only=True)
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
