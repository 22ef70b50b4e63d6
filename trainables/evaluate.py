"""Evaluation: clean test error (top-1/top-5, %), and robustness to FGSM and Gaussian noise.

All attacks work in [0,1] pixel space (the models normalise internally). Batch-norm runs in
eval mode. Errors are accumulated on the device and read back once per call.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _errors(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    k = min(5, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    hit1 = top[:, 0] == labels
    hit5 = (top == labels[:, None]).any(1)
    return (~hit1).sum(), (~hit5).sum()


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], amp_dtype: torch.dtype | None = None
             ) -> dict[str, float]:
    """test/loss (mean CE), test/top1_err and test/top5_err (percent) over the whole loader."""
    model.eval()
    loss = err1 = err5 = None
    n = 0
    for images, labels in loader:
        with torch.autocast(images.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(images).float()
        batch_loss = F.cross_entropy(logits, labels, reduction="sum")
        e1, e5 = _errors(logits, labels)
        loss = batch_loss if loss is None else loss + batch_loss
        err1 = e1 if err1 is None else err1 + e1
        err5 = e5 if err5 is None else err5 + e5
        n += labels.shape[0]
    if n == 0:
        raise ValueError("evaluation loader yielded no samples")
    values = torch.stack([loss.float(), err1.float(), err5.float()]).tolist()
    return {"test/loss": values[0] / n, "test/top1_err": 100.0 * values[1] / n, "test/top5_err": 100.0 * values[2] / n}


def robustness(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]], *, size: int, fgsm_eps: float,
               noise_sigma: float, generator: torch.Generator) -> dict[str, float]:
    """robust/fgsm_top1_err and robust/noise_top1_err (percent) on the first `size` test images."""
    model.eval()
    fgsm = noise = None
    n = 0
    for images, labels in loader:
        if n >= size:
            break
        images, labels = images[: size - n], labels[: size - n]
        x = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(F.cross_entropy(model(x), labels), x)
        with torch.no_grad():
            adv = (images + fgsm_eps * grad.sign()).clamp_(0, 1)
            e_adv = (model(adv).argmax(1) != labels).sum()
            noise_t = torch.randn(images.shape, generator=generator).to(images.device)
            e_noise = (model((images + noise_sigma * noise_t).clamp_(0, 1)).argmax(1) != labels).sum()
        fgsm = e_adv if fgsm is None else fgsm + e_adv
        noise = e_noise if noise is None else noise + e_noise
        n += labels.shape[0]
    if n == 0:
        return {}
    a, b = torch.stack([fgsm.float(), noise.float()]).tolist()
    return {"robust/fgsm_top1_err": 100.0 * a / n, "robust/noise_top1_err": 100.0 * b / n}
