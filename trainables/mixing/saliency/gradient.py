"""Input-gradient saliency (Simonyan et al. 2013), as used by PuzzleMix and GuidedMixup-AP.

Forward the clean batch through the model (which normalises its [0,1] input itself), take the
soft cross-entropy against the labels (the model's own prediction when no labels are given),
back-propagate to the input only, and return sqrt(mean over channels of grad^2), divided by the
per-image max. The gradient is taken with respect to the NORMALISED input, as MIXING.md,
PuzzleMix and GuidedMixup-AP do: for x_n = (x - mean) / std, dL/dx_n = std_c * dL/dx, so the
[0,1]-space gradient is scaled by the model's per-channel std (`model.normalize.std`, when the
model has one; otherwise the model is taken to consume its input as is).

Batch-norm mode, chosen and documented: the pass runs in whatever mode the model is in, i.e.
train mode during training (batch statistics, as PuzzleMix / Co-Mixup / GuidedMixup-AP do it),
and every buffer (BN running statistics, num_batches_tracked) is restored afterwards, so the
extra pass leaves no trace in the model. Parameter gradients are never touched: we use
`torch.autograd.grad` with respect to the input, so `.grad` of the weights stays as it was.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_import
from ..ops import normalize_max
from .base import register

if TYPE_CHECKING:
    from torch import Tensor, nn

torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


@register(
    "gradient",
    "input-gradient saliency from the model being trained (Simonyan 2013; PuzzleMix/GuidedMixup-AP)",
    needs_model=True,
)
def gradient(images: Tensor, *, model: nn.Module | None = None, targets: Tensor | None = None, **_: object) -> Tensor:
    if model is None:
        raise ValueError("saliency 'gradient' needs the model: call mixer(images, labels, ..., model=model)")
    saved = [b.detach().clone() for b in model.buffers()]
    x = images.detach().float().requires_grad_(True)
    try:
        with torch.enable_grad():
            logits = model(x).float()
            if targets is None:
                soft = F.one_hot(logits.detach().argmax(1), logits.shape[1]).to(logits.dtype)
            else:
                soft = targets.to(logits.dtype)
            loss = -(soft * F.log_softmax(logits, dim=1)).sum()
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        with torch.no_grad():
            for buf, old in zip(model.buffers(), saved):
                buf.copy_(old)
    std = getattr(getattr(model, "normalize", None), "std", None)
    if isinstance(std, torch.Tensor):
        grad = grad * std.to(grad.dtype).reshape(1, -1, 1, 1)
    return normalize_max(grad.pow(2).mean(1).sqrt())
