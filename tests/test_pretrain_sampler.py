"""MixedSampler: seeded mixing by weight, disjoint DDP shards, exact mid-epoch resume; schedules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ssl_radiology.errors import UserError
from ssl_radiology.methods.schedules import cosine, linear_warmup, warmup_cosine
from ssl_radiology.training.data import MixedSampler, mixture_counts


def test_mixture_counts_follow_weights_and_sum_to_total():
    assert mixture_counts([10, 90], None, 100) == [10, 90]
    assert mixture_counts([10, 90], [0.5, 0.5], 101) in ([51, 50], [50, 51])
    assert sum(mixture_counts([3, 5, 7], [0.2, 0.3, 0.5], 37)) == 37


def test_weighted_epoch_draws_each_source_in_proportion_without_repeats_until_exhausted():
    sampler = MixedSampler([20, 200], [0.5, 0.5], seed=3, epoch_length=100, batch_size=10)
    order = sampler.global_order(0)
    small = order[order < 20]
    assert len(order) == 100 and len(small) == 50
    # the small source is repeated (50 draws from 20 slices): each slice 2 or 3 times
    assert set(np.bincount(small, minlength=20).tolist()) <= {2, 3}
    large = order[order >= 20]
    assert len(set(large.tolist())) == 50  # 50 of 200: no repeats
    assert np.array_equal(
        order, MixedSampler([20, 200], [0.5, 0.5], seed=3, epoch_length=100).global_order(0)
    )
    assert not np.array_equal(order, sampler.global_order(1))


def test_ranks_get_disjoint_equal_shards_covering_the_epoch():
    shards = []
    for rank in range(3):
        sampler = MixedSampler([31, 17], seed=1, num_replicas=3, rank=rank, batch_size=4)
        sampler.set_epoch(2)
        shards.append([index for _, index, _ in sampler])
    assert all(len(s) == len(shards[0]) == 16 for s in shards)  # 48 // (3 × 4) × 4
    flat = list(itertools.chain(*shards))
    assert len(set(flat)) == len(flat)


def test_resume_skips_exactly_the_consumed_samples_with_the_same_seeds():
    full = list(MixedSampler([40], seed=5, batch_size=4))
    resumed = MixedSampler([40], seed=5, batch_size=4)
    resumed.load_state_dict({"epoch": 0, "consumed": 12})
    assert len(resumed) == 40  # Lightning counts the resumed epoch's batches from the restored progress
    assert list(resumed) == full[12:]
    assert list(resumed) == full  # the skip applies to the first iteration only


def test_finished_epoch_resumes_with_the_next_epoch():
    sampler = MixedSampler([40], seed=5, batch_size=4)
    sampler.load_state_dict({"epoch": 0, "consumed": 40})
    nxt = MixedSampler([40], seed=5, batch_size=4)
    nxt.set_epoch(1)
    assert sampler.epoch == 1 and list(sampler) == list(nxt)


def test_bad_weights_and_tiny_epochs_are_user_errors():
    with pytest.raises(UserError, match="--weights"):
        MixedSampler([10, 10], [1.0])
    with pytest.raises(UserError, match="global batch"):
        MixedSampler([6], batch_size=4, num_replicas=2)


def test_schedules_warm_up_then_decay_to_the_final_value():
    lrs = [warmup_cosine(s, 10, 1.0, 0.1, 3) for s in range(10)]
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:])) and lrs[-1] == pytest.approx(0.1)
    assert warmup_cosine(0, 2, 1.0, 0.0, warmup_steps=50) == pytest.approx(0.5)  # warm-up clipped to the run
    assert cosine(0, 100, 0.996, 1.0) == pytest.approx(0.996) and cosine(99, 100, 0.996, 1.0) == 1.0
    assert (
        linear_warmup(5, 10, 0.04, 0.07) == pytest.approx(0.055) and linear_warmup(10, 10, 0.04, 0.07) == 0.07
    )


def test_unweighted_epochs_longer_or_shorter_than_the_corpus_mix_sources_by_size():
    long = MixedSampler([10, 30], seed=0, epoch_length=80).global_order(0)
    assert len(long) == 80 and (long < 10).sum() == 20
    assert len(list(MixedSampler([10, 30], seed=0, epoch_length=12, batch_size=4))) == 12
