"""lam distribution strings and the resolution of mix.* keys into a MixConfig."""

from __future__ import annotations

import pytest
import torch

from trainables.mixing import ConfigError, build_mixer, factor_values, list_presets, parse_lam, resolve_mix_config


@pytest.mark.parametrize(
    ("text", "canonical"),
    [("uniform(0,1)", "uniform(0,1)"), (" beta( 0.4 , 0.4 ) ", "beta(0.4,0.4)"), ("fixed(0.25)", "fixed(0.25)"),
     ("beta(1e-1,2)", "beta(0.1,2)"), ("uniform(.2,.8)", "uniform(0.2,0.8)")],
)
def test_parse_lam(text, canonical):
    assert str(parse_lam(text)) == canonical


@pytest.mark.parametrize("bad", ["beta(1)", "beta(0,1)", "uniform(0.8,0.2)", "fixed(2)", "gauss(0,1)", "beta(a,b)",
                                 "", "uniform(0,1", "fixed(-0.1)"])
def test_bad_lam_strings_name_the_string(bad):
    with pytest.raises(ValueError, match=f"bad lam distribution {bad!r}".replace("(", r"\(").replace(")", r"\)")):
        parse_lam(bad)


def test_lam_samples():
    g = torch.Generator().manual_seed(0)
    u = parse_lam("uniform(0.2,0.4)").sample(20000, g)
    assert u.dtype == torch.float64 and u.min() >= 0.2 and u.max() <= 0.4 and abs(u.mean() - 0.3) < 0.005
    b = parse_lam("beta(2,5)").sample(20000, g)
    assert abs(b.mean() - 2 / 7) < 0.01 and b.min() >= 0 and b.max() <= 1
    assert torch.equal(parse_lam("fixed(0.3)").sample(3, g), torch.full((3,), 0.3, dtype=torch.float64))
    again = parse_lam("beta(2,5)").sample(5, torch.Generator().manual_seed(7))
    assert torch.equal(again, parse_lam("beta(2,5)").sample(5, torch.Generator().manual_seed(7)))


def test_every_preset_resolves_and_scopes():
    for name in list_presets():
        cfg = resolve_mix_config({"preset": name})
        assert cfg.preset == name
        expect = {"saliencymix_official": "per_batch", "mixup": "per_batch", "cutmix": "per_batch",
                  "none": None}.get(name, "per_sample")
        assert cfg.scope == expect
        fit = {"saliencymix": "shift", "saliencymix_official": "clip", "cutmix": "clip"}.get(name)
        assert cfg.box_fit == fit
    assert set(list_presets()) == {"none", "mixup", "cutmix", "saliencymix", "saliencymix_official", "guided_sr",
                                   "guided_ap", "grafting"}


def test_overrides_and_cross_family():
    cfg = resolve_mix_config({"preset": "saliencymix", "selection": "salient_to_salient", "pairing": "greedy"})
    assert (cfg.selection, cfg.pairing, cfg.saliency, cfg.lam) == ("salient_to_salient", "greedy", "fine_grained",
                                                                   "uniform(0,1)")
    # changing the mask drops the preset's box-only values instead of failing
    cfg = resolve_mix_config({"preset": "saliencymix", "mask": "pixel_ratio"})
    assert (cfg.selection, cfg.lam, cfg.label, cfg.saliency_input) == (None, None, "mask_mean", "uint8")
    cfg = resolve_mix_config({"mask": "box"})
    assert (cfg.selection, cfg.saliency, cfg.lam, cfg.label, cfg.prob) == ("random", "none", "beta(1,1)", "area", 1.0)
    assert (cfg.box_fit, cfg.scope) == ("clip", "per_sample")  # no preset: CutMix's clip for a random box
    cfg = resolve_mix_config({"mask": "box", "saliency": "fine_grained"})
    assert (cfg.selection, cfg.box_fit) == ("salient_to_corresponding", "shift")  # the SaliencyMix paper's fit
    cfg = resolve_mix_config({"preset": "cutmix", "scope": "per_sample", "box_fit": "shift"})
    assert (cfg.scope, cfg.box_fit) == ("per_sample", "shift")
    assert resolve_mix_config({}).preset == "none" and not resolve_mix_config({}).mixes


