"""Radiology transforms: HU windows, X-ray scaling, multi-crop views, batched device augmentation."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from ssl_radiology.errors import UserError
from ssl_radiology.transforms import (
    WINDOWS,
    DeviceAugment,
    EvalTransform,
    MultiCropDataset,
    MultiCropViews,
    ViewRecipe,
    device_augment,
    dino_views,
    mae_views,
    multi_crop_views,
    normalize,
    simclr_views,
    to_unit,
)
from ssl_radiology.transforms.device import gaussian_blur
from ssl_radiology.transforms.views import local_size_for


class Slices:
    """PreparedDataset-like: items ``{"image": (1, S, S) physical values, "index", "modality"}``."""

    def __init__(self, n: int = 8, size: int = 48) -> None:
        gen = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, size, size, generator=gen)
        self.modalities = ["CT" if i % 2 == 0 else "DX" for i in range(n)]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        scale = 3000.0 if self.modalities[i] == "CT" else 65535.0
        offset = -1000.0 if self.modalities[i] == "CT" else 0.0
        return {"image": self.images[i] * scale + offset, "index": i, "modality": self.modalities[i]}


def _batch(n: int = 4, size: int = 32, seed: int = 0) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Two 32-px views and two 16-px views of a half-CT (HU), half-X-ray (0..65535) batch."""
    gen = torch.Generator().manual_seed(seed)
    is_ct = torch.arange(n) % 2 == 0
    scale = torch.where(is_ct, 3000.0, 65535.0).view(-1, 1, 1, 1)
    offset = torch.where(is_ct, -1000.0, 0.0).view(-1, 1, 1, 1)
    views = [
        torch.rand(n, 1, s, s, generator=gen) * scale + offset for s in (size, size, size // 2, size // 2)
    ]
    return views, is_ct


def test_ct_window_maths():
    hu = torch.tensor([[[-1000.0, 0.0, 1000.0, 3000.0]]])
    torch.testing.assert_close(to_unit(hu, True, "wide"), torch.tensor([[[0.0, 0.5, 1.0, 1.0]]]))
    torch.testing.assert_close(to_unit(hu, True), to_unit(hu, True, WINDOWS["wide"]))  # wide is the default
    soft = to_unit(torch.tensor([[[40.0, -160.0, 240.0]]]), True, "soft")
    torch.testing.assert_close(soft, torch.tensor([[[0.5, 0.0, 1.0]]]))
    with pytest.raises(UserError, match="unknown CT window 'brain'"):
        to_unit(hu, True, "brain")


def test_xray_is_scaled_by_full_uint16_range_and_mixed_batches_follow_is_ct():
    values = torch.tensor([0.0, 32767.5, 65535.0]).view(1, 1, 1, 3)
    torch.testing.assert_close(to_unit(values, False), torch.tensor([0.0, 0.5, 1.0]).view(1, 1, 1, 3))
    batch = torch.stack([torch.full((1, 2, 2), 1000.0), torch.full((1, 2, 2), 1000.0)])
    out = to_unit(batch, torch.tensor([True, False]))
    assert out[0].eq(1.0).all() and torch.allclose(out[1], torch.tensor(1000.0 / 65535))
    per_sample = to_unit(
        batch, torch.tensor([True, True]), (torch.tensor([1000.0, 0.0]), torch.tensor([100.0, 4000.0]))
    )
    torch.testing.assert_close(per_sample[:, 0, 0, 0], torch.tensor([0.5, 0.75]))
    assert normalize(torch.tensor([0.5, 0.75])).tolist() == [0.0, 1.0]


def test_eval_transform_resizes_windows_and_normalises_one_channel():
    image = torch.linspace(-1000, 1000, 64 * 64).view(1, 64, 64)
    transform = EvalTransform(32, "wide")
    out = transform(image, "CT")
    assert out.shape == (1, 32, 32) and out.dtype == torch.float32
    assert -2.0 <= float(out.min()) < -1.9 and 1.9 < float(out.max()) <= 2.0
    torch.testing.assert_close(out, transform(image, True))
    batch = transform(torch.stack([image, image.abs() * 65]), torch.tensor([True, False]))
    assert batch.shape == (2, 1, 32, 32)
    torch.testing.assert_close(batch[0], out)


def test_multicrop_views_shapes_physical_values_and_randomness():
    image = Slices(size=80)[0]["image"]
    views = dino_views(64, n_local=4)
    assert local_size_for(224) == 96 and local_size_for(64) == 32
    torch.manual_seed(0)
    first = views(image)
    assert [tuple(v.shape) for v in first] == [(1, 64, 64)] * 2 + [(1, 32, 32)] * 4
    assert all(v.dtype == torch.float32 and v.shape[0] == 1 for v in first)
    assert all(
        float(v.min()) >= float(image.min()) - 1 and float(v.max()) <= float(image.max()) + 1 for v in first
    )
    second = views(image)
    assert not torch.equal(first[0], second[0])  # a new call draws new crops
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(first, views(image), strict=True))  # same seed, same crops
    assert len(simclr_views(32)(image)) == 2 and len(mae_views(32)(image)) == 1
    assert len(multi_crop_views("dino", 64, n_local=2)(image)) == 4


