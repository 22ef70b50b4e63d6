"""Training-step cost of every preset relative to no mixing, measured in one run.

1. CIFAR ResNet-18, batch 256 (default), one full step = mix + forward + backward + SGD step (`--amp`: the
   forward in bf16 autocast, as trials with `amp: true` on CUDA), median over interleaved rounds; reported
   as the overhead over the `none` preset (GuidedMixup Table 2's "augmentation overhead"). Goal on a GPU:
   <= 5 % for every preset without gradient saliency.
2. One `small_cnn` epoch on `synthetic_salient` (the demo setting) in images/s, per preset.

    python bench/train_step.py [--device cpu|cuda] [--batch 256] [--rounds 5] [--amp]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, interleaved, markdown_table, median, paired_ratio  # noqa: E402

from trainables.data import build_dataset, make_loader  # noqa: E402
from trainables.mixing import build_mixer, list_presets  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.optim import soft_cross_entropy  # noqa: E402
from trainables.runtime import keep_freed_memory  # noqa: E402


def train_step(mixer, model, opt, images, labels, num_classes: int, g: torch.Generator,
               amp_dtype: torch.dtype | None = None) -> None:
    """One full training step: mix, forward (autocast to `amp_dtype` if given, as `trainables.loop.train_step`),
    float32 loss, backward, SGD step."""
    out = mixer(images, labels, num_classes=num_classes, generator=g, model=model, check=False)
    with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(out.images)
    loss = soft_cross_entropy(logits.float(), out.targets)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def gradient_saliency(preset: str) -> bool:
    """Whether `preset` needs the model's input gradient (an extra forward and backward pass per step)."""
    return build_mixer({"preset": preset}).config.saliency == "gradient"


def step_rows(device: torch.device, batch: int, rounds: int, presets: list[str] | None = None,
              amp_dtype: torch.dtype | None = None) -> list[dict]:
    """Per preset (`none` always included, first): median step seconds and the overhead over `none` in percent
    (median of paired per-round ratios)."""
    data = build_dataset("synthetic_salient", train_size=batch, test_size=2)
    x, y = next(iter(make_loader(data.train, batch, train=True, generator=torch.Generator().manual_seed(0),
                                 device=device)))
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, image_size=(32, 32), mean=data.mean, std=data.std).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=0.9)  # lr 0: every round trains the same weights
    fns = {}
    for preset in ["none", *[p for p in presets or list_presets() if p != "none"]]:
        mixer = build_mixer({"preset": preset} if preset == "none" else {"preset": preset, "prob": 1.0},
                            normalization=(data.mean, data.std))
        g = torch.Generator().manual_seed(0)
        fns[preset] = (lambda m=mixer, g=g: train_step(m, model, opt, x, y, 10, g, amp_dtype), device)
    t = interleaved(fns, rounds=rounds)
    rows = []
    for preset in fns:
        overhead = 100 * (paired_ratio(t[preset], t["none"]) - 1)
        rows.append({"preset": preset, "step_s": median(t[preset]), "overhead_pct": overhead,
                     "gradient": gradient_saliency(preset)})
        print(f"  {preset:22s} {median(t[preset]) * 1e3:9.1f} ms/step  {overhead:+6.1f} %", file=sys.stderr)
    return rows


def step_table(device: torch.device, batch: int, rounds: int, amp_dtype: torch.dtype | None = None) -> str:
    rows = [[r["preset"], f"{r['step_s'] * 1e3:.1f}",
             "—" if r["preset"] == "none" else f"**{r['overhead_pct']:+.1f} %**"]
            for r in step_rows(device, batch, rounds, amp_dtype=amp_dtype)]
    return markdown_table([f"preset (ResNet-18, B={batch})", "step (ms)", "overhead vs none"], rows)


def epoch_table(device: torch.device, presets: list[str], rounds: int) -> str:
    data = build_dataset("synthetic_salient", train_size=2000, test_size=2)
    fns = {}
    for preset in presets:
        torch.manual_seed(0)
        model = build_model("small_cnn", num_classes=data.num_classes, image_size=data.image_size, mean=data.mean,
                            std=data.std).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
        mixer = build_mixer({"preset": preset} if preset == "none" else {"preset": preset, "prob": 1.0},
                            normalization=(data.mean, data.std))
        loader = make_loader(data.train, 128, train=True, generator=torch.Generator().manual_seed(0), device=device)
        g = torch.Generator().manual_seed(0)

        def epoch(mixer=mixer, model=model, opt=opt, loader=loader, g=g) -> None:
            for images, labels in loader:
                train_step(mixer, model, opt, images, labels, data.num_classes, g)

        fns[preset] = (epoch, device)
    t = interleaved(fns, rounds=rounds)
    rows = []
    for preset in fns:
        seconds = median(t[preset])
        rows.append([preset, f"{seconds:.2f}", f"**{2000 / seconds:.0f}**"])
        print(f"  small_cnn epoch {preset:22s} {seconds:6.2f} s = {2000 / seconds:7.0f} img/s", file=sys.stderr)
    return markdown_table(["preset (small_cnn, 2000 imgs, B=128)", "epoch (s)", "images/s"], rows)


def main() -> None:
    keep_freed_memory()  # as in trial processes (see trainables/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast of the forward pass (CUDA only)")
    args = parser.parse_args()
    device = torch.device(args.device)
    amp_dtype = torch.bfloat16 if args.amp and device.type == "cuda" else None
    print(f"## Training-step overhead of mixing{' (bf16 autocast)' if amp_dtype else ''} — {describe(device)}\n")
    print(step_table(device, args.batch, args.rounds, amp_dtype))
    print(f"\n## small_cnn on synthetic_salient — {describe(device)}\n")
    print(epoch_table(device, [p for p in list_presets() if p != "saliencymix_official"], args.rounds))


if __name__ == "__main__":
    main()
