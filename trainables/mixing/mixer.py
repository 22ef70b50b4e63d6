"""`Mixer`: one configurable mixing augmentation covering every method in MIXING.md.

    mixer = build_mixer({"preset": "saliencymix", "selection": "salient_to_salient"})
    out = mixer(images, labels, num_classes=10, generator=g)      # or: x, y = mixer(...)
    out.images (B,3,H,W), out.targets (B,K) soft labels, out.info (partner, lam, boxes, ...)

Call shape as timm's `Mixup` / torchvision v2's `CutMix`: images in [0,1] BEFORE normalisation
(mixing commutes with per-channel normalisation), integer or soft labels, optional label
smoothing applied before mixing. `lam` is always the weight of the TARGET (image i) label; the
SOURCE is `partner[i]`.

Random parameters (whether the batch is mixed, partners of data-independent pairings, lam,
random box centres, graft draws) are sampled first on the host from the trial's CPU
`torch.Generator` (`make_params`), then applied on the images' device (`apply`), which never
reads back to the host: data-dependent choices (saliency peaks, greedy pairing) stay on the
device. Exceptions, documented where they live: `opencv_*` saliency and `official_float`
input to the OpenCV-family detectors (OpenCV per image; `official_float` for
`spectral_residual_guided` stays on the device), `assignment` pairing (Hungarian solver), and the optional value checks
(`check=True`, which a training loop runs on its first batch only).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config import MixConfig, resolve_mix_config, saliency_readers
from .labels import LABELS, mix_targets
from .lam import parse_lam
from .lazy import lazy_import
from .masks import MASKS, MaskInputs
from .ops import Normalization, check_images, check_normalization, check_range, gaussian_blur, normalize_sum
from .pairing import PAIRINGS, saliency_distance
from .saliency import SALIENCY, saliency_map
from .selection import SELECTIONS

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

GUIDED_BLUR = (7, 3.0)  #: GuidedMixup blurs saliency 7x7, sigma 3 before pairing and masking


@dataclass(frozen=True)
class MixInfo:
    """What the mixer did, for tests, previews and logging."""

    applied: bool  #: whether this batch was mixed (host-side draw against `prob`)
    partner: Tensor  #: (B,) long, source index for each target i
    lam: Tensor  #: (B,) float32, target-label weight per sample
    boxes: Tensor  #: (B,4) long (x1,y1,x2,y2) of the pasted region in the target; zeros if no box
    source_boxes: Tensor  #: (B,4) long, the box cut from the source; zeros if no box
    source_weight: Tensor | None  #: (B,H,W) share of each output pixel taken from the source
    saliency: Tensor | None  #: (B,H,W) saliency maps of the input batch, when computed
    source_saliency: Tensor | None  #: (B,H,W) the map each pair's source was selected from


@dataclass(frozen=True)
class MixOutput:
    """Mixed images, soft targets and the info record; unpacks as `(images, targets)`."""

    images: Tensor
    targets: Tensor
    info: MixInfo

    def __iter__(self) -> Iterator[Tensor]:
        return iter((self.images, self.targets))


@dataclass(frozen=True)
class MixParams:
    """Host-side random parameters of one call (CPU tensors)."""

    applied: bool
    partner: Tensor | None  #: (B,) for data-independent pairings
    lam: Tensor | None  #: (B,) float64 raw draws (box sides or blend weights)
    centres: Tensor | None  #: (B,2) (y, x) for random box centres
    graft_uniform: Tensor | None  #: (B, G*G) Bernoulli draws for grafting


class Mixer:
    """Saliency-guided mixing augmentation.

    Args:
        config: a mapping of mixing factors (keys as in MIXING.md without `mix.`, plus `preset`)
            or a resolved `MixConfig`.
        label_smoothing: epsilon of label smoothing applied to the one-hot labels before mixing.
        normalization: the dataset's per-channel `(mean, std)` of its [0,1] images, which
            `saliency_input: official_float` normalises with (as the released code's loaders did);
            default: the released SaliencyMix/CutMix CIFAR values (`ops.CIFAR_MEAN`, `ops.CIFAR_STD`).
    """

    def __init__(self, config: Mapping[str, object] | MixConfig | None = None, *, label_smoothing: float = 0.0,
                 normalization: Normalization | None = None):
        self.config = resolve_mix_config(config)
        self.normalization = check_normalization(normalization)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0,1), got {label_smoothing!r}")
        self.label_smoothing = float(label_smoothing)
        self._checked = False
        cfg = self.config
        #: whether anything in this configuration reads a saliency map (else none is computed)
        self.uses_saliency = cfg.saliency not in (None, "none") and bool(saliency_readers(cfg))
        #: whether that saliency needs the model (`gradient`)
        self.needs_model = self.uses_saliency and SALIENCY.get(cfg.saliency).needs_model

    def __repr__(self) -> str:
        return f"Mixer({self.config.as_dict()}, label_smoothing={self.label_smoothing})"

    # -- inputs -----------------------------------------------------------------------------
    def soft_targets(self, labels: Tensor, batch: int, num_classes: int | None, check: bool) -> Tensor:
        """(B,K) soft targets from int (B,) or soft (B,K) labels, label smoothing applied."""
        if not isinstance(labels, torch.Tensor):
            raise ValueError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        if labels.ndim == 1 and not labels.is_floating_point():
            if num_classes is None or num_classes < 1:
                raise ValueError(f"integer labels need num_classes >= 1, got num_classes={num_classes!r}")
            if labels.shape[0] != batch:
                raise ValueError(f"labels {tuple(labels.shape)} do not match the batch of {batch} images")
            if check and labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
                raise ValueError(
                    f"labels must lie in [0, {num_classes}), got min {int(labels.min())} max {int(labels.max())}"
                )
            soft = F.one_hot(labels.long(), num_classes).float()
        elif labels.ndim == 2 and labels.is_floating_point():
            if labels.shape[0] != batch or (num_classes is not None and labels.shape[1] != num_classes):
                raise ValueError(
                    f"soft labels {tuple(labels.shape)} do not match (B={batch}, K={num_classes or labels.shape[1]})"
                )
            if check and not torch.allclose(labels.sum(1), torch.ones_like(labels[:, 0]), atol=1e-4):
                raise ValueError("soft labels must have rows that sum to 1")
            soft = labels
        else:
            raise ValueError(
                f"labels must be integer (B,) or float soft labels (B,K), got {tuple(labels.shape)} {labels.dtype}"
            )
        if self.label_smoothing:
            soft = soft * (1.0 - self.label_smoothing) + self.label_smoothing / soft.shape[1]
        return soft

    # -- random parameters (host) -----------------------------------------------------------
    def make_params(self, batch: int, size: tuple[int, int], generator: torch.Generator) -> MixParams:
        cfg = self.config
        applied = cfg.mixes and float(torch.rand(1, generator=generator)) < cfg.prob
        if not applied:
            return MixParams(False, None, None, None, None)
        pairing = PAIRINGS.get(cfg.pairing)
        partner = None if pairing.needs_distance else pairing.fn(batch, generator)
        lam = centres = graft = None
        if cfg.lam is not None:
            n = 1 if cfg.scope == "per_batch" else batch
            lam = parse_lam(cfg.lam).sample(n, generator).expand(batch)
        if cfg.selection is not None and SELECTIONS.get(cfg.selection).source == "random":
            n = 1 if cfg.scope == "per_batch" else batch
            ys = torch.randint(0, size[0], (n,), generator=generator)
            xs = torch.randint(0, size[1], (n,), generator=generator)
            centres = torch.stack((ys, xs), 1).expand(batch, 2)
        if cfg.graft_grid is not None:
            graft = torch.rand(batch, cfg.graft_grid**2, generator=generator)
        return MixParams(True, partner, lam, centres, graft)

    # -- the call ---------------------------------------------------------------------------
    def __call__(
        self,
        images: Tensor,
        labels: Tensor,
        *,
        num_classes: int | None = None,
        generator: torch.Generator | None = None,
        model: nn.Module | None = None,
        check: bool | None = None,
    ) -> MixOutput:
        """Mix a batch.

        Args:
            images: (B,3,H,W) floats in [0,1], any device; never modified.
            labels: (B,) integer class indices or (B,K) soft labels on the same device.
            num_classes: K, required for integer labels.
            generator: CPU `torch.Generator` for the random parameters (default: torch's global one).
            model: the classifier being trained; needed by `gradient` saliency only.
            check: also validate values ([0,1] range, label range), which reads scalars back to the
                host; default: on this mixer's first call only.
        """
        if check is None:
            check = not self._checked
        check_images(images)
        if check:
            check_range(images)
        batch, _, h, w = images.shape
        targets = self.soft_targets(labels, batch, num_classes, check)
        if targets.device != images.device:
            raise ValueError(f"labels are on {targets.device} but images on {images.device}")
        generator = generator if generator is not None else torch.default_generator
        if generator.device.type != "cpu":
            raise ValueError(f"generator must be a CPU torch.Generator (parameters are drawn on the host), "
                             f"got one on {generator.device}")
        if self.config.mixes and self.needs_model and model is None:
            raise ValueError(f"mix.saliency={self.config.saliency} needs the model: call mixer(images, labels, ..., "
                             "model=model)")
        self._checked = self._checked or check
        params = self.make_params(batch, (h, w), generator)
        if not params.applied:
            return self._identity(images, targets)
        return self.apply(images, targets, params, model)

    def _identity(self, images: Tensor, targets: Tensor) -> MixOutput:
        b, dev = images.shape[0], images.device
        zeros = torch.zeros(b, 4, dtype=torch.long, device=dev)
        info = MixInfo(False, torch.arange(b, device=dev), torch.ones(b, device=dev), zeros, zeros, None, None, None)
        return MixOutput(images, targets, info)

    def apply(self, images: Tensor, targets: Tensor, params: MixParams, model: nn.Module | None) -> MixOutput:
        """Deterministic application of sampled parameters (no host reads)."""
        cfg = self.config
        dev = images.device
        b, _, h, w = images.shape
        pairing = PAIRINGS.get(cfg.pairing)
        one_map_only = cfg.scope == "per_batch"  # the config rejects per_batch with distance pairing / saliency_mass

        def detect(x: Tensor, t: Tensor | None) -> Tensor:
            return saliency_map(cfg.saliency, x, model=model, targets=t, saliency_input=cfg.saliency_input or "uint8",
                                normalization=self.normalization)

        sal = None
        if self.uses_saliency and not one_map_only:
            sal = detect(images, targets)
        mask = MASKS.get(cfg.mask)
        guided = None
        if pairing.needs_distance or mask.guided:
            guided = normalize_sum(gaussian_blur(sal, *GUIDED_BLUR))
        if pairing.needs_distance:
            partner = pairing.fn(saliency_distance(guided)).to(dev)
        else:
            partner = params.partner.to(dev, non_blocking=True)

        src_sal = sal.index_select(0, partner) if sal is not None else None
        box_maps = cfg.selection is not None and SELECTIONS.get(cfg.selection).source != "random"
        if box_maps and one_map_only:  # released SaliencyMix: the map of ONE image, x[partner[0]], for every pair
            one = detect(images.index_select(0, partner[:1]), targets.index_select(0, partner[:1]))
            src_sal = one.expand(b, h, w)
        result = mask.mix(MaskInputs(
            images=images, partner=partner, lam=params.lam, saliency=sal, source_saliency=src_sal, guided=guided,
            centres=params.centres, uniform=params.graft_uniform,
            options={k: getattr(cfg, k) for k in mask.options},
        ))
        rule = LABELS.get(cfg.label)
        lam = rule.weight(result.source_weight, result.take_source() if rule.reads_saliency else None, sal, src_sal)
        lam = lam.float()
        zeros = torch.zeros(b, 4, dtype=torch.long, device=dev)
        tgt_box = result.target_box if result.target_box is not None else zeros
        src_box = result.source_box if result.source_box is not None else zeros
        info = MixInfo(True, partner, lam, tgt_box, src_box, result.source_weight, sal, src_sal)
        return MixOutput(result.mixed, mix_targets(targets, partner, lam), info)


def build_mixer(config: Mapping[str, object] | MixConfig | None = None, *, label_smoothing: float = 0.0,
                normalization: Normalization | None = None) -> Mixer:
    """Build a `Mixer` from factor keys (without the `mix.` prefix) plus `preset`; see `Mixer` for the rest."""
    return Mixer(config, label_smoothing=label_smoothing, normalization=normalization)