@pytest.mark.parametrize(
    ("raw", "keys", "message"),
    [
        ({"preset": "saliencymx"}, ("mix.preset",),
         r"^mix.preset: unknown value 'saliencymx' \(did you mean 'saliencymix'\?\); allowed: none, mixup"),
        ({"preset": "cutmix", "selecton": "random"}, ("mix.selecton",),
         r"^mix.selecton: unknown key \(did you mean 'mix.selection'\?\); allowed: mix.preset, mix.saliency"),
        ({"preset": "cutmix", "pairing": "gredy"}, ("mix.pairing",),
         r"^mix.pairing: unknown value 'gredy'.*allowed: random, flip, roll, greedy, greedy_local, assignment$"),
        ({"preset": "cutmix", "prob": 1.5}, ("mix.prob",), r"^mix.prob: 1.5 is out of range \[0.0, 1.0\]"),
        ({"preset": "cutmix", "prob": "high"}, ("mix.prob",), r"^mix.prob: expected a number, got 'high'"),
        ({"preset": "cutmix", "lam": "beta(0,1)"}, ("mix.lam",), r"^mix.lam: bad lam distribution 'beta\(0,1\)'"),
        ({"preset": "cutmix", "pairing": "greedy"}, ("mix.pairing", "mix.saliency"),
         r"^mix.pairing=greedy needs a saliency detector but mix.saliency is 'none'; allowed: fine_grained"),
        ({"preset": "mixup", "selection": "random"}, ("mix.selection", "mix.mask", "mix.preset"),
         r"^mix.selection='random' does not apply to mix.mask=blend \(preset 'mixup'\)"),
        ({"preset": "guided_sr", "lam": "beta(1,1)"}, ("mix.lam", "mix.mask", "mix.preset"),
         r"^mix.lam='beta\(1,1\)' does not apply to mix.mask=pixel_ratio"),
        ({"preset": "none", "prob": 0.5}, ("mix.preset", "mix.prob"),
         r"^mix.preset=none does not mix, so it takes no other mix.\* keys \(got mix.prob\)"),
        ({"preset": "saliencymix", "box_fit": "crop"}, ("mix.box_fit",),
         r"^mix.box_fit: unknown value 'crop'.*allowed: shift, clip$"),
        ({"preset": "mixup", "box_fit": "shift"}, ("mix.box_fit", "mix.mask", "mix.preset"),
         r"^mix.box_fit='shift' does not apply to mix.mask=blend"),
        ({"preset": "guided_sr", "pairing": "optimal"}, ("mix.pairing",),
         r"^mix.pairing: 'optimal' was removed.*use 'greedy_local'"),
        ({"preset": "guided_sr", "pairing": "assignment"}, ("mix.pairing", "mix.mask"),
         r"^mix.pairing=assignment cannot be used with mix.mask=pixel_ratio: most samples end in 2-cycles"),
        ({"preset": "mixup", "scope": "per_sample", "saliency": "fine_grained", "pairing": "assignment"},
         ("mix.pairing", "mix.mask"), r"^mix.pairing=assignment cannot be used with mix.mask=blend.*use "
                                      r"mix.pairing=greedy_local"),
        ({"preset": "cutmix", "saliency": "fine_grained", "selection": "salient_to_salient"},
         ("mix.scope", "mix.selection"), r"^mix.scope=per_batch pastes one box.*set mix.scope: per_sample"),
        ({"preset": "saliencymix", "scope": "per_batch", "selection": "salient_to_salient"},
         ("mix.scope", "mix.selection"), r"^mix.scope=per_batch pastes one box"),
        ({"preset": "guided_sr", "scope": "per_batch", "pairing": "random"}, ("mix.scope", "mix.mask"),
         r"^mix.scope=per_batch applies to masks box, blend, not mix.mask=pixel_ratio"),
        ({"preset": "mixup", "label": "area"}, ("mix.label", "mix.mask", "mix.preset"),
         r"^mix.label='area' does not apply to mix.mask=blend"),
        ({"preset": "guided_ap", "saliency_input": "official_float"},
         ("mix.saliency_input", "mix.saliency", "mix.preset"),
         r"does not apply to mix.saliency=gradient, which accepts only uint8 \(mix.saliency_input applies to "
         r"fine_grained, .*spectral_residual_guided\)"),
        ({"preset": "grafting", "graft_grid": 0}, ("mix.graft_grid",),
         r"^mix.graft_grid: must be in \[1, 64\], got 0$"),
        ({"preset": "grafting", "graft_grid": 2.5}, ("mix.graft_grid",),
         r"^mix.graft_grid: must be an integer, got 2.5$"),
    ],
)
def test_bad_configs_say_what_and_where(raw, keys, message):
    """The message says what is wrong and what is allowed; `keys` say where (what the spec loader reads)."""
    with pytest.raises(ConfigError, match=message) as info:
        build_mixer(raw)
    assert info.value.keys == keys
    assert isinstance(info.value, ValueError)  # callers that catch ValueError keep working


