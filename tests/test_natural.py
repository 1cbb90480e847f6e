"""The offline natural-image corpus: every packaged photograph loads, crops are seeded, varied and small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ssl_radiology.data.natural import MAX_SIDE, load_photos, write_natural_crops


def test_photos_from_every_package_load_offline_as_gray_unit_images() -> None:
    photos = load_photos()
    # scikit-image's photographs plus scikit-learn's and matplotlib's: the corpus is not one package's dozen
    assert {"astronaut", "china", "flower", "grace_hopper", "motorcycle_left"} <= set(photos)
    assert len(photos) >= 18
    for name, image in photos.items():
        assert image.ndim == 2 and min(image.shape) >= 64, name
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0, name
    assert not {"retina", "immunohistochemistry", "cell"} & set(photos)  # medical images are not cross-domain


def test_crops_are_seeded_bounded_and_cover_every_photo(tmp_path: Path) -> None:
    n_photos = len(load_photos())
    paths = write_natural_crops(tmp_path / "a", count=n_photos + 3, seed=3)
    again = write_natural_crops(tmp_path / "b", count=n_photos + 3, seed=3)
    assert [p.name for p in paths] == [p.name for p in again]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again, strict=True))
    assert len({p.name.rsplit("-", 1)[0] for p in paths}) == n_photos
    sides = []
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "L" and image.width == image.height <= MAX_SIDE
            sides.append(image.width)
    assert len(set(sides)) > 5  # many scales, not one crop size
    other = write_natural_crops(tmp_path / "c", count=2, seed=4)
    assert not np.array_equal(np.asarray(Image.open(other[0])), np.asarray(Image.open(paths[0])))
