"""`mixsweep preview`: what each preset (or selection scheme) does to real photos, as one PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from trainables.mixing import SELECTIONS, build_mixer, list_presets
from trainables.models import build_model
from trainables.render import PHOTO_NAMES, PHOTOS, photo_batch, render_rows, rows_from_output

from .errors import UserError


def render_preview(
    out: str | Path,
    *,
    presets: Sequence[str] | None = None,
    schemes: bool = False,
    photos: Sequence[str] = PHOTOS,
    size: int = 128,
    seed: int = 0,
    target: int = 0,
    lam: str | None = "fixed(0.6)",
) -> Path:
    """One row per preset (mixing forced on), plus one per selection scheme with `schemes`.

    Every row mixes the same photo batch with the same generator seed; the row shows the mix
    made for photo `target` (the cat by default) and the partner the pairing chose for it.
    Presets that draw lam use `lam` instead (one random draw says little; None keeps theirs).
    Gradient-saliency presets use an untrained small CNN, so their maps show the mechanism only.
    """

    presets = list(presets) if presets is not None else [p for p in list_presets() if p != "none"]
    unknown = [p for p in photos if p not in PHOTOS]
    if unknown:
        raise UserError(f"unknown photo {unknown[0]!r}; known: {', '.join(PHOTOS)}")
    if not 16 <= size <= 1024:
        raise UserError(f"--size must be between 16 and 1024 pixels, got {size}")
    out = Path(out)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; give a .png file path")
    try:
        images = photo_batch(photos, size)
        configs = [(p, {"preset": p} if p == "none" else {"preset": p, "prob": 1.0}) for p in presets]
        if schemes:
            configs += [(f"saliencymix\n{s}", {"preset": "saliencymix", "prob": 1.0, "selection": s})
                        for s in SELECTIONS.names()]
        mixers = [(title, build_mixer(cfg)) for title, cfg in configs]
        if lam is not None:
            mixers = [(t, build_mixer({**cfg, "lam": lam}) if m.config.lam else m)
                      for (t, m), (_, cfg) in zip(mixers, configs)]
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if not 0 <= target < len(photos):
        raise UserError(f"--target must index one of the {len(photos)} photos, got {target}")
    names = [PHOTO_NAMES.get(p, p) for p in photos]
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=len(photos), image_size=(size, size),
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).train()
    labels = torch.arange(len(photos))
    rows = []
    for title, mixer in mixers:
        result = mixer(images, labels, num_classes=len(photos), generator=torch.Generator().manual_seed(seed),
                       model=model)
        if mixer.needs_model:
            title += "\n(untrained CNN)"
        rows += rows_from_output(images, result, names, [target], [title])
    note = f", lam = {lam} where the mask draws one" if lam else ""
    try:
        return render_rows(rows, out, title=f"mixsweep preview — {size}x{size} photos, seed {seed}{note}")
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
