"""GPU check in one command: throughput, memory, device augmentation, DDP and resume on the GPU.

    .venv/bin/python scripts/gpu_check.py --out gpu-check            # one or more GPUs, ≤ 8 min
    .venv/bin/python scripts/gpu_check.py --smoke --out /tmp/check   # the same code paths, tiny, on CPU

Writes ``gpu_check.json`` and ``gpu_check.md`` into ``--out``. Sections (each recorded, failures too):

1. ``dino_synthetic`` / ``simclr_synthetic`` / ``mae_synthetic``: images/s of ``ssl-rad pretrain``'s own
   Trainer (bf16 on a GPU with bf16, crops on the device) fed from in-memory slices — DINO ViT-S/16 at
   224 px (2 global + 8 local crops, 65,536 prototypes), SimCLR ResNet-50, MAE ViT-B/16 — with peak memory;
2. ``dino_loader``: the same DINO run fed by the real prepared-data loader (``--data``, ``--workers``) and
   the fraction of wall time the training loop spent waiting for the next batch;
3. ``augment``: ``DeviceAugment`` and ``crop_batch`` on the GPU vs the CPU: exact where the maths is
   deterministic (windowing, crops of the same boxes; max |Δ|), matching statistics where random draws
   differ by device (per-view mean / std of the DINO recipe);
4. ``ddp``: a 2-process DDP pre-training when ≥ 2 GPUs are visible (ranks end with identical weights and
   saw disjoint samples);
5. ``resume``: a run stopped at step 4 and resumed to step 6 vs an uninterrupted 6-step run on the GPU:
   max |Δ| of every weight, within ``RESUME_TOLERANCE``.

Timing: after ``warmup`` steps, between two ``torch.cuda.synchronize()`` calls, so the figure is steady-state
throughput of the whole training step (augmentation, forward, backward, optimizer, EMA, logging).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from omegaconf import OmegaConf

from ssl_radiology.cli import main as cli_main
from ssl_radiology.config import load_group
from ssl_radiology.methods import create_method, view_settings
from ssl_radiology.models import patch_size_of
from ssl_radiology.training.data import PretrainData
from ssl_radiology.training.trainer import build_trainer

#: resumed vs uninterrupted weights on a GPU (bf16 autocast, cuDNN / cuBLAS kernels): max |Δ| allowed
RESUME_TOLERANCE = 1e-3
REPO = Path(__file__).resolve().parent.parent

#: (settings overrides, batch, steps, warm-up steps) per method; the full check and the CPU smoke run
FULL: dict[str, tuple[dict[str, Any], int, int, int]] = {
    "dino": ({"backbone": "vit_small_patch16_224", "image_size": 224}, 64, 30, 10),
    "simclr": ({"backbone": "resnet50", "image_size": 224}, 128, 20, 5),
    "mae": ({"backbone": "vit_base_patch16_224", "image_size": 224}, 128, 20, 5),
}
SMOKE: dict[str, tuple[dict[str, Any], int, int, int]] = {
    "dino": (
        {
            "backbone": "vit_tiny_patch16_224",
            "image_size": 32,
            "head": {"hidden_dim": 32, "bottleneck_dim": 16, "out_dim": 64},
            "views": {"n_local": 2},
        },
        4,
        2,
        1,
    ),
    "simclr": (
        {"backbone": "resnet18", "image_size": 32, "projection": {"hidden_dim": 32, "out_dim": 16}},
        4,
        2,
        1,
    ),
    "mae": (
        {
            "backbone": "vit_tiny_patch16_224",
            "image_size": 32,
            "decoder": {"dim": 32, "depth": 1, "num_heads": 2},
        },
        4,
        2,
        1,
    ),
}


class SyntheticSlices:
    """PreparedDataset-like in-memory CT slices (HU), so throughput excludes reading files."""

    def __init__(self, n: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.images = torch.rand(n, 1, size, size, generator=generator) * 2000 - 1000
        self.image_size = size
        self.manifest = pd.DataFrame({"patient_key": [f"synthetic-{i % 8}" for i in range(n)]})

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.images[i], "index": i, "modality": "CT"}


class Timer(L.Callback):
    """Steady-state seconds per step (synchronised at both ends, the final checkpoint's save excluded) and
    the host's wait for batches. Insert it first among the callbacks."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.elapsed = self.waited = 0.0
        self._last_end: float | None = None

    def _sync(self, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.perf_counter()
        if trainer.global_step == self.warmup:
            self._sync(pl_module)
            self.start = now = time.perf_counter()
        elif trainer.global_step > self.warmup and self._last_end is not None:
            self.waited += now - self._last_end

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_end = time.perf_counter()
        if trainer.global_step == trainer.max_steps:  # before the final checkpoint is written
            self._sync(pl_module)
            self.elapsed = time.perf_counter() - self.start


def method_settings(method: str, overrides: dict[str, Any], batch: int) -> dict[str, Any]:
    merged = OmegaConf.merge(load_group("method", method), overrides, {"batch_size": batch, "seed": 0})
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def train_rate(
    settings: dict[str, Any], sources: list, steps: int, warmup: int, workers: int, accelerator: str
) -> dict[str, Any]:
    """Images/s, data-wait fraction and peak memory of the pre-training Trainer on ``sources``."""
    L.seed_everything(0, verbose=False)
    module = create_method(settings["name"], settings)
    views = view_settings(settings, patch_size_of(settings["backbone"]))
    data = PretrainData(
        sources, views, batch_size=settings["batch_size"], workers=workers, seed=0, crops="device"
    )
    on_gpu = accelerator == "gpu"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    timer = Timer(warmup)
    with tempfile.TemporaryDirectory() as run:
        trainer = build_trainer(
            run,
            max_steps=warmup + steps,
            accelerator=accelerator,
            checkpoint_every=10**9,
            keep_checkpoints=1,
            clip_grad=settings.get("clip_grad"),
            log_every=10,
        )
        trainer.callbacks.insert(0, timer)
        trainer.fit(module, datamodule=data)
        precision = str(trainer.precision)
    images = steps * settings["batch_size"]
    return {
        "backbone": settings["backbone"],
        "image_size": settings["image_size"],
        "batch": settings["batch_size"],
        "precision": precision,
        "steps": steps,
        "images_per_s": images / timer.elapsed,
        "step_ms": 1000 * timer.elapsed / steps,
        "data_wait_fraction": timer.waited / timer.elapsed,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
    }


def augment_check(device: torch.device) -> dict[str, Any]:
    """DeviceAugment / crop_batch on ``device`` vs CPU: exact parts and matching statistics."""
    from ssl_radiology.transforms import device_augment, dino_views, normalize, to_unit
    from ssl_radiology.transforms.views import CropBoxesDataset, crop_batch

    n, size = 256, 64
    generator = torch.Generator().manual_seed(0)
    is_ct = torch.arange(n) % 2 == 0
    images = torch.where(
        is_ct.view(-1, 1, 1, 1),
        torch.rand(n, 1, size, size, generator=generator) * 2000 - 1000,
        torch.rand(n, 1, size, size, generator=generator) * 65535,
    )
    window = normalize(to_unit(images, is_ct, "soft"))
    window_dev = normalize(to_unit(images.to(device), is_ct.to(device), "soft")).cpu()
    views = dino_views(32, n_local=4)
    boxed = CropBoxesDataset([{"image": im, "modality": "CT"} for im in images], views, size)
    torch.manual_seed(0)
    items = [boxed[i] for i in range(n)]
    boxes, flips = torch.stack([i["boxes"] for i in items]), torch.stack([i["flips"] for i in items])
    crops = crop_batch(images, boxes, flips, views.sizes)
    crops_dev = crop_batch(images.to(device), boxes, flips, views.sizes)
    crop_diff = max(float((a - b.cpu()).abs().max()) for a, b in zip(crops, crops_dev, strict=True))
    stats = {}
    for where in ("cpu", device):
        augment = device_augment("dino").to(where)
        torch.manual_seed(0)
        out = augment([c.to(where) for c in crops], is_ct.to(where))
        stats[str(where)] = [(float(v.mean()), float(v.std())) for v in out]
    cpu_stats, dev_stats = stats["cpu"], stats[str(device)]
    mean_diff = max(abs(a[0] - b[0]) for a, b in zip(cpu_stats, dev_stats, strict=True))
    std_ratio = max(abs(a[1] / b[1] - 1) for a, b in zip(cpu_stats, dev_stats, strict=True))
    window_diff = float((window - window_dev).abs().max())
    return {
        "device": str(device),
        "window_max_abs_diff": window_diff,
        "crop_max_abs_diff_hu": crop_diff,
        "augment_view_mean_max_diff": mean_diff,
        "augment_view_std_max_rel_diff": std_ratio,
        "ok": window_diff <= 1e-5 and crop_diff <= 1e-2 and mean_diff <= 0.05 and std_ratio <= 0.05,
    }


def pretrain_argv(out: Path, data: str, accelerator: str, *extra: str) -> list[str]:
    return [
        "pretrain", "--method", "dino", "--data", data, "--backbone", "vit_tiny_patch16_224",
        "--image-size", "64", "--batch-size", "8", "--accelerator", accelerator, "--workers", "2",
        "--checkpoint-every", "100", "--out", str(out), "method.head.out_dim=256", "method.views.n_local=2",
        "train.log_every=1", "train.epoch_length=64", *extra,
    ]  # fmt: skip


def resume_check(data: str, accelerator: str, work: Path) -> dict[str, Any]:
    """Stopped-and-resumed vs uninterrupted weights after 6 steps."""
    full, split = work / "resume-full", work / "resume-split"
    for argv in (
        pretrain_argv(full, data, accelerator, "--max-steps", "6"),
        pretrain_argv(split, data, accelerator, "--max-steps", "6", "train.stop_at_step=4"),
        [*pretrain_argv(split, data, accelerator, "--max-steps", "6"), "--resume"],
    ):
        if cli_main(argv) != 0:
            raise RuntimeError(f"ssl-rad {' '.join(argv)} failed")
    a, b = (
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for run in (full, split)
    )
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return {"max_abs_diff": diff, "tolerance": RESUME_TOLERANCE, "ok": diff <= RESUME_TOLERANCE}


def ddp_check(data: str, work: Path) -> dict[str, Any]:
    """Two GPU processes: disjoint samples, identical final weights."""
    run = work / "ddp"
    argv = pretrain_argv(run, data, "gpu", "--max-steps", "4", "--devices", "2", "train.debug_seen=true")
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ssl_radiology", *argv], cwd=REPO, capture_output=True, text=True
    )
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    seen = [
        {int(i) for row in (run / f"seen_rank{r}.txt").read_text().splitlines() for i in row.split()[1:]}
        for r in (0, 1)
    ]
    hashes = {(run / f"weights_rank{r}.txt").read_text().strip() for r in (0, 1)}
    return {
        "seconds": time.perf_counter() - start,
        "disjoint_samples": not (seen[0] & seen[1]),
        "identical_weights": len(hashes) == 1,
        "ok": not (seen[0] & seen[1]) and len(hashes) == 1,
    }


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU check ({'smoke, CPU' if report['smoke'] else report['device']})",
        "",
        f"torch {report['torch']}, {report['gpus']} GPU(s), {report['elapsed_s']:.0f} s",
        "",
        "| check | result | details |",
        "|---|---|---|",
    ]
    for name, section in report["sections"].items():
        if "error" in section:
            lines.append(f"| {name} | **failed** | {section['error'].splitlines()[-1][:200]} |")
        elif "skipped" in section:
            lines.append(f"| {name} | skipped | {section['skipped']} |")
        elif "images_per_s" in section:
            memory = section["peak_memory_gib"]
            lines.append(
                f"| {name} | {section['images_per_s']:.0f} img/s | {section['backbone']} {section['image_size']} px, "
                f"batch {section['batch']}, {section['precision']}, {section['step_ms']:.0f} ms/step, data wait "
                f"{section['data_wait_fraction']:.1%}, peak {'n/a' if memory is None else f'{memory:.1f} GiB'} |"
            )
        else:
            details = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in section.items()
            )
            lines.append(f"| {name} | {'ok' if section.get('ok') else '**not ok**'} | {details} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json / gpu_check.md")
    parser.add_argument(
        "--data", default="phantom", help="prepared source for the real-loader and resume runs"
    )
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="loader workers")
    parser.add_argument("--smoke", action="store_true", help="tiny models on CPU: the same code paths")
    args = parser.parse_args()
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if not gpus and not args.smoke:
        print("error: no CUDA GPU visible; run with --smoke for the CPU dry run", file=sys.stderr)
        return 2
    accelerator = "cpu" if args.smoke else "gpu"
    device = torch.device("cpu" if args.smoke else "cuda")
    profile = SMOKE if args.smoke else FULL
    workers = 0 if args.smoke else args.workers
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections: dict[str, Any] = {}

    def section(name: str, fn) -> None:
        try:
            sections[name] = fn()
        except Exception:
            sections[name] = {"error": traceback.format_exc()}
        print(f"{name}: {json.dumps(sections[name], default=str)[:300]}", flush=True)

    synthetic = [SyntheticSlices(64 if args.smoke else 512, 64 if args.smoke else 256)]
    for method, (overrides, batch, steps, warmup) in profile.items():
        settings = method_settings(method, overrides, batch)
        section(
            f"{method}_synthetic",
            lambda s=settings, n=steps, w=warmup: train_rate(s, synthetic, n, w, workers, accelerator),
        )

    def real_loader() -> dict[str, Any]:
        from ssl_radiology.data import open_source

        overrides, batch, steps, warmup = profile["dino"]
        return train_rate(
            method_settings("dino", overrides, batch),
            [open_source(args.data)],
            steps,
            warmup,
            workers,
            accelerator,
        )

    section("dino_loader", real_loader)
    section("augment", lambda: augment_check(device))
    with tempfile.TemporaryDirectory() as tmp:
        if gpus >= 2:
            section("ddp", lambda: ddp_check(args.data, Path(tmp)))
        else:
            sections["ddp"] = {"skipped": f"{gpus} GPU(s) visible; needs 2"}
        section("resume", lambda: resume_check(args.data, accelerator, Path(tmp)))
    report = {
        "smoke": args.smoke,
        "device": torch.cuda.get_device_name(0) if gpus else "cpu",
        "gpus": gpus,
        "torch": torch.__version__,
        "elapsed_s": time.perf_counter() - start,
        "sections": sections,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = [k for k, v in sections.items() if "error" in v or v.get("ok") is False]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
