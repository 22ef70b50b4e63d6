"""The mixing core: saliency-guided mixing augmentation in pure, batched torch.

Methods: SaliencyMix (Uddin et al., ICLR 2021; github.com/SaliencyMix/SaliencyMix), GuidedMixup
(Kang & Kim, AAAI 2023; github.com/3neutronstar/GuidedMixup), Saliency Grafting (Park et al.,
AAAI 2022; no public code, our formulation), Mixup (Zhang et al. 2018), CutMix (Yun et al.
2019). Where the released code deviates from its paper, both behaviours are named factor values
(`saliencymix` vs `saliencymix_official`, `greedy` really greedy); see each module's docstring.

No Ray, MLflow or OpenCV import at module level (OpenCV is a lazily imported reference backend).
Nor torch: every module binds torch (and NumPy) by name with `lazy.lazy_import`, and imports it when
a function first runs. So the registries (`MASKS`, `LABELS`, `PAIRINGS`, `SELECTIONS`, `SALIENCY`,
`PRESETS`) and `resolve_mix_config` are usable where only names and properties are needed - checking
a spec, `mixsweep list` - without the seconds torch takes to import, while each record stays next to
the code it describes. Why this and not records that name their function by string: a record's
properties and its function are one definition here, and the function bodies read as with a plain
`import torch`.

    from trainables.mixing import saliency_map, build_mixer, list_saliency, list_presets
    mixer = build_mixer({"preset": "saliencymix", "selection": "salient_to_salient", "prob": 1.0})
    out = mixer(images, labels, num_classes=K, generator=g)
"""

from .config import FACTOR_KEYS, MixConfig, factor_values, list_presets, resolve_mix_config
from .errors import ConfigError
from .lam import LamDistribution, parse_lam
from .mixer import Mixer, MixInfo, MixOutput, build_mixer
from .pairing import PAIRINGS
from .registry import Registry
from .saliency import SALIENCY, list_saliency, saliency_map
from .selection import SELECTIONS

__all__ = [
    "FACTOR_KEYS",
    "PAIRINGS",
    "SALIENCY",
    "SELECTIONS",
    "ConfigError",
    "LamDistribution",
    "MixConfig",
    "MixInfo",
    "MixOutput",
    "Mixer",
    "Registry",
    "build_mixer",
    "factor_values",
    "list_presets",
    "list_saliency",
    "parse_lam",
    "resolve_mix_config",
    "saliency_map",
]
