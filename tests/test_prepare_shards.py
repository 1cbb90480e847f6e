"""``ssl-rad prepare --shard I/N`` on several processes at once, then ``--merge``: equal to one process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_prepare_support import write_ct_series, write_dicom

from ssl_radiology.cli import main
from ssl_radiology.data import PreparedDataset, prepare_dataset
from ssl_radiology.data.plan import parse_shard, part_chunks
from ssl_radiology.errors import UserError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_RAD_SALT", raising=False)
    monkeypatch.setenv("SSL_RAD_KEY", "shard-test-key")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_ct_series(src / "a", 4, patient_id="A")  # one series cut over chunks of 2 files (two parts)
    write_ct_series(src / "b", 3, patient_id="B")
    write_dicom(src / "c" / "x.dcm", np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (40, 1)), "DX")
    (src / "c" / "bad.dcm").write_bytes(b"not an image" * 20)
    return src


def test_partition_is_deterministic_round_robin_and_complete() -> None:
    assert parse_shard("2/5") == (2, 5)
    for bad in ("5/5", "-1/3", "1", "a/b", "1/0"):
        with pytest.raises(UserError, match="--shard must be I/N"):
            parse_shard(bad)
    parts = [part_chunks(11, (i, 3)) for i in range(3)]
    assert parts[0] == [0, 3, 6, 9] and sorted(c for part in parts for c in part) == list(range(11))


def test_three_concurrent_parts_then_merge_equal_one_process(source: Path, tmp_path: Path) -> None:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    prepare_dataset(source, single, image_size=32, workers=1, chunk_files=2, progress=False)
    options = ["--image-size", "32", "--chunk-files", "2"]
    # the SLURM job-array script itself, as three array tasks of one job running at once
    key_file = tmp_path / "shared.key"
    key_file.write_text("shard-test-key\n")
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "SLURM_SUBMIT_DIR": str(REPO),
        "SSL_RAD_KEY_FILE": str(key_file),
    }
    env |= {"SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "2", "SLURM_CPUS_PER_TASK": "1"}
    env.pop("SSL_RAD_KEY")
    script = [str(REPO / "scripts" / "slurm_prepare.sh"), str(source), "--out", str(sharded), *options]
    procs = [subprocess.Popen(script, env={**env, "SLURM_ARRAY_TASK_ID": str(i)}) for i in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    options += ["--workers", "1", "--no-progress"]
    assert main(["prepare", str(source), "--out", str(sharded), *options, "--merge"]) == 0
    a, b = PreparedDataset(single), PreparedDataset(sharded)
    pd.testing.assert_frame_equal(a.manifest, b.manifest)  # same rows in the same order, not only same set
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    assert pd.read_csv(single / "rejected.csv").equals(pd.read_csv(sharded / "rejected.csv"))
    # merge is idempotent: nothing to redo, same dataset
    summary = prepare_dataset(
        source, sharded, image_size=32, workers=1, chunk_files=2, progress=False, merge=True
    )
    assert summary.chunks_processed == 0 and summary.slices == len(a)


def test_merge_names_the_parts_that_did_not_run(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for i in (0, 2):
        summary = prepare_dataset(
            source, out, image_size=32, workers=1, chunk_files=2, progress=False, shard=(i, 3)
        )
        assert not summary.complete
    with pytest.raises(UserError, match=r"not done \(parts 1/3\): chunk 1"):
        prepare_dataset(source, out, image_size=32, workers=1, chunk_files=2, progress=False, merge=True)
    with pytest.raises(UserError, match="did not finish"):
        PreparedDataset(out)
