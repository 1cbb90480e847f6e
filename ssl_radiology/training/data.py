"""Pre-training data: mixed sources, a seeded distributed sampler that can resume mid-epoch, loaders.

Why a custom sampler instead of ``WeightedRandomSampler`` + ``DistributedSampler``: the weighted sampler
does not shard across ranks, and neither can restart in the middle of an epoch. ``MixedSampler`` draws the
epoch's index list from the source weights with a generator seeded by ``(seed, epoch)``, shuffles it
globally, and deals it out round-robin to the ranks, so ranks get disjoint samples and every rank knows the
whole order without communication. It yields ``(position, index, sample_seed)``: the position lets a
resumed run skip exactly the samples already trained on, and ``sample_seed`` makes a sample's random crops
a function of ``(seed, epoch, position)`` alone — independent of worker count, worker scheduling or resume.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from ssl_radiology.errors import UserError


def mixture_counts(sizes: Sequence[int], weights: Sequence[float] | None, total: int) -> list[int]:
    """How many samples each source contributes to an epoch of ``total`` samples.

    Without weights every slice is drawn once (sources in proportion to their size). With weights, source
    *k* gets ``total × w_k / Σw`` samples (largest-remainder rounding so the counts add up to ``total``).
    """
    if weights is None:
        return list(sizes)
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    counts = np.floor(exact).astype(np.int64)
    for k in np.argsort(-(exact - counts), kind="stable")[: total - int(counts.sum())]:
        counts[k] += 1
    return counts.tolist()


class MixedSampler(Sampler[tuple[int, int, int]]):
    """Seeded, weighted, sharded and resumable sampler over a concatenation of sources.

    Each rank gets ``len(self)`` samples per epoch (a whole number of batches; the remainder of the global
    order is dropped so that all ranks step together). ``state_dict`` / ``load_state_dict`` hold the epoch
    and the number of samples this rank has trained on in it (``consumed``, set by the training loop).
    """

    def __init__(
        self,
        sizes: Sequence[int],
        weights: Sequence[float] | None = None,
        *,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        batch_size: int = 1,
        epoch_length: int | None = None,
    ) -> None:
        if weights is not None and (len(weights) != len(sizes) or min(weights) < 0 or sum(weights) <= 0):
            raise UserError(
                f"--weights: need {len(sizes)} non-negative weights with a positive sum, got {list(weights)}"
            )
        self.sizes = [int(s) for s in sizes]
        self.weights = None if weights is None else [float(w) for w in weights]
        self.seed, self.num_replicas, self.rank = int(seed), int(num_replicas), int(rank)
        self.epoch_length = int(epoch_length) if epoch_length else sum(self.sizes)
        self.per_rank = self.epoch_length // (self.num_replicas * batch_size) * batch_size
        if self.per_rank == 0:
            raise UserError(
                f"data: an epoch of {self.epoch_length} images is smaller than one global batch "
                f"({batch_size} per device × {self.num_replicas} devices); lower --batch-size"
            )
        self.epoch = 0
        self.consumed = 0
        self._skip = 0

    def __len__(self) -> int:
        # The full length even when resuming: Lightning counts the batches of the resumed epoch from the
        # restored progress, so the loader must report the epoch's size, not what is left of it.
        return self.per_rank

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch, self._skip = int(epoch), 0

    def global_order(self, epoch: int) -> np.ndarray:
        """Concatenated-dataset indices of one epoch, in training order, before sharding."""
        rng = np.random.default_rng([self.seed, epoch])
        offsets = np.cumsum([0, *self.sizes[:-1]])
        # unweighted epochs of another length than the corpus draw sources in proportion to their size
        weights = self.weights if self.weights or self.epoch_length == sum(self.sizes) else self.sizes
        parts = []
        for size, offset, count in zip(
            self.sizes, offsets, mixture_counts(self.sizes, weights, self.epoch_length), strict=True
        ):
            if count == 0 or size == 0:
                continue
            repeats = -(-count // size)  # draw without replacement until a source is exhausted
            parts.append(offset + np.concatenate([rng.permutation(size) for _ in range(repeats)])[:count])
        order = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
        return order[rng.permutation(len(order))]

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        order = self.global_order(epoch)
        mine = order[self.rank :: self.num_replicas][: self.per_rank]
        seeds = np.random.default_rng([self.seed, epoch, 1]).integers(0, 2**63 - 1, size=len(order))
        for position in range(skip, self.per_rank):
            yield position, int(mine[position]), int(seeds[position * self.num_replicas + self.rank])

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue after the last trained sample; a finished epoch continues with the next one."""
        self.epoch, self.consumed = int(state["epoch"]), int(state["consumed"])
        if self.consumed >= self.per_rank:
            self.epoch, self.consumed = self.epoch + 1, 0
        self._skip = self.consumed


