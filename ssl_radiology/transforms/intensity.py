"""Physical pixel values → model input: CT windows in HU, X-ray scaling, the one normalisation.

Prepared datasets store physical values (CT in Hounsfield units, other modalities as 0..65535 intensities),
so the *choice* of window is made here, late, and can be randomised per view during pre-training. Models
see one channel normalised by fixed constants — no ImageNet RGB mean/std, which would be meaningless for a
grayscale CT window (timm adapts ImageNet stems to 1 channel by summing the RGB filters).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ssl_radiology.errors import UserError

#: named CT windows as (centre, width) in HU; "wide" maps -1000 HU → 0 and +1000 HU → 1
WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "soft": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "wide": (0.0, 2000.0),
}
#: full scale of the uint16 intensities that non-CT images are stored as
XRAY_FULL_SCALE = 65535.0
#: ``normalize`` maps [0, 1] to roughly [-2, 2]: zero-centred, unit-ish variance for typical radiographs
NORM_MEAN, NORM_STD = 0.5, 0.25

Window = tuple[float, float] | str
WindowLike = Window | tuple[Tensor, Tensor]


def resolve_window(window: Window) -> tuple[float, float]:
    """``(centre, width)`` of a named window or a pair; a UserError names the bad setting."""
    if isinstance(window, str):
        if window not in WINDOWS:
            raise UserError(f"unknown CT window '{window}'; named windows: {', '.join(WINDOWS)}")
        return WINDOWS[window]
    centre, width = (float(v) for v in window)
    if width <= 0:
        raise UserError(f"CT window width must be positive, got centre {centre}, width {width}")
    return centre, width


def _per_sample(value: Tensor | float | bool, images: Tensor) -> Tensor | float | bool:
    """Reshape a (B,) tensor so it broadcasts over (B, C, H, W); scalars pass through."""
    if isinstance(value, Tensor) and value.ndim == 1:
        return value.to(images.device).view(-1, *([1] * (images.ndim - 1)))
    return value


def to_unit(images: Tensor, is_ct: Tensor | bool, window: WindowLike = (0.0, 2000.0)) -> Tensor:
    """Map physical values to [0, 1]: CT through ``window`` (centre, width in HU), others by ``/ 65535``.

    ``images``: ``(1, H, W)`` or ``(B, 1, H, W)``. ``is_ct``: a bool, or a bool tensor ``(B,)``.
    ``window``: a name from :data:`WINDOWS`, a ``(centre, width)`` pair, or a pair of ``(B,)`` tensors
    (one window per sample — how :class:`~ssl_radiology.transforms.device.DeviceAugment` randomises).
    """
    images = images.float()
    if isinstance(window, str) or not isinstance(window[0], Tensor):
        centre, width = resolve_window(window)  # type: ignore[arg-type]
    else:
        centre, width = window
    centre, width = _per_sample(centre, images), _per_sample(width, images)
    ct = ((images - centre) / width + 0.5).clamp_(0.0, 1.0)
    if isinstance(is_ct, bool):
        return ct if is_ct else (images / XRAY_FULL_SCALE).clamp_(0.0, 1.0)
    other = (images / XRAY_FULL_SCALE).clamp_(0.0, 1.0)
    return torch.where(_per_sample(is_ct.bool(), images), ct, other)


def normalize(x01: Tensor) -> Tensor:
    """The only input normalisation any model sees: ``(x - 0.5) / 0.25`` on one channel."""
    return (x01 - NORM_MEAN) / NORM_STD


def resize(images: Tensor, size: int) -> Tensor:
    """Square resize with antialiasing (``(1, H, W)`` or ``(B, 1, H, W)``); a no-op at the right size."""
    if images.shape[-2:] == (size, size):
        return images
    batched = images if images.ndim == 4 else images.unsqueeze(0)
    out = F.interpolate(
        batched.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
    )
    return out if images.ndim == 4 else out.squeeze(0)


class EvalTransform:
    """Deterministic model input for feature extraction, linear probes and kNN: resize, window, normalise.

    ``EvalTransform(224, "soft")(image, is_ct)`` with ``image`` a ``(1, S, S)`` physical-value tensor (or a
    ``(B, 1, S, S)`` batch with ``is_ct`` a ``(B,)`` bool tensor); ``is_ct`` may also be the modality
    string (``"CT"`` → window, anything else → ``/ 65535``).
    """

    def __init__(self, image_size: int, window: Window = (0.0, 2000.0)) -> None:
        self.image_size = int(image_size)
        self.window = resolve_window(window)

    def __call__(self, image: Tensor, is_ct: Tensor | bool | str) -> Tensor:
        if isinstance(is_ct, str):
            is_ct = is_ct == "CT"
        return normalize(to_unit(resize(image, self.image_size), is_ct, self.window))

    def __repr__(self) -> str:
        return f"EvalTransform(image_size={self.image_size}, window={self.window})"


def window_names(names: Sequence[str]) -> list[tuple[float, float]]:
    """(centre, width) pairs of named windows, validated (used to configure random CT windows)."""
    return [resolve_window(name) for name in names]