def test_full_scale_crop_with_flip_is_the_mirrored_image():
    image = torch.arange(32 * 32, dtype=torch.float32).view(1, 32, 32)
    (view,) = MultiCropViews(32, 1, (1.0, 1.0), flip_p=1.0)(image)
    torch.testing.assert_close(view, image.flip(-1))
    with pytest.raises(UserError, match="global_scale"):
        MultiCropViews(32, 1, (0.0, 1.0))


@pytest.mark.parametrize("workers", [0, 2])
def test_multicrop_dataset_batches_are_deterministic_per_seed(workers):
    dataset = MultiCropDataset(Slices(), dino_views(32, n_local=2))

    def first_batch(seed: int) -> dict:
        torch.manual_seed(seed)
        return next(iter(DataLoader(dataset, batch_size=4, shuffle=True, num_workers=workers)))

    batch = first_batch(1)
    assert [tuple(v.shape) for v in batch["views"]] == [(4, 1, 32, 32)] * 2 + [(4, 1, 16, 16)] * 2
    assert batch["is_ct"].dtype == torch.bool
    assert batch["is_ct"].tolist() == [int(i) % 2 == 0 for i in batch["index"]]
    again, other = first_batch(1), first_batch(2)
    assert all(torch.equal(a, b) for a, b in zip(batch["views"], again["views"], strict=True))
    assert not torch.equal(batch["views"][0], other["views"][0])


@pytest.mark.parametrize("preset", ["dino", "simclr", "mae"])
def test_device_presets_give_normalised_one_channel_views(preset):
    views, is_ct = _batch()
    out = device_augment(preset, seed=0)(views, is_ct)
    assert [tuple(v.shape) for v in out] == [tuple(v.shape) for v in views]
    for view in out:
        assert view.dtype == torch.float32 and view.shape[1] == 1 and torch.isfinite(view).all()
        assert float(view.min()) >= -2.0 and float(view.max()) <= 2.0  # normalize([0, 1]) == [-2, 2]
    with pytest.raises(UserError, match="unknown augmentation preset"):
        device_augment("byol")


def test_owned_generator_is_deterministic_and_resumable():
    views, is_ct = _batch()
    aug = device_augment("dino", seed=3)
    first = aug(views, is_ct)
    state = aug.get_rng_state()
    second = aug(views, is_ct)
    assert not torch.equal(first[0], second[0])  # a new batch gets new random parameters
    restored = device_augment("dino", seed=99)
    restored.set_rng_state(state)
    assert all(torch.equal(a, b) for a, b in zip(second, restored(views, is_ct), strict=True))
    fresh = device_augment("dino", seed=3)(views, is_ct)
    assert all(torch.equal(a, b) for a, b in zip(first, fresh, strict=True))


def test_global_rng_mode_follows_torch_manual_seed():
    views, is_ct = _batch()
    aug = device_augment("simclr")
    torch.manual_seed(5)
    first = aug(views, is_ct)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(first, aug(views, is_ct), strict=True))


def test_mae_recipe_only_windows():
    views, is_ct = _batch(n=6)
    out = device_augment("mae", seed=0)(views[:1], is_ct)[0]
    xray = ~is_ct
    torch.testing.assert_close(out[xray], normalize(views[0][xray] / 65535))
    candidates = [normalize(to_unit(views[0][is_ct], True, window)) for window in WINDOWS.values()]
    for k in range(int(is_ct.sum())):  # every CT sample went through exactly one named window
        assert any(torch.allclose(out[is_ct][k], c[k]) for c in candidates)


