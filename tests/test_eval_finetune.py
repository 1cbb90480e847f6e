"""Fine-tuning that trains: step budget, lr chosen on validation, MAE head init, convergence flag."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.finetune import Classifier, FinetuneConfig, finetune
from ssl_radiology.models.raw_pixels import RawPixels


class Images(torch.utils.data.Dataset):
    """Class 0 dark, class 1 bright 16 px images (physical values of a non-CT modality)."""

    def __init__(self, labels: np.ndarray) -> None:
        rng = np.random.default_rng(0)
        base = np.where(labels[:, None, None, None] == 1, 40000.0, 20000.0)
        self.images = torch.from_numpy(base + rng.normal(0, 3000, (len(labels), 1, 16, 16))).float()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "modality": "OT", "index": i}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.num_features = 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3))


LABELS = np.array([0, 1] * 20)
ROWS = np.arange(40)


def _run(backbone: nn.Module, **settings) -> tuple[np.ndarray, dict]:
    cfg = FinetuneConfig(batch_size=4, drop_path=0.0, flip=False, crop_scale=(1.0, 1.0), **settings)
    return finetune(
        backbone, Images(LABELS), LABELS, None, "multiclass", 2, ROWS[:8], ROWS[8:24], ROWS[24:],
        image_size=16, window=(40.0, 400.0), cfg=cfg, seed=0, device="cpu",
    )  # fmt: skip


def test_head_starts_as_in_mae():
    wide = Tiny()
    wide.num_features = 256
    weight, bias = (p.detach() for p in Classifier(wide, 5).head.parameters())
    assert weight.abs().max() <= 2 * 2e-5 and float(weight.std()) == pytest.approx(2e-5, rel=0.25)
    assert torch.count_nonzero(bias) == 0


def test_step_budget_regardless_of_data_size_and_lr_chosen_on_validation():
    probs, extras = _run(Tiny(), min_steps=40, epochs=1, base_lrs=(1e-6, 0.5), evals=8, patience=100)
    assert extras["steps"] == 40  # 8 training images, batch 4: 2 steps per epoch, yet 40 steps
    assert extras["chosen_base_lr"] == 0.5  # the lr that learns has the lower validation loss
    assert (probs.argmax(1) == LABELS[24:]).mean() > 0.9


def test_best_at_last_step_is_not_converged_and_early_stop_is():
    _, slow = _run(Tiny(), min_steps=20, epochs=1, base_lrs=(1e-4,), evals=4, patience=100)
    assert slow["best_step"] == slow["steps"] == 20 and slow["converged"] == 0.0
    _, fast = _run(Tiny(), min_steps=200, epochs=1, base_lrs=(5.0,), evals=40, patience=2)
    assert fast["converged"] == 1.0 and fast["best_step"] < fast["steps"] < 200


def test_raw_pixels_cannot_be_fine_tuned():
    with pytest.raises(UserError, match="from-scratch baseline"):
        _run(RawPixels(4), min_steps=1, base_lrs=(0.1,))
