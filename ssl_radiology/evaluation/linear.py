"""Linear evaluation on cached frozen features.

Two protocols (DESIGN.md §4):

* ``sgd``: a linear head trained with SGD (momentum 0.9, no weight decay, lr = base × batch / 256, cosine
  schedule), optionally behind ``BatchNorm1d(affine=False)`` (the MAE recipe). Because features are cached,
  a small grid of base learning rates costs seconds; the one with the lowest validation loss is reported.
* ``logreg``: scikit-learn ``LogisticRegression`` on standardised features over a grid of C, chosen on the
  validation split, refit on train + validation. Multi-label tasks fit one binary model per label
  (one-vs-rest), each on the rows where that label is known.

Both return probabilities for the query rows; metrics are computed by the caller.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from ssl_radiology.errors import UserError
from ssl_radiology.evaluation.metrics import validation_loss


def _loss_fn(kind: str):
    if kind == "multiclass":
        return nn.CrossEntropyLoss()
    bce = nn.BCEWithLogitsLoss(reduction="none")
    return lambda logits, target, mask: (bce(logits, target) * mask).sum() / mask.sum().clamp(min=1)


@contextmanager
def single_thread() -> Iterator[None]:
    """A head on cached features is a few tiny matmuls per step: with intra-op threads, OpenMP start-up and
    spinning cost far more than the work (measured ~20× slower on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def train_sgd_head(
    train_x: np.ndarray,
    train_y: np.ndarray,
    kind: str,
    n_classes: int,
    *,
    base_lr: float,
    epochs: int,
    batch_size: int,
    batchnorm: bool,
    seed: int,
    train_mask: np.ndarray | None = None,
) -> nn.Module:
    """One SGD linear head on features (CPU: a head on cached features is too small to need a GPU)."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    dim = train_x.shape[1]
    head = nn.Sequential(
        nn.BatchNorm1d(dim, affine=False) if batchnorm else nn.Identity(), nn.Linear(dim, n_classes)
    )
    nn.init.normal_(head[1].weight, std=0.01)
    nn.init.zeros_(head[1].bias)
    batch = min(batch_size, len(train_x))
    lr = base_lr * batch / 256
    optimizer = torch.optim.SGD(head.parameters(), lr=lr, momentum=0.9, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(train_x) / batch)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * steps_per_epoch))
    x = torch.from_numpy(train_x)
    y = torch.from_numpy(train_y)
    mask = torch.ones(len(train_x), n_classes) if train_mask is None else torch.from_numpy(train_mask).float()
    loss_fn = _loss_fn(kind)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            if len(idx) < 2 and batchnorm:
                continue  # BatchNorm needs two samples; the leftover sample is seen next epoch
            logits = head(x[idx])
            loss = loss_fn(logits, y[idx]) if kind == "multiclass" else loss_fn(logits, y[idx], mask[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return head.eval()


def head_probabilities(head: nn.Module, x: np.ndarray, kind: str) -> np.ndarray:
    with torch.inference_mode():
        logits = head(torch.from_numpy(x))
    probs = logits.softmax(dim=1) if kind == "multiclass" else logits.sigmoid()
    return probs.numpy().astype(np.float64)


def sgd_linear(
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    val: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    query_x: np.ndarray,
    kind: str,
    n_classes: int,
    *,
    base_lrs: Sequence[float],
    epochs: int,
    batch_size: int,
    batchnorm: bool,
    seed: int,
) -> tuple[np.ndarray, dict[str, float]]:
    """Train one head per base lr, keep the lowest validation loss; query probabilities + chosen lr."""
    best: tuple[float, float, nn.Module] | None = None
    for base_lr in base_lrs:
        with single_thread():
            head = train_sgd_head(
                train[0], _targets(train[1], kind), kind, n_classes, base_lr=base_lr, epochs=epochs,
                batch_size=batch_size, batchnorm=batchnorm, seed=seed, train_mask=train[2],
            )  # fmt: skip
        loss = validation_loss(kind, val[1], head_probabilities(head, val[0], kind), val[2])
        if best is None or loss < best[0]:
            best = (loss, base_lr, head)
    if best is None:
        raise UserError("linear.base_lrs is empty")
    return head_probabilities(best[2], query_x, kind), {"chosen_base_lr": best[1], "val_loss": best[0]}


def _targets(labels: np.ndarray, kind: str) -> np.ndarray:
    return labels.astype(np.int64) if kind == "multiclass" else labels.astype(np.float32)


def _sweep_probs(
    x: np.ndarray, y: np.ndarray, query: np.ndarray, cs: Sequence[float], n_classes: int | None, seed: int
) -> list[np.ndarray]:
    """Probabilities on ``query`` for each C (ascending), each fit warm-started from the previous solution:
    a weakly regularised fit then starts near its answer instead of from zero (several times faster).
    ``n_classes=None`` means a binary label: returns P(label = 1), a constant if ``y`` has one class."""
    if n_classes is None and len(np.unique(y)) < 2:
        return [np.full(len(query), float(y.mean()))] * len(cs)
    model = LogisticRegression(max_iter=1000, random_state=seed, warm_start=True)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for c in cs:
            model.set_params(C=c).fit(x, y)
            if n_classes is None:
                out.append(model.predict_proba(query)[:, 1])
            else:
                probs = np.zeros((len(query), n_classes))
                probs[:, model.classes_.astype(int)] = model.predict_proba(query)
                out.append(probs)
    return out


def _logreg_probs(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray | None, query: np.ndarray, cs: Sequence[float], kind: str,
    n_classes: int, seed: int,
) -> list[np.ndarray]:  # fmt: skip
    """Per C, query probabilities; multilabel: one binary model per label on the rows where it is known."""
    if kind == "multiclass":
        return _sweep_probs(x, y.astype(int), query, cs, n_classes, seed)
    per_label = []
    for j in range(n_classes):
        keep = np.ones(len(x), bool) if mask is None else mask[:, j].astype(bool)
        per_label.append(_sweep_probs(x[keep], y[keep, j].astype(int), query, cs, None, seed))
    return [np.stack([label[i] for label in per_label], axis=1) for i in range(len(cs))]


def logistic_regression(
    train: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    val: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    refit: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    query_x: np.ndarray,
    kind: str,
    n_classes: int,
    *,
    cs: Sequence[float],
    seed: int,
) -> tuple[np.ndarray, dict[str, float]]:
    """C chosen by validation loss on models fit to ``train``, then refit on ``refit`` (train + validation
    for full-data runs); probabilities for ``query_x``. Features are standardised (lbfgs converges)."""
    cs = sorted(float(c) for c in cs)
    if not cs:
        raise UserError("linear.logreg.cs is empty")
    scaler = StandardScaler().fit(train[0])
    val_probs = _logreg_probs(
        scaler.transform(train[0]), train[1], train[2], scaler.transform(val[0]), cs, kind, n_classes, seed
    )
    losses = [validation_loss(kind, val[1], p, val[2]) for p in val_probs]
    best = int(np.argmin(losses))
    scaler = StandardScaler().fit(refit[0])
    probs = _logreg_probs(
        scaler.transform(refit[0]),
        refit[1],
        refit[2],
        scaler.transform(query_x),
        [cs[best]],
        kind,
        n_classes,
        seed,
    )[0]
    return probs, {"chosen_C": cs[best], "val_loss": losses[best]}