class SeededSamples(Dataset):
    """Wraps a view dataset: item ``(position, index, seed)`` → the views of ``index`` drawn with ``seed``.

    The crops of a sample depend only on its seed, so a run gives the same batches with 0 or N workers and
    after a resume. The global torch RNG is forked, so the caller's RNG stream is untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int, int]) -> dict[str, Any]:
        position, index, seed = item
        with torch.random.fork_rng(devices=[]):
            # the CPU generator only: torch.manual_seed would also queue lazy CUDA / XPU / MTIA seeding
            # calls (each formats a stack trace, ~1 ms per sample) in a process that never uses them
            torch.random.default_generator.manual_seed(seed)
            sample = dict(self.dataset[index])
        sample["position"] = position
        return sample


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning checkpoints and restores through its sampler's state.

    Lightning saves ``state_dict()`` of every loader that has one, and calls ``load_state_dict`` *before*
    it creates the first iterator of a resumed fit — early enough for worker processes to prefetch the
    right samples.
    """

    def state_dict(self) -> dict[str, int]:
        return self.sampler.state_dict()  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)  # type: ignore[attr-defined]


#: where random resized crops are cut (``train.crops``)
CROP_MODES = ("auto", "loader", "device")
#: batch entries that only the host uses (sampler progress, debug logs): never copied to the device
HOST_KEYS = ("position", "index")


class PretrainData(L.LightningDataModule):
    """Prepared datasets → multi-crop views → seeded, sharded, resumable batches.

    ``sources`` are ``PreparedDataset``-like datasets (``ssl_radiology.data.open_source``, which also takes
    ``NAME:MODALITY`` selectors). ``views`` holds ``MultiCropViews`` keyword arguments. ``weights`` mixes
    the sources (``None``: each slice once per epoch); ``epoch_length`` (default: all slices) sets how many
    samples an epoch draws. ``names`` (the ``--data`` values) go into ``pretrain_patients.json``.

    ``crops`` says where the random resized crops are cut: ``loader`` (workers crop, the CPU path),
    ``device`` (workers only read slices and draw boxes; :func:`~ssl_radiology.transforms.views.crop_batch`
    cuts them on the training device after the batch is transferred) or ``auto`` (device on a GPU, loader
    otherwise). Both paths draw the same boxes and flips from the same per-sample seeds.
    """

    def __init__(
        self,
        sources: Sequence[Dataset],
        views: dict[str, Any],
        *,
        batch_size: int,
        workers: int = 0,
        seed: int = 0,
        weights: Sequence[float] | None = None,
        epoch_length: int | None = None,
        names: Sequence[str] | None = None,
        crops: str = "auto",
    ) -> None:
        super().__init__()
        if crops not in CROP_MODES:
            raise UserError(f"train.crops must be one of {', '.join(CROP_MODES)}, got '{crops}'")
        self.crops = crops
        self.device_crops = False
        self.sources = list(sources)
        self.names = list(names) if names is not None else None
        self.views = dict(views)
        self.batch_size, self.workers, self.seed = int(batch_size), int(workers), int(seed)
        self.weights = None if weights is None else list(weights)
        self.epoch_length = epoch_length
        self.sampler: MixedSampler | None = None
        self.dataset: SeededSamples | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is not None:
            return
        from ssl_radiology.transforms.views import CropBoxesDataset, MultiCropDataset, MultiCropViews

        views = MultiCropViews(**self.views)
        self.view_sizes = views.sizes
        on_gpu = bool(self.trainer and self.trainer.strategy.root_device.type == "cuda")
        self.device_crops = self.crops == "device" or (self.crops == "auto" and on_gpu)
        corpus = ConcatDataset(self.sources)
        if self.device_crops:
            size = max(int(getattr(s, "image_size", 0)) or s[0]["image"].shape[-1] for s in self.sources)
            self.dataset = SeededSamples(CropBoxesDataset(corpus, views, size))
        else:
            self.dataset = SeededSamples(MultiCropDataset(corpus, views))
        trainer = self.trainer
        self.sampler = MixedSampler(
            [len(source) for source in self.sources],  # type: ignore[arg-type]
            self.weights,
            seed=self.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            batch_size=self.batch_size,
            epoch_length=self.epoch_length,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Views go to the device; sampler positions / indices stay on the host, where reading them for
        the sampler's progress costs no device synchronisation."""
        host = {key: batch[key] for key in HOST_KEYS if key in batch}
        rest = {key: value for key, value in batch.items() if key not in host}
        return {**super().transfer_batch_to_device(rest, device, dataloader_idx), **host}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Device-crop path: cut the views of the whole batch on the training device."""
        if "boxes" in batch:
            from ssl_radiology.transforms.views import crop_batch

            batch["views"] = crop_batch(
                batch.pop("image"), batch.pop("boxes"), batch.pop("flips"), self.view_sizes
            )
        return batch

    def train_dataloader(self) -> ResumableLoader:
        assert self.dataset is not None and self.sampler is not None, "setup() runs first"
        on_gpu = bool(self.trainer and self.trainer.strategy.root_device.type == "cuda")
        return ResumableLoader(
            self.dataset,
            batch_size=self.batch_size,
            sampler=self.sampler,
            num_workers=self.workers,
            drop_last=True,
            pin_memory=on_gpu,
            persistent_workers=self.workers > 0,
            prefetch_factor=4 if self.workers > 0 else None,
        )
