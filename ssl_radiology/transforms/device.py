"""Intensity augmentation on the training device, batched, one random draw per sample and view.

Loader workers hand over physical-value crops; this module turns them into normalised model input:

1. **window** — CT: a random named window (lung / soft / bone / wide) per sample, its centre shifted by up
   to ``window_shift × width`` and its width scaled by up to ``1 ± window_scale`` with probability
   ``jitter_p`` (the grayscale analogue of colour jitter); other modalities: ``/ 65535``;
2. **X-ray jitter** (non-CT, probability ``jitter_p``): gamma in ``gamma``, contrast (blend with the image
   mean) and brightness (multiplicative) factors in ``1 ± contrast`` / ``1 ± brightness``;
3. **Gaussian blur** (``blur_p``): per-sample sigma in ``blur_sigma`` pixels of a 224-px first view, scaled
   with the first view's size so a 64-px run blurs the same anatomy as a 224-px one; separable grouped
   convolution, one kernel per sample;
4. **noise** (``noise_p``): Gaussian, std uniform in ``noise_std`` (in [0, 1] units);
5. **solarize** (``solarize_p``): values above ``solarize_threshold`` are inverted;
6. ``normalize``. No hue, saturation or RGB statistics anywhere.

Randomness: with ``seed=None`` draws come from torch's global RNG on the input's device (a caller that
forks and seeds the RNG per step gets reproducible steps). With a ``seed`` the module owns a
``torch.Generator`` (created on the device of the first batch); ``get_rng_state`` / ``set_rng_state`` save
and restore it for exact resume. The number of draws never depends on the data, only on the recipe.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssl_radiology.transforms.intensity import WINDOWS, normalize, to_unit, window_names

#: blur sigmas are given in pixels of a view this wide (DINO's 224-px global crops)
SIGMA_REFERENCE_SIZE = 224


@dataclass(frozen=True)
class ViewRecipe:
    """Probabilities of each intensity operation for one view position."""

    jitter_p: float = 0.8
    blur_p: float = 0.0
    noise_p: float = 0.0
    solarize_p: float = 0.0


def gaussian_blur(images: Tensor, sigma: Tensor, radius: int) -> Tensor:
    """Blur each ``(1, H, W)`` image of a batch with its own sigma (``(B,)``, pixels), reflect padding."""
    batch, channels, height, width = images.shape
    radius = max(1, min(radius, height - 1, width - 1))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma[:, None].to(images.dtype) ** 2))
    kernels = (kernels / kernels.sum(1, keepdim=True)).repeat_interleave(channels, 0)
    size = 2 * radius + 1
    flat = images.reshape(1, batch * channels, height, width)
    flat = F.conv2d(
        F.pad(flat, (radius, radius, 0, 0), mode="reflect"),
        kernels.view(-1, 1, 1, size),
        groups=batch * channels,
    )
    flat = F.conv2d(
        F.pad(flat, (0, 0, radius, radius), mode="reflect"),
        kernels.view(-1, 1, size, 1),
        groups=batch * channels,
    )
    return flat.reshape(batch, channels, height, width)


class DeviceAugment(nn.Module):
    """``forward(views, is_ct) -> list[Tensor]``: per-view intensity recipes applied to ``(B, 1, h, w)`` batches.

    ``recipes[i]`` applies to view position ``i``; positions past the end use the last recipe (so DINO's
    recipe lists two globals and one entry shared by all local crops).
    """

    def __init__(
        self,
        recipes: Sequence[ViewRecipe] = (ViewRecipe(),),
        *,
        ct_windows: Sequence[str] = tuple(WINDOWS),
        window_shift: float = 0.1,
        window_scale: float = 0.2,
        gamma: tuple[float, float] = (0.7, 1.5),
        contrast: float = 0.4,
        brightness: float = 0.4,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        noise_std: tuple[float, float] = (0.0, 0.05),
        solarize_threshold: float = 0.5,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not recipes:
            raise ValueError("DeviceAugment needs at least one view recipe")
        self.recipes = tuple(recipes)
        self.register_buffer("windows", torch.tensor(window_names(ct_windows)), persistent=False)
        self.window_shift, self.window_scale = float(window_shift), float(window_scale)
        self.gamma, self.contrast, self.brightness = tuple(gamma), float(contrast), float(brightness)
        self.blur_sigma, self.noise_std = tuple(blur_sigma), tuple(noise_std)
        self.solarize_threshold = float(solarize_threshold)
        self.seed = seed
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------------ randomness
    def _rng(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(self.seed)
        elif self._generator.device != device:
            raise RuntimeError(
                f"DeviceAugment's generator lives on {self._generator.device}, inputs on {device}"
            )
        return self._generator

    def get_rng_state(self) -> dict[str, Any]:
        """The owned generator's state (``None`` before the first batch) — plain values for a checkpoint."""
        gen = self._generator
        return {
            "seed": self.seed,
            "device": None if gen is None else str(gen.device),
            "state": None if gen is None else gen.get_state(),
        }

    def set_rng_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`get_rng_state` output; the next batch continues the saved random stream."""
        self.seed = state["seed"]
        self._generator = None
        if state["state"] is not None:
            self._generator = torch.Generator(device=state["device"])
            self._generator.set_state(state["state"])

    def _uniform(self, low: float, high: float, n: int, device: torch.device) -> Tensor:
        return low + (high - low) * torch.rand(n, device=device, generator=self._rng(device))

    # ------------------------------------------------------------------ forward
    def forward(self, views: Sequence[Tensor], is_ct: Tensor) -> list[Tensor]:
        if not views:
            return []
        sigma_scale = views[0].shape[-1] / SIGMA_REFERENCE_SIZE
        is_ct = is_ct.to(views[0].device).bool()
        return [
            self._augment(view.float(), is_ct, self.recipes[min(i, len(self.recipes) - 1)], sigma_scale)
            for i, view in enumerate(views)
        ]

    def _augment(self, x: Tensor, is_ct: Tensor, recipe: ViewRecipe, sigma_scale: float) -> Tensor:
        n, dev = x.shape[0], x.device
        per_sample = (-1, 1, 1, 1)
        jitter = self._uniform(0, 1, n, dev) < recipe.jitter_p
        pick = torch.randint(len(self.windows), (n,), device=dev, generator=self._rng(dev))
        centre, width = self.windows[pick].unbind(1)
        centre = centre + jitter * self._uniform(-1, 1, n, dev) * self.window_shift * width
        width = width * (1 + jitter * self._uniform(-self.window_scale, self.window_scale, n, dev))
        x = to_unit(x, is_ct, (centre, width))

        gamma = self._uniform(*self.gamma, n, dev).view(per_sample)
        contrast = self._uniform(1 - self.contrast, 1 + self.contrast, n, dev).view(per_sample)
        brightness = self._uniform(1 - self.brightness, 1 + self.brightness, n, dev).view(per_sample)
        jittered = x.pow(gamma)
        mean = jittered.mean(dim=(1, 2, 3), keepdim=True)
        jittered = (((jittered - mean) * contrast + mean) * brightness).clamp(0, 1)
        x = torch.where((jitter & ~is_ct).view(per_sample), jittered, x)

        blur = self._uniform(0, 1, n, dev) < recipe.blur_p
        sigma = self._uniform(*self.blur_sigma, n, dev) * sigma_scale
        if recipe.blur_p > 0 and bool(blur.any()):
            radius = math.ceil(3 * self.blur_sigma[1] * sigma_scale)
            x = x.clone()
            x[blur] = gaussian_blur(x[blur], sigma[blur], radius)

        if recipe.noise_p > 0:
            noisy = self._uniform(0, 1, n, dev) < recipe.noise_p
            std = self._uniform(*self.noise_std, n, dev) * noisy
            noise = torch.randn(x.shape, device=dev, generator=self._rng(dev))
            x = (x + noise * std.view(per_sample)).clamp(0, 1)

        solarize = (self._uniform(0, 1, n, dev) < recipe.solarize_p).view(per_sample)
        x = torch.where(solarize & (x >= self.solarize_threshold), 1 - x, x)
        return normalize(x)

    def extra_repr(self) -> str:
        return f"recipes={self.recipes}, windows={self.windows.tolist()}, seed={self.seed}"


def dino_augment(seed: int | None = None) -> DeviceAugment:
    """DINO's recipe in grayscale: view 1 always blurred; view 2 blur 0.1 + solarize 0.2; locals blur 0.5."""
    return DeviceAugment(
        [
            ViewRecipe(blur_p=1.0, noise_p=0.2),
            ViewRecipe(blur_p=0.1, solarize_p=0.2, noise_p=0.2),
            ViewRecipe(blur_p=0.5, noise_p=0.2),
        ],
        seed=seed,
    )


def simclr_augment(seed: int | None = None) -> DeviceAugment:
    """SimCLR's strong jitter (colour strength 1.0 → ±0.8) in grayscale, wider window jitter, blur 0.5."""
    return DeviceAugment(
        [ViewRecipe(blur_p=0.5, noise_p=0.5)],
        window_shift=0.2,
        window_scale=0.4,
        gamma=(0.5, 2.0),
        contrast=0.8,
        brightness=0.8,
        seed=seed,
    )


def mae_augment(seed: int | None = None) -> DeviceAugment:
    """MAE needs no intensity augmentation: a random named CT window (no jitter), X-rays unchanged."""
    return DeviceAugment([ViewRecipe(jitter_p=0.0)], seed=seed)
