"""Saliency and mixing cost, measured as ratios in one run on the same images.

1. Batched saliency vs OpenCV per image, the way the released SaliencyMix code calls it
   (tensor -> numpy HWC -> uint8 -> new detector -> computeSaliency, for every image):
   `fine_grained` and `spectral_residual`, B=256 at 32x32 and B=64 at 224x224.
   Claim (goal on a 2-core CPU): >= 5x at 32x32 for fine_grained.
2. Augmentation overhead of every preset (mixing forced on, prob 1), as a share of one
   ResNet-18 (CIFAR) forward+backward on the same batch: GuidedMixup's Table 2 reports
   SaliencyMix 353-923 %, Guided-SR ~7 %, Guided-AP ~80 %.

    python bench/saliency.py [--device cpu|cuda] [--batch 64] [--rounds 9]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _timing import describe, interleaved, markdown_table, median, paired_ratio  # noqa: E402

from trainables.mixing import build_mixer, list_presets, saliency_map  # noqa: E402
from trainables.models import build_model  # noqa: E402
from trainables.runtime import keep_freed_memory  # noqa: E402


def photo_crops(batch: int, size: int, seed: int = 0) -> torch.Tensor:
    """`batch` random crops of scikit-image's photos, resized to size x size, in [0,1]."""
    import cv2
    import skimage.data

    rng = np.random.default_rng(seed)
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(), skimage.data.rocket()]
    out = []
    for i in range(batch):
        img = photos[i % len(photos)]
        h, w = img.shape[:2]
        side = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        out.append(cv2.resize(img[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def opencv_released_way(kind: str, images: torch.Tensor) -> list[np.ndarray]:
    """Per image on the CPU, as the released SaliencyMix code (but with correct uint8 input)."""
    import cv2

    create = {"fine_grained": cv2.saliency.StaticSaliencyFineGrained_create,
              "spectral_residual": cv2.saliency.StaticSaliencySpectralResidual_create}[kind]
    maps = []
    for img in images:
        arr = (img.cpu().numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8)[..., ::-1]
        _, m = create().computeSaliency(np.ascontiguousarray(arr))
        maps.append(m)
    return maps


SHAPES = ((256, 32), (64, 224))  #: (batch, side) of the saliency comparison
KINDS = ("fine_grained", "spectral_residual")


def saliency_rows(device: torch.device, rounds: int, shapes=SHAPES, kinds=KINDS) -> list[dict]:
    """Per (detector, shape): OpenCV per image and batched seconds (medians) and the paired speed-up."""
    cpu = torch.device("cpu")
    rows = []
    for batch, size in shapes:
        images = photo_crops(batch, size).to(device)
        for kind in kinds:
            t = interleaved({"opencv": (lambda k=kind, x=images: opencv_released_way(k, x), cpu),
                             "ours": (lambda k=kind, x=images: saliency_map(k, x), device)}, rounds=rounds)
            ref, ours, ratio = median(t["opencv"]), median(t["ours"]), paired_ratio(t["opencv"], t["ours"])
            rows.append({"kind": kind, "batch": batch, "size": size, "opencv_s": ref, "batched_s": ours,
                         "speedup": ratio})
            print(f"  {kind:18s} B={batch:3d} {size}x{size}: OpenCV per image {ref * 1e3:8.1f} ms, "
                  f"batched {ours * 1e3:8.2f} ms, speed-up {ratio:5.1f}x (median of {rounds} paired rounds)",
                  file=sys.stderr)
    return rows


def saliency_table(device: torch.device, rounds: int) -> str:
    rows = [[r["kind"], f"{r['batch']}x{r['size']}x{r['size']}", f"{r['opencv_s'] * 1e3:.1f}",
             f"{r['batched_s'] * 1e3:.2f}", f"**{r['speedup']:.1f}x**"] for r in saliency_rows(device, rounds)]
    return markdown_table(["detector", "batch", "OpenCV per image (ms)", "batched (ms)", "speed-up"], rows)


def overhead_table(device: torch.device, batch: int, rounds: int) -> str:
    torch.manual_seed(0)
    model = build_model("resnet18", num_classes=10, image_size=(32, 32), mean=(0.5,) * 3, std=(0.25,) * 3).to(device)
    model.train()
    images = photo_crops(batch, 32, seed=1).to(device)
    labels = torch.arange(batch, device=device) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.0)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()

    fns = {"step": (step, device)}
    for preset in list_presets():
        if preset != "none":
            mixer, g = build_mixer({"preset": preset, "prob": 1.0}), torch.Generator().manual_seed(0)
            fns[preset] = (lambda m=mixer, g=g: m(images, labels, num_classes=10, generator=g, model=model,
                                                  check=False), device)
    t = interleaved(fns, rounds=rounds)
    rows = [["ResNet-18 fwd+bwd", f"{median(t['step']) * 1e3:.1f}", "100 %"]]
    for preset in fns:
        if preset != "step":
            share = 100 * paired_ratio(t[preset], t["step"])
            rows.append([preset, f"{median(t[preset]) * 1e3:.2f}", f"**{share:.1f} %**"])
            print(f"  {preset:22s} {median(t[preset]) * 1e3:8.2f} ms = {share:6.1f} % of a ResNet-18 step",
                  file=sys.stderr)
    return markdown_table([f"mixing (B={batch}, 32x32)", "time (ms)", "share of fwd+bwd"], rows)


def main() -> None:
    keep_freed_memory()  # as in trial processes (see trainables/runtime.py)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=None, help="overhead batch (default 256 on GPU, 64 on CPU)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved timing rounds (median reported)")
    args = parser.parse_args()
    device = torch.device(args.device)
    batch = args.batch or (256 if device.type == "cuda" else 64)
    print(f"## Saliency: batched vs OpenCV per image — {describe(device)}\n")
    print(saliency_table(device, args.rounds))
    print(f"\n## Augmentation overhead vs a ResNet-18 training step — {describe(device)}\n")
    print(overhead_table(device, batch, args.rounds))


if __name__ == "__main__":
    main()