def test_solarize_and_noise_recipes():
    flat = [torch.full((4, 1, 16, 16), 0.8 * 65535)]
    no_ct = torch.zeros(4, dtype=torch.bool)
    solarized = DeviceAugment([ViewRecipe(jitter_p=0.0, solarize_p=1.0)], seed=0)(flat, no_ct)[0]
    torch.testing.assert_close(solarized, torch.full_like(solarized, float(normalize(torch.tensor(0.2)))))
    noisy = DeviceAugment([ViewRecipe(jitter_p=0.0, noise_p=1.0)], seed=0)(flat, no_ct)[0]
    std = (noisy * 0.25 + 0.5).std(dim=(1, 2, 3))
    assert float(std.max()) <= 0.06 and float(std.sum()) > 0


def test_xray_jitter_changes_xrays_but_never_ct_beyond_windowing():
    views, is_ct = _batch(n=8)
    out = DeviceAugment([ViewRecipe(jitter_p=1.0)], window_shift=0.0, window_scale=0.0, seed=0)(
        views[:1], is_ct
    )[0]
    plain = normalize(views[0] / 65535)
    assert all(not torch.allclose(out[k], plain[k]) for k in range(8) if not is_ct[k])
    candidates = [normalize(to_unit(views[0], True, window)) for window in WINDOWS.values()]
    assert all(any(torch.allclose(out[k], c[k]) for c in candidates) for k in range(8) if is_ct[k])


def test_blur_reduces_high_frequency_energy_and_keeps_the_mean():
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 32, 32, generator=gen)
    blurred = gaussian_blur(images, torch.tensor([0.5, 1.0, 2.0]), radius=6)

    def high_freq(x: torch.Tensor) -> torch.Tensor:
        return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(1, 2, 3))

    before, after = high_freq(images), high_freq(blurred)
    assert (after < 0.6 * before).all() and after[2] < after[1] < after[0]  # stronger sigma, smoother image
    torch.testing.assert_close(blurred.mean(dim=(1, 2, 3)), images.mean(dim=(1, 2, 3)), atol=0.02, rtol=0)


@pytest.mark.timeout(120)
def test_full_size_dino_pipeline_runs():
    """Speed sanity at the real recipe size (2×224 + 8×96 from 256²): must finish well within the timeout."""
    torch.manual_seed(0)
    dataset = MultiCropDataset(Slices(n=4, size=256), dino_views(224, n_local=8))
    batch = next(iter(DataLoader(dataset, batch_size=4)))
    out = device_augment("dino", seed=0)(batch["views"], batch["is_ct"])
    assert [tuple(v.shape) for v in out] == [(4, 1, 224, 224)] * 2 + [(4, 1, 96, 96)] * 8


def test_device_crops_cut_the_loader_paths_boxes_and_flips():
    from ssl_radiology.transforms.views import CropBoxesDataset, crop_batch

    slices, views = Slices(n=4, size=48), dino_views(32, n_local=3)
    boxed = CropBoxesDataset(slices, views, size=48)
    loader_views, items = [], []
    for i in range(4):
        torch.manual_seed(100 + i)
        loader_views.append(MultiCropDataset(slices, views)[i]["views"])
        torch.manual_seed(100 + i)
        items.append(boxed[i])
    batch = torch.utils.data.default_collate(items)
    assert batch["boxes"].shape == (4, 5, 4) and batch["flips"].shape == (4, 5)
    device_views = crop_batch(batch["image"], batch["boxes"], batch["flips"], views.sizes)
    assert [tuple(v.shape) for v in device_views] == [(4, 1, 32, 32)] * 2 + [(4, 1, 16, 16)] * 3
    for v, view in enumerate(device_views):
        reference = torch.stack([loader_views[i][v] for i in range(4)])
        # same crops: the per-view difference is small next to the image's own spread (uniform noise)
        spread = reference.std()
        assert (view - reference).abs().mean() < 0.35 * spread
        assert abs(float(view.mean() - reference.mean())) < 0.05 * spread


def test_device_crop_of_the_full_image_is_the_image_or_its_mirror():
    from ssl_radiology.transforms.views import crop_batch

    images = torch.arange(2 * 32 * 32, dtype=torch.float32).view(2, 1, 32, 32)
    boxes = torch.tensor([[[0, 0, 32, 32]], [[0, 0, 32, 32]]])
    (view,) = crop_batch(images, boxes, torch.tensor([[False], [True]]), [32])
    torch.testing.assert_close(view[0], images[0])
    torch.testing.assert_close(view[1], images[1].flip(-1))
    (half,) = crop_batch(
        images, torch.tensor([[[8, 8, 16, 16]], [[0, 0, 16, 16]]]), torch.zeros(2, 1, dtype=torch.bool), [16]
    )
    torch.testing.assert_close(half[0], images[0, :, 8:24, 8:24])  # same size: an exact cut
