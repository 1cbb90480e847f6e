"""Natural photographs as a cross-domain stand-in for ImageNet, available offline.

The installed packages ship a few dozen photographs: scikit-image (``skimage.data``: people, animals,
objects, textures, a rocket, a telescope field, the stereo motorcycle pair), scikit-learn
(``load_sample_images``: a temple and a flower) and matplotlib (its sample portrait and two terrain
elevation maps). Seeded random crops of them at many scales, converted to grayscale and written as PNG,
give a "natural image" corpus that goes through ``prepare`` like any other source (modality ``OT``). It
lets the toolkit compare in-domain against cross-domain pre-training without a network connection; it is
far too small to *replace* ImageNet. Medical images among the packaged data (retina, immunohistochemistry,
microscopy, matplotlib's MRI) are left out on purpose: they would not be cross-domain.
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
#: crops are written at most this many pixels wide: every prepared size in the toolkit is ≤ 256 px, so
#: keeping the full resolution of a 512 px crop would only cost disk and decoding time
MAX_SIDE = 256


def _gray(image: np.ndarray) -> np.ndarray:
    """Float grayscale in [0, 1] from an 8-bit / float, gray / RGB(A) array."""
    from skimage.color import rgb2gray
    from skimage.util import img_as_float

    image = img_as_float(image)
    return rgb2gray(image[..., :3]) if image.ndim == 3 else image


def _skimage_photos() -> dict[str, np.ndarray]:
    import skimage.data

    photos: dict[str, np.ndarray] = {}
    loaders: dict[str, Callable[[], object]] = {
        n: getattr(skimage.data, n) for n in PHOTOS if hasattr(skimage.data, n)
    }
    if hasattr(skimage.data, "stereo_motorcycle"):
        loaders["motorcycle"] = skimage.data.stereo_motorcycle
    for name, loader in loaders.items():
        try:
            image = loader()
        except (ImportError, OSError, ValueError):  # some images need pooch + network: skip them
            continue
        if name == "motorcycle":  # (left, right, disparity): two photographs of one scene
            photos["motorcycle_left"], photos["motorcycle_right"] = _gray(image[0]), _gray(image[1])  # type: ignore[index]
        else:
            photos[name] = _gray(np.asarray(image))
    return photos


def _other_package_photos() -> dict[str, np.ndarray]:
    """The sample photographs of scikit-learn and matplotlib, and matplotlib's two terrain maps."""
    photos: dict[str, np.ndarray] = {}
    try:
        from sklearn.datasets import load_sample_images

        sample = load_sample_images()
        for path, image in zip(sample.filenames, sample.images, strict=True):
            photos[Path(path).stem] = _gray(image)
    except (ImportError, OSError, ValueError):
        pass
    try:
        import matplotlib.cbook as cbook
        from PIL import Image

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
            photos["grace_hopper"] = _gray(np.asarray(image.convert("RGB")))
        for name, key in (("topobathy", "topo"), ("jacksboro_fault_dem", "elevation")):
            with np.load(cbook.get_sample_data(f"{name}.npz", asfileobj=False)) as arrays:
                terrain = np.asarray(arrays[key], dtype=np.float64)
            low, high = float(terrain.min()), float(terrain.max())
            if high > low:  # elevation → brightness: a natural, non-medical texture
                photos[name] = (terrain - low) / (high - low)
    except (ImportError, OSError, ValueError, KeyError):
        pass
    return photos


def load_photos() -> dict[str, np.ndarray]:
    """Every photograph that loads without a download, as float grayscale in [0, 1], in a fixed order."""
    photos = {**_skimage_photos(), **_other_package_photos()}
    photos = {name: image for name, image in photos.items() if min(image.shape) >= 64}
    if not photos:
        raise RuntimeError("no photograph of skimage.data loads offline; reinstall scikit-image")
    return dict(sorted(photos.items()))


def write_natural_crops(
    out_dir: str | Path,
    count: int = 500,
    seed: int = 0,
    min_fraction: float = 0.25,
    max_fraction: float = 0.9,
) -> list[Path]:
    """Write ``count`` seeded square grayscale crops (8-bit PNG) cycling over the photos; returns the paths.

    A crop's side is a log-uniform fraction of the photo's shorter side (at least 32 px) at a uniform
    position — log-uniform so that close-ups and wide views are equally common — flipped left–right with
    probability 1/2, then downscaled to at most ``MAX_SIDE`` px. Every photo contributes ``count / n_photos``
    varied views.
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
        fraction = float(np.exp(rng.uniform(np.log(min_fraction), np.log(max_fraction))))
        side = max(32, int(fraction * min(rows, cols)))
        top, left = int(rng.integers(0, rows - side + 1)), int(rng.integers(0, cols - side + 1))
        crop = photo[top : top + side, left : left + side]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        image = Image.fromarray(np.rint(np.clip(crop, 0.0, 1.0) * 255).astype(np.uint8))
        if side > MAX_SIDE:
            image = image.resize((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        path = out / f"{name}-{k:05d}.png"
        image.save(path)
        paths.append(path)
    return paths