@pytest.mark.parametrize(
    ("raw", "keys", "context", "message"),
    [
        ({"optim.lrr": 0.1}, ("optim.lrr",), (), r"^optim.lrr: unknown key \(did you mean 'optim.lr'\?\); allowed: "
                                                 r"optim.name, optim.lr"),
        ({"lr": 0.1}, ("lr",), (), r"^lr: unknown key \(did you mean 'optim.lr'\?\)"),
        ({"optim.lr": -1}, ("optim.lr",), (), r"^optim.lr: must be > 0 \(got -1\)$"),
        ({"epochs": "many"}, ("epochs",), (), r"^epochs: expected an integer \(got 'many'\)$"),
        ({"loss": "mse"}, ("loss",), (), r"^loss: unknown value 'mse'; allowed: soft_ce, bce_softmax$"),
        ({"sched.milestones": [3, 1]}, ("sched.milestones",), (), r"^sched.milestones: milestones must be increasing"),
        ({"recipe": "fastt"}, ("recipe",), (), r"^recipe: unknown recipe 'fastt' \(did you mean 'fast'\?\); allowed:"),
        ({"dataset": "cifar1O"}, ("dataset",), (), r"^dataset: unknown dataset 'cifar1O' \(did you mean 'cifar10'\?\)"),
        ({"data.clutterr": 1}, ("data.clutterr",), ("dataset",),
         r"^data.clutterr: unknown option for dataset 'synthetic_salient' \(did you mean 'data.clutter'\?\); "
         r"allowed: data.seed"),
        ({"model": "resnet181"}, ("model",), (), r"^model: unknown model 'resnet181' \(did you mean 'resnet18'\?\)"),
        ({"model.widht": 3}, ("model.widht",), ("model",),
         r"^model.widht: unknown option for model 'small_cnn' \(did you mean 'model.width'\?\)"),
        ({"optim": {"lr": 0.1}, "optim.lr": 0.2}, ("optim.lr",), (), r"^optim.lr: given twice"),
        ({"mix.preset": "none", "mix.prob": 0.5}, ("mix.preset", "mix.prob"), (), r"^mix.preset=none does not mix"),
    ],
)
def test_config_errors_carry_the_keys_at_fault(raw, keys, context, message):
    """`validate_config` raises ConfigError whose `keys` / `context` say which config keys are to blame."""
    from trainables.config import validate_config

    with pytest.raises(ConfigError, match=message) as info:
        validate_config(raw)
    assert (info.value.keys, info.value.context) == (keys, context)


def test_config_error_pickles_with_its_structure():
    import pickle

    err = ConfigError("data.clutter", "unknown option", ["data.seed"], context=("dataset",), unknown=True)
    back = pickle.loads(pickle.dumps(err))
    assert (back.keys, back.message, back.allowed, back.context, back.unknown, str(back)) == (
        err.keys, err.message, err.allowed, err.context, err.unknown, str(err))
    assert str(ConfigError((), "no key to blame")) == "no key to blame"
    assert str(ConfigError("a", "nothing fits", ())) == "a: nothing fits; allowed: (none)"


def test_saliency_input_applies_to_detectors_with_a_choice():
    """`official_float` for Guided-SR = the released GuidedMixup input (the normalised batch); default unchanged."""
    assert resolve_mix_config({"preset": "guided_sr"}).saliency_input == "uint8"
    assert resolve_mix_config({"preset": "guided_sr", "saliency_input": "official_float"}).saliency_input == (
        "official_float")
    assert resolve_mix_config({"preset": "guided_ap"}).saliency_input is None  # gradient: one input, not a factor
    # a preset's value that does not apply to the overriding detector is dropped, not an error
    assert resolve_mix_config({"preset": "saliencymix_official", "saliency": "frequency_tuned"}).saliency_input is None


def test_factor_values_lists_vocabulary():
    values = factor_values()
    assert "fine_grained" in values["saliency"] and "none" in values["saliency"]
    assert values["selection"][0] == "salient_to_corresponding" and len(values["selection"]) == 6
    assert set(values["mask"]) == {"box", "pixel_ratio", "blend", "graft"}


@pytest.mark.parametrize("name", ["box", "pixel_ratio", "blend", "graft"])
def test_mask_records_say_what_the_mask_does(name):
    """The `MASKS` records are the one place a mask's properties live: the config and the mixer
    follow them, so what a record says is what a mixed batch shows."""
    from trainables.mixing import build_mixer
    from trainables.mixing.labels import LABELS
    from trainables.mixing.masks import MASKS

    mask = MASKS.get(name)
    assert mask.default_label in LABELS
    saliency = "gradient" if name == "graft" else "fine_grained"
    base = {"mask": name, "prob": 1.0, "saliency": saliency}
    cfg = resolve_mix_config(base)
    assert cfg.label == mask.default_label
    assert (cfg.lam is not None) == mask.uses_lam
    assert {k for k in mask.options if getattr(cfg, k) is not None} == set(mask.options)
    if mask.reads_saliency:
        with pytest.raises(ValueError, match=f"mix.mask={name}.* needs a saliency detector"):
            resolve_mix_config({"mask": name, "saliency": "none"})
    else:
        assert resolve_mix_config({"mask": name, "saliency": "none"}).mask == name
    per_batch = {"mask": name, "scope": "per_batch"}
    if mask.per_batch:
        assert resolve_mix_config(per_batch).scope == "per_batch"
    else:
        with pytest.raises(ValueError, match="per_batch applies to masks"):
            resolve_mix_config({**per_batch, "saliency": saliency, "label": "mask_mean"})
    if not mask.binary:
        with pytest.raises(ValueError, match="mix.label='area' does not apply"):
            resolve_mix_config({**base, "label": "area"})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 4))
    x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    out = build_mixer(base)(x, torch.arange(8) % 4, num_classes=4, model=model,
                            generator=torch.Generator().manual_seed(1))
    w = out.info.source_weight
    assert bool(((w == 0) | (w == 1)).all()) == mask.binary
