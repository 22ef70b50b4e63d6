"""Mixing factors, presets, and how a user's `mix.*` keys resolve into one `MixConfig`.

A preset (`saliencymix`, `guided_sr`, ...) is a bundle of factor values; every factor can be
overridden one by one, which is what makes cross-family factorial ablations possible. Keys are
the factor names of MIXING.md without the `mix.` prefix.

Resolution rules:
1. start from the preset's values (no preset: field defaults; `mask` is then required);
2. apply the user's keys on top;
3. a preset value that does not apply to the final mask is dropped silently, a USER key that
   does not apply raises (it would silently do nothing in a sweep);
4. missing applicable fields get defaults; every value is checked against its registry.
Every error is a `ConfigError` (a ValueError) that carries the keys involved, the value and what is
allowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from .errors import ConfigError, check_int
from .labels import LABELS
from .lam import parse_lam
from .masks import MASKS
from .pairing import PAIRINGS
from .registry import Registry, did_you_mean
from .saliency import SALIENCY, SALIENCY_INPUTS
from .selection import BOX_FITS, SELECTIONS

SCOPES = ("per_sample", "per_batch")
FACTOR_KEYS = (
    "preset",
    "saliency",
    "selection",
    "box_fit",
    "pairing",
    "lam",
    "mask",
    "label",
    "prob",
    "scope",
    "saliency_input",
    "graft_grid",
    "graft_temperature",
    "graft_p",
)
#: pairing names that no longer exist, with what to use instead
REMOVED_PAIRINGS = {
    "optimal": "was removed: its assignment allowed symmetric pairs (i->j and j->i), which GuidedMixup's Eq. 1 "
               "forbids and which duplicate samples under pixel_ratio and blend masks; use 'greedy_local' (greedy's "
               "cycle improved by local search under every Eq. 1 constraint), or 'assignment' with box masks",
}
GRAFT_DEFAULTS = dict(MASKS.get("graft").options)


@dataclass(frozen=True)
class MixConfig:
    """A fully resolved mixing configuration; None marks a factor that does not apply."""

    preset: str | None
    mask: str | None  #: None only for preset `none` (no mixing)
    prob: float
    saliency: str | None = "none"
    selection: str | None = None
    box_fit: str | None = None
    pairing: str | None = "random"
    lam: str | None = None
    label: str | None = None
    scope: str | None = "per_sample"
    saliency_input: str | None = None
    graft_grid: int | None = None
    graft_temperature: float | None = None
    graft_p: float | None = None

    def as_dict(self) -> dict[str, object]:
        """The applicable factors (None dropped), keyed without the `mix.` prefix."""
        return {k: v for k, v in asdict(self).items() if v is not None}

    @property
    def mixes(self) -> bool:
        return self.mask is not None and self.prob > 0


PRESETS: Registry[dict[str, object]] = Registry("mixing preset")
PRESETS.register("none", {"prob": 0.0}, help="no mixing (vanilla training)")
PRESETS.register(
    "mixup",
    {"mask": "blend", "lam": "beta(1,1)", "label": "mask_mean", "pairing": "random", "prob": 1.0,
     "scope": "per_batch"},
    help="Mixup (Zhang et al. 2018): global blend, one lam ~ Beta(1,1) per batch (as timm and torchvision v2)",
)
PRESETS.register(
    "cutmix",
    {"mask": "box", "selection": "random", "box_fit": "clip", "lam": "beta(1,1)", "label": "area",
     "pairing": "random", "prob": 0.5, "scope": "per_batch"},
    help="CutMix (Yun et al. 2019): one random box and lam ~ Beta(1,1) per batch, lam corrected by the clipped area",
)
_SALIENCYMIX = {
    "mask": "box",
    "saliency": "fine_grained",
    "saliency_input": "uint8",
    "selection": "salient_to_corresponding",
    "box_fit": "shift",
    "lam": "uniform(0,1)",
    "label": "area",
    "pairing": "random",
    "prob": 0.5,
}
PRESETS.register("saliencymix", _SALIENCYMIX,
                 help="SaliencyMix as the paper describes it (per-sample boxes of the size lam asks for, "
                      "shifted inside the image)")
PRESETS.register(
    "saliencymix_official",
    {**_SALIENCYMIX, "lam": "beta(1,1)", "scope": "per_batch", "box_fit": "clip", "saliency_input": "official_float"},
    help="SaliencyMix as the released code runs it (one box per batch clipped at the border, normalised float "
         "into OpenCV)",
)
PRESETS.register(
    "guided_sr",
    {"mask": "pixel_ratio", "saliency": "spectral_residual_guided", "label": "mask_mean", "pairing": "greedy",
     "prob": 0.5},
    help="GuidedMixup with spectral-residual saliency (Guided-SR), computed on the [0,1] image; the released code "
         "computed it on the dataset-normalised batch (mix.saliency_input=official_float reproduces that)",
)
PRESETS.register(
    "guided_ap",
    {"mask": "pixel_ratio", "saliency": "gradient", "label": "mask_mean", "pairing": "greedy", "prob": 0.8},
    help="GuidedMixup with input-gradient saliency (Guided-AP)",
)
PRESETS.register(
    "grafting",
    {"mask": "graft", "saliency": "gradient", "label": "saliency_mass", "pairing": "random", "prob": 1.0,
     **GRAFT_DEFAULTS},
    help="Saliency Grafting (Park et al. 2022), our formulation: stochastic salient patches, calibrated labels",
)


def list_presets(pattern: str | None = None) -> list[str]:
    return PRESETS.names(pattern)


def factor_values() -> dict[str, list[str]]:
    """The allowed string values of every categorical factor (for `mixsweep list` and errors)."""
    return {
        "preset": list_presets(),
        "saliency": ["none", *SALIENCY.names()],
        "selection": SELECTIONS.names(),
        "box_fit": list(BOX_FITS),
        "pairing": PAIRINGS.names(),
        "mask": MASKS.names(),
        "label": LABELS.names(),
        "scope": list(SCOPES),
        "saliency_input": list(SALIENCY_INPUTS),
        "lam": ["uniform(a,b)", "beta(a,b)", "fixed(v)"],
    }


#: one line per value of the factors without a registry of their own (`mixsweep list` prints them)
VALUE_HELP: dict[str, dict[str, str]] = {
    "box_fit": {
        "shift": "the box keeps the size lam asks for and is moved inside the image, still holding the chosen "
                 "point (SaliencyMix paper)",
        "clip": "the box is cut at the image border and lam follows the pasted area (CutMix, released "
                "SaliencyMix code)",
    },
    "saliency_input": {
        "uint8": "the image itself ([0,1]; the OpenCV family sees it x255, rounded, as uint8 BGR)",
        "official_float": "what the released code fed the detector: the batch normalised with the dataset's "
                          "mean/std (SaliencyMix's OpenCV input, GuidedMixup's SR input)",
    },
    "scope": {
        "per_sample": "every pair draws its own lam, box and saliency (SaliencyMix paper, GuidedMixup)",
        "per_batch": "one lam and one box for the whole batch (Mixup, CutMix, timm, torchvision v2, released "
                     "SaliencyMix code)",
    },
}


def factor_help() -> dict[str, dict[str, str]]:
    """{factor: {value: one-line description}} of every categorical factor (for `mixsweep list`)."""
    out = {"saliency": {"none": "no saliency map", **{n: SALIENCY.help(n) for n in SALIENCY.names()}},
           "selection": {n: SELECTIONS.help(n) for n in SELECTIONS.names()},
           "pairing": {n: PAIRINGS.help(n) for n in PAIRINGS.names()},
           "mask": {n: MASKS.help(n) for n in MASKS.names()},
           "label": {n: LABELS.help(n) for n in LABELS.names()}}
    out.update(VALUE_HELP)
    return out


def preset_summary(name: str) -> str:
    """`key=value ...` of the factors preset `name` resolves to (what runs), without preset itself."""
    values = resolve_mix_config({"preset": name}).as_dict()
    return " ".join(f"{k}={v}" for k, v in values.items() if k != "preset")


def _choice(key: str, value: object, allowed: list[str] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ConfigError(f"mix.{key}", f"unknown value {value!r}{did_you_mean(str(value), list(allowed))}", allowed)
    return value


def _number(key: str, value: object, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, str):  # YAML 1.1 reads `1e-3` as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"mix.{key}", f"expected a number, got {value!r}")
    ok = (lo < value if lo_open else lo <= value) and value <= hi
    if not ok:
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ConfigError(f"mix.{key}", f"{value!r} is out of range {bound}")
    return float(value)


def _applies(key: str, cfg: MixConfig) -> bool:
    if key in ("preset", "mask", "prob"):
        return True
    if key == "saliency_input":  # detectors with a choice of input (`Detector.inputs`)
        return cfg.saliency in SALIENCY and len(SALIENCY.get(cfg.saliency).inputs) > 1
    if cfg.mask is None:
        return False
    mask = MASKS.get(cfg.mask)
    if key == "lam":
        return mask.uses_lam
    if key == "label":  # e.g. `area` is the pixel share of a BINARY mask
        return cfg.label is None or mask.binary or not LABELS.get(cfg.label).binary_only
    if key in ("saliency", "pairing", "scope"):
        return True
    return key in mask.options  # the family's own keys: selection, box_fit, graft_*


def _one_input(cfg: MixConfig) -> str:
    """Why `mix.saliency_input` does not apply: the detector accepts one input (`Detector.inputs`)."""
    choosers = [d for d in SALIENCY.names() if len(SALIENCY.get(d).inputs) > 1]
    only = SALIENCY.get(cfg.saliency).inputs[0] if cfg.saliency in SALIENCY else None
    return (f"mix.saliency={cfg.saliency}" + (f", which accepts only {only}" if only else "")
            + f" (mix.saliency_input applies to {', '.join(choosers)})")


def _defaults(cfg: MixConfig) -> MixConfig:
    """Fill every applicable field that is still None."""
    fill: dict[str, object] = {}
    mask = MASKS.get(cfg.mask) if cfg.mask is not None else None
    if mask is not None and "selection" in mask.options and cfg.selection is None:
        fill["selection"] = "random" if cfg.saliency == "none" else "salient_to_corresponding"
    if mask is not None and "box_fit" in mask.options and cfg.box_fit is None:  # CutMix clips; SaliencyMix shifts
        fill["box_fit"] = "clip" if (cfg.selection or fill.get("selection")) == "random" else "shift"
    if mask is not None and mask.uses_lam and cfg.lam is None:
        fill["lam"] = "beta(1,1)"
    if mask is not None and cfg.label is None:
        fill["label"] = mask.default_label
    if _applies("saliency_input", cfg) and cfg.saliency_input is None:
        fill["saliency_input"] = "uint8"
    if mask is not None:
        fill.update({k: v for k, v in mask.options.items() if v is not None and getattr(cfg, k) is None})
    return replace(cfg, **fill)


def saliency_readers(cfg: MixConfig) -> list[str]:
    """The factors of `cfg` that read a saliency map (their `mix.*` keys); none when nothing mixes."""
    if cfg.mask is None:
        return []
    readers = []
    if MASKS.get(cfg.mask).reads_saliency:
        readers.append("mix.mask")
    if cfg.selection not in (None, "random"):
        readers.append("mix.selection")
    if PAIRINGS.get(cfg.pairing).needs_distance:
        readers.append("mix.pairing")
    if LABELS.get(cfg.label).reads_saliency:
        readers.append("mix.label")
    return readers


def _setting(cfg: MixConfig, key: str) -> str:
    """`mix.selection=salient_to_salient`: a factor and its value, as messages name them."""
    return f"{key}={getattr(cfg, key.removeprefix('mix.'))}"


def _check_combination(cfg: MixConfig) -> None:
    if cfg.mask is None:
        return
    needs_saliency = saliency_readers(cfg)
    if cfg.saliency == "none" and needs_saliency:
        raise ConfigError(
            (*needs_saliency, "mix.saliency"),
            f"{', '.join(_setting(cfg, k) for k in needs_saliency)} needs a saliency detector but mix.saliency is "
            f"'none'", SALIENCY.names())
    pairing = PAIRINGS.get(cfg.pairing)
    if pairing.box_only and cfg.mask != "box":
        raise ConfigError(("mix.pairing", "mix.mask"),
                          f"mix.pairing={cfg.pairing} cannot be used with mix.mask={cfg.mask}: {pairing.restriction}; "
                          f"it is allowed with mix.mask=box only (use mix.pairing=greedy_local)")
    if cfg.scope == "per_batch":
        fix = "; set mix.scope: per_sample to draw per pair"
        if pairing.needs_distance or LABELS.get(cfg.label).reads_saliency:
            raise ConfigError(("mix.scope", "mix.pairing", "mix.label"),
                              f"mix.scope=per_batch uses the saliency of ONE image for the whole batch; it cannot feed "
                              f"mix.pairing={cfg.pairing} or mix.label={cfg.label}, which need every image's map{fix}")
        if not MASKS.get(cfg.mask).per_batch:
            allowed = ", ".join(n for n in MASKS.names() if MASKS.get(n).per_batch)
            raise ConfigError(("mix.scope", "mix.mask"),
                              f"mix.scope=per_batch applies to masks {allowed}, not mix.mask={cfg.mask}{fix}")
        if cfg.selection is not None and SELECTIONS.get(cfg.selection).target != "corresponding":
            raise ConfigError(
                ("mix.scope", "mix.selection"),
                f"mix.scope=per_batch pastes one box at the same place in every image, so it needs a selection "
                f"that pastes to the corresponding location (salient_to_corresponding, random), "
                f"not {cfg.selection}{fix}"
            )


def resolve_mix_config(raw: Mapping[str, object] | MixConfig | None = None) -> MixConfig:
    """Resolve user `mix.*` keys (without prefix) into a validated, complete `MixConfig`."""
    if isinstance(raw, MixConfig):
        return raw
    raw = dict(raw or {})
    known = [f"mix.{k}" for k in FACTOR_KEYS]
    for key in raw:
        if key not in FACTOR_KEYS:
            raise ConfigError(f"mix.{key}", f"unknown key{did_you_mean(f'mix.{key}', known)}", known, unknown=True)
    preset = raw.get("preset")
    if preset is None and "mask" not in raw:
        preset = "none"
    base: dict[str, object] = dict(PRESETS.get(_choice("preset", preset, list_presets()))) if preset else {}
    restated = {k for k in raw if k in base and raw[k] == base[k]}  # what `flat()` writes back: the preset's own
    if preset == "none" and set(raw) - {"preset", *restated}:
        extra = [f"mix.{k}" for k in raw if k != "preset" and k not in restated]
        raise ConfigError(("mix.preset", *extra),
                          f"mix.preset=none does not mix, so it takes no other mix.* keys (got {', '.join(extra)})")

    user = {k: v for k, v in raw.items() if k != "preset"}
    merged = {**base, **user}
    if merged.get("pairing") in REMOVED_PAIRINGS:
        raise ConfigError("mix.pairing", f"{merged['pairing']!r} {REMOVED_PAIRINGS[merged['pairing']]}")
    if "mask" in merged and merged["mask"] is not None:
        _choice("mask", merged["mask"], MASKS.names())
    for key, allowed in (("saliency", ["none", *SALIENCY.names()]), ("selection", SELECTIONS.names()),
                         ("box_fit", list(BOX_FITS)),
                         ("pairing", PAIRINGS.names()), ("label", LABELS.names()), ("scope", list(SCOPES)),
                         ("saliency_input", list(SALIENCY_INPUTS))):
        if key in merged:
            _choice(key, merged[key], allowed)
    if "lam" in merged:
        try:
            merged["lam"] = str(parse_lam(merged["lam"]))
        except ValueError as exc:
            raise ConfigError("mix.lam", str(exc)) from None
    if "prob" in merged:
        merged["prob"] = _number("prob", merged["prob"], 0.0, 1.0)
    if "graft_grid" in merged:
        merged["graft_grid"] = check_int(merged["graft_grid"], low=1, high=64, key="mix.graft_grid")
    if "graft_temperature" in merged:
        merged["graft_temperature"] = _number("graft_temperature", merged["graft_temperature"], 0.0, 1e6,
                                              lo_open=True)
    if "graft_p" in merged:
        merged["graft_p"] = _number("graft_p", merged["graft_p"], 0.0, 1.0, lo_open=True)

    cfg = MixConfig(preset=preset, mask=merged.get("mask"), prob=float(merged.get("prob", 1.0)))
    cfg = replace(cfg, saliency=merged.get("saliency", "none"), pairing=merged.get("pairing", "random"),
                  scope=merged.get("scope", "per_sample"))
    for key in ("selection", "box_fit", "lam", "label", "saliency_input", "graft_grid", "graft_temperature", "graft_p"):
        if key in merged:
            cfg = replace(cfg, **{key: merged[key]})
    for key in FACTOR_KEYS:
        if key in ("preset", "mask", "prob") or _applies(key, cfg):
            continue
        default = MixConfig.__dataclass_fields__[key].default
        if key in user and user[key] != default:
            reason = "mix.saliency" if key == "saliency_input" else "mix.mask"
            raise ConfigError(
                (f"mix.{key}", reason, *(["mix.preset"] if preset else [])),
                f"mix.{key}={user[key]!r} does not apply to "
                + (_one_input(cfg) if key == "saliency_input" else f"mix.mask={cfg.mask}")
                + f" (preset {preset!r}); remove it or change the mask"
            )
        cfg = replace(cfg, **{key: None})
    cfg = _defaults(cfg)
    _check_combination(cfg)
    return cfg
