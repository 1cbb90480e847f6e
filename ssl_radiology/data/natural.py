"""Natural photographs as a cross-domain stand-in for ImageNet, available offline.

scikit-image ships a handful of photographs inside the wheel (``skimage.data``); seeded random crops of
them, converted to grayscale and written as PNG, give a small "natural image" corpus that goes through
``prepare`` like any other source (modality ``OT``). It lets the toolkit compare in-domain against
cross-domain pre-training without a network connection; it is far too small to *replace* ImageNet.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

#: photographs (not microscopy or retina images, which are medical) in ``skimage.data``
PHOTOS = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "brick", "grass", "gravel", "moon", "coins",
    "clock", "page", "text", "hubble_deep_field",
)  # fmt: skip


def load_photos() -> dict[str, np.ndarray]:
    """The photographs that load without a download, as float grayscale in [0, 1]."""
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    photos: dict[str, np.ndarray] = {}
    for name in PHOTOS:
        loader: Callable[[], np.ndarray] | None = getattr(skimage.data, name, None)
        try:
            image = loader() if loader else None
        except (ImportError, OSError, ValueError):  # some images need pooch + network: skip them
            continue
        if image is None:
            continue
        image = img_as_float(image)
        photos[name] = rgb2gray(image[..., :3]) if image.ndim == 3 else image
    if not photos:
        raise RuntimeError("no photograph of skimage.data loads offline; reinstall scikit-image")
    return photos


def write_natural_crops(
    out_dir: str | Path,
    count: int = 500,
    seed: int = 0,
    min_fraction: float = 0.25,
    max_fraction: float = 0.9,
) -> list[Path]:
    """Write ``count`` seeded square grayscale crops (8-bit PNG) cycling over the photos; returns the paths.

    A crop's side is a uniform fraction of the photo's shorter side (at least 32 px) at a uniform position,
    flipped left–right with probability 1/2, so every photo contributes ``count / n_photos`` varied views.
    """
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = list(load_photos().items())
    paths = []
    for k in range(count):
        name, photo = photos[k % len(photos)]
        rows, cols = photo.shape
        side = max(32, int(rng.uniform(min_fraction, max_fraction) * min(rows, cols)))
        top, left = int(rng.integers(0, rows - side + 1)), int(rng.integers(0, cols - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        path = out / f"{name}-{k:05d}.png"
        Image.fromarray(np.rint(crop * 255).astype(np.uint8)).save(path)
        paths.append(path)
    return paths
