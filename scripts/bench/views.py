"""Multi-crop view throughput per loader worker, against a bare torchvision pipeline measured in the same run.

    .venv/bin/python scripts/bench/views.py                 # ~1 min on 2 shared cores
    .venv/bin/python scripts/bench/views.py --images 500 --batch 64 --rounds 5

Measures, on one thread (one DataLoader worker = one core):

1. ``MultiCropViews`` DINO recipe (2 × 224 scale (0.4, 1) + 8 × 96 scale (0.05, 0.4), flips) on 256² float32
   physical-value slices: views/s and images/s;
2. baseline: the same crops made by ``torchvision.transforms.v2`` ``RandomResizedCrop`` +
   ``RandomHorizontalFlip`` composed per crop (the usual DINO data pipeline, minus colour ops);
3. ``DeviceAugment`` (DINO preset) on CPU, batched: images/s — on a GPU this runs on the training device,
   so the CPU figure only bounds a CPU-only run.

Timings on a shared CPU are noisy: rates are printed per wall second and per CPU second of this process;
compare ratios, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torchvision.transforms import v2

from ssl_radiology.transforms import device_augment, dino_views

N_GLOBAL, N_LOCAL = 2, 8


def timed(fn: Callable[[], object], repeats: int, warmup: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) for ``repeats`` calls after one (cheaper) warm-up call."""
    warmup()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def torchvision_views(size: int = 224, local: int = 96) -> Callable[[torch.Tensor], list[torch.Tensor]]:
    """The baseline: one ``v2.Compose`` per crop kind, called per view."""
    global_crop = v2.Compose(
        [v2.RandomResizedCrop(size, scale=(0.4, 1.0), antialias=True), v2.RandomHorizontalFlip()]
    )
    local_crop = v2.Compose(
        [v2.RandomResizedCrop(local, scale=(0.05, 0.4), antialias=True), v2.RandomHorizontalFlip()]
    )
    return lambda image: (
        [global_crop(image) for _ in range(N_GLOBAL)] + [local_crop(image) for _ in range(N_LOCAL)]
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=200, help="images cropped per pipeline")
    parser.add_argument("--batch", type=int, default=32, help="batch size for DeviceAugment")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per pipeline")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    images = torch.rand(args.images, 1, args.input_size, args.input_size) * 3000 - 1000  # HU-like float32
    ours, baseline = dino_views(224, N_LOCAL), torchvision_views()

    def run(pipeline: Callable[[torch.Tensor], list[torch.Tensor]]) -> Callable[[], None]:
        return lambda: [pipeline(image) for image in images]

    per_view = N_GLOBAL + N_LOCAL
    print(
        f"DINO multi-crop ({N_GLOBAL}×224 + {N_LOCAL}×96 from {args.input_size}²), 1 thread, {args.images} images"
    )
    best: dict[str, tuple[float, float]] = {}
    for _ in range(args.rounds):  # alternate the pipelines so a burst of load on the shared CPU hits both
        for name, pipeline in (("MultiCropViews", ours), ("torchvision v2 baseline", baseline)):
            wall, cpu = timed(run(pipeline), 1, lambda p=pipeline: p(images[0]))
            best[name] = min(best.get(name, (wall, cpu)), (wall, cpu))
    for name, (wall, cpu) in best.items():
        print(
            f"  {name:<24} {args.images * per_view / wall:8.0f} views/s  {args.images / wall:6.1f} images/s "
            f"(wall)   {args.images / cpu:6.1f} images/CPU-s   (best of {args.rounds})"
        )
    ratio = best["torchvision v2 baseline"][0] / best["MultiCropViews"][0]
    print(f"  ratio MultiCropViews / baseline: {ratio:.2f}× (>1 = faster)")

    augment = device_augment("dino", seed=0)
    batch = ours(images[0])
    views = [torch.stack([view] * args.batch) for view in batch]
    is_ct = torch.arange(args.batch) % 2 == 0
    repeats = 3
    wall, cpu = timed(lambda: augment(views, is_ct), repeats, lambda: augment(views, is_ct))
    print(
        f"DeviceAugment dino on CPU, batch {args.batch}, 1 thread: {repeats * args.batch / wall:6.1f} images/s "
        f"(wall)   {repeats * args.batch / cpu:6.1f} images/CPU-s"
    )


if __name__ == "__main__":
    main()
