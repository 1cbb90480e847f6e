"""``prepare_dataset`` / ``ssl-rad prepare`` / ``PreparedDataset`` on small real DICOM files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.data import get_testdata_file
from test_prepare_support import PHI, ct_block, write_ct_series, write_dicom
from torch.utils.data import DataLoader, DistributedSampler

import ssl_radiology.io
from ssl_radiology.cli import main
from ssl_radiology.data import PreparedDataset, prepare_dataset
from ssl_radiology.data.keys import file_key
from ssl_radiology.data.layout import MANIFEST_COLUMNS
from ssl_radiology.errors import UserError


@pytest.fixture(autouse=True)
def _fixed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_RAD_SALT", raising=False)
    monkeypatch.setenv("SSL_RAD_KEY", "test-installation-key")


def keyed(*rels: str) -> list[str]:
    return [file_key(rel) for rel in rels]


@pytest.fixture
def ct_source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_ct_series(src / "case1", 3, patient_id="PID-1")
    write_ct_series(src / "case2", 2, patient_id="PID-2")
    return src


def cli_argv(source: Path, out: Path) -> list[str]:
    """``ssl-rad prepare`` of ``source`` into ``out``: 32 px, one worker, no progress bar."""
    return [
        "prepare",
        str(source),
        "--out",
        str(out),
        "--image-size",
        "32",
        "--workers",
        "1",
        "--no-progress",
    ]


@pytest.fixture
def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every file the (in-process) decoder opens."""
    calls: list[str] = []
    real = ssl_radiology.io.read_slices

    def counting(path, modality=None, **options):
        calls.append(Path(path).name)
        return real(path, modality, **options)

    monkeypatch.setattr(ssl_radiology.io, "read_slices", counting)
    return calls


def test_ct_round_trip_keeps_hu_geometry_and_manifest(ct_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = prepare_dataset(ct_source, out, image_size=32, workers=1, progress=False)
    assert (summary.slices, summary.files, summary.rejected) == (5, 5, 0)
    ds = PreparedDataset(out)
    assert len(ds) == 5 and list(ds.manifest.columns) == MANIFEST_COLUMNS
    m = ds.manifest
    assert m["file_key"].tolist() == keyed(
        *[f"case1/IM00{k}.dcm" for k in range(3)], "case2/IM000.dcm", "case2/IM001.dcm"
    )
    assert set(m["ext"]) == {".dcm"}
    assert m["patient_key"].nunique() == 2 and m.groupby("file_key")["series_key"].nunique().eq(1).all()
    # 64 × 48 at 0.7 mm → longer side 32 px: 2× smaller, so 1.4 mm per pixel both ways
    assert np.allclose(m["spacing_row"], 1.4) and np.allclose(m["spacing_col"], 1.4)
    assert np.load(out / m["shard"][0], mmap_mode="r").dtype == np.int16
    item = ds[0]
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape == (1, 32, 32)
    assert item["modality"] == "CT" and item["index"] == 0
    expected = ct_block(seed=0).astype(np.float64) - 1024
    # the tissue block (rows 16..47, cols 12..35 at full size) → rows 8..23, cols 4+6..4+17 after resize + pad
    assert torch.all(image[0, 10:22, 12:20] == 60)
    assert torch.all(image[0, :, :4] == -1024) and torch.all(image[0, :, 28:] == -1024)  # padding columns
    assert abs(float(image[0, :, 4:28].mean()) - expected.mean()) < 2  # antialiased resize keeps the mean


def test_xray_is_stretched_to_uint16_and_monochrome1_inverted(tmp_path: Path) -> None:
    gradient = np.tile(np.arange(0, 4000, 100, dtype=np.uint16), (40, 1))  # brighter to the right
    write_dicom(tmp_path / "src" / "m2.dcm", gradient, modality="DX")
    write_dicom(tmp_path / "src" / "m1.dcm", gradient, modality="DX", photometric="MONOCHROME1")
    prepare_dataset(tmp_path / "src", tmp_path / "out", image_size=32, workers=1, progress=False)
    ds = PreparedDataset(tmp_path / "out", modality="DX")
    m1, m2 = ds[0]["image"][0], ds[1]["image"][0]
    assert np.load(tmp_path / "out" / ds.manifest["shard"][0]).dtype == np.uint16
    assert float(m2.min()) == 0 and float(m2.max()) == 65535
    assert m2[16, 30] > m2[16, 2] and m1[16, 30] < m1[16, 2]  # MONOCHROME1 displayed inverted
    assert len(PreparedDataset(tmp_path / "out", modality="CT")) == 0


def test_bad_files_are_rejected_with_reasons_and_never_abort(ct_source: Path, tmp_path: Path) -> None:
    bad = ct_source / "bad"
    bad.mkdir()
    good = (ct_source / "case1" / "IM000.dcm").read_bytes()
    (bad / "truncated.dcm").write_bytes(good[: len(good) - 1000])
    (bad / "empty.dcm").write_bytes(b"")
    (bad / "notes.dcm").write_text("not an image, just a note\n" * 20)
    shutil.copy(get_testdata_file("rtplan.dcm"), bad / "rtplan.dcm")
    shutil.copy(get_testdata_file("SC_rgb_small_odd.dcm"), bad / "colour.dcm")
    summary = prepare_dataset(ct_source, tmp_path / "out", image_size=32, workers=1, progress=False)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert list(rejected.columns) == ["file_key", "ext", "root", "reason"]
    reasons = dict(zip(rejected["file_key"], rejected["reason"], strict=True))
    names = ("truncated.dcm", "empty.dcm", "notes.dcm", "rtplan.dcm", "colour.dcm")
    assert set(reasons) == set(keyed(*[f"bad/{n}" for n in names]))
    assert "empty" in reasons[file_key("bad/empty.dcm")]
    assert "truncated" in reasons[file_key("bad/truncated.dcm")]
    assert "RT" in reasons[file_key("bad/rtplan.dcm")]
    assert "colour" in reasons[file_key("bad/colour.dcm")]
    assert (summary.slices, summary.rejected, summary.files) == (5, 5, 10)
    assert sum(summary.rejected_by_reason.values()) == 5


def test_resume_skips_finished_chunks_and_redoes_changed_ones(
    ct_source: Path, tmp_path: Path, count_reads: list[str]
) -> None:
    out = tmp_path / "out"
    prepare_dataset(ct_source, out, image_size=32, workers=1, chunk_files=2, progress=False)
    assert len(count_reads) == 5
    shard_times = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    count_reads.clear()
    summary = prepare_dataset(ct_source, out, image_size=32, workers=1, chunk_files=2, progress=False)
    assert count_reads == [] and summary.chunks_processed == 0 and summary.slices == 5
    assert shard_times == {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    # a changed input file redoes only its own chunk (files 3+4 = chunk 1: case2/IM000 is the 4th file)
    write_dicom(ct_source / "case2" / "IM000.dcm", ct_block(inside_hu=300), patient_id="PID-2")
    summary = prepare_dataset(ct_source, out, image_size=32, workers=1, chunk_files=2, progress=False)
    assert sorted(count_reads) == ["IM000.dcm", "IM002.dcm"] and summary.chunks_processed == 1
    assert float(PreparedDataset(out)[3]["image"][0, 16, 16]) == 300


def test_interrupted_run_leaves_nothing_trusted_and_resumes(
    ct_source: Path, tmp_path: Path, count_reads: list[str]
) -> None:
    out = tmp_path / "out"
    prepare_dataset(ct_source, out, image_size=32, workers=1, chunk_files=2, progress=False)
    reference = PreparedDataset(out).manifest
    first = PreparedDataset(out)[4]["image"]
    # what a run killed while writing chunk 2 leaves: shard half-written under a temp name, a renamed
    # shard of chunk 1 whose manifest part never appeared, an unfinished prepared.json, no manifest
    info = json.loads((out / "prepared.json").read_text())
    (out / "prepared.json").write_text(json.dumps({**info, "complete": False}))
    (out / "manifest.parquet").unlink()
    (out / "parts" / "chunk-00001.json").unlink()
    (out / "shards" / "chunk-00001-int16.npy").write_bytes(b"garbage")
    (out / "shards" / "chunk-00002-int16.npy.tmp-12345").write_bytes(b"half")
    with pytest.raises(UserError, match="did not finish"):
        PreparedDataset(out)
    count_reads.clear()
    summary = prepare_dataset(ct_source, out, image_size=32, workers=1, chunk_files=2, progress=False)
    assert sorted(count_reads) == ["IM000.dcm", "IM002.dcm"] and summary.chunks_processed == 1
    assert not list(out.rglob("*.tmp-*"))
    pd.testing.assert_frame_equal(PreparedDataset(out).manifest, reference)
    assert torch.equal(PreparedDataset(out)[4]["image"], first)


def test_changed_settings_or_foreign_folder_give_clear_errors(ct_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(ct_source, out, image_size=32, workers=1, salt="s1", progress=False)
    with pytest.raises(UserError, match="--image-size 32"):
        prepare_dataset(ct_source, out, image_size=64, workers=1, salt="s1", progress=False)
    with pytest.raises(UserError, match="sources"):
        prepare_dataset([ct_source / "case1"], out, image_size=32, workers=1, salt="s1", progress=False)
    with pytest.raises(UserError, match="different key"):
        prepare_dataset(ct_source, out, image_size=32, workers=1, salt="s2", progress=False)
    with pytest.raises(UserError, match="not empty"):
        prepare_dataset(ct_source, ct_source / "case1", image_size=32, workers=1, progress=False)
    with pytest.raises(UserError, match="not a prepared dataset"):
        PreparedDataset(ct_source)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no image files found"):
        prepare_dataset(tmp_path / "notes", tmp_path / "out3", image_size=32, workers=1, progress=False)


def test_no_identifier_reaches_any_output_file(ct_source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    prepare_dataset(ct_source, out, image_size=32, workers=1, progress=False)
    secrets = [PHI["PatientName"], "Doe", PHI["PatientBirthDate"], "PID-1", "PID-2"]
    import pydicom

    ds = pydicom.dcmread(ct_source / "case1" / "IM000.dcm")
    secrets += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 5
    for path in files:
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, f"{secret} found in {path}"


def test_same_salt_gives_same_keys_and_two_workers_match_one(ct_source: Path, tmp_path: Path) -> None:
    one = prepare_dataset(ct_source, tmp_path / "one", image_size=32, workers=1, salt="s", progress=False)
    two = prepare_dataset(
        ct_source, tmp_path / "two", image_size=32, workers=2, salt="s", chunk_files=2, progress=False
    )
    assert one.slices == two.slices == 5
    a, b = PreparedDataset(one.out), PreparedDataset(two.out)
    cols = ["file_key", "patient_key", "study_key", "series_key", "spacing_row"]
    pd.testing.assert_frame_equal(a.manifest[cols], b.manifest[cols])
    assert all(torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    other = prepare_dataset(ct_source, tmp_path / "other", image_size=32, workers=1, salt="t", progress=False)
    assert not set(PreparedDataset(other.out).manifest["patient_key"]) & set(a.manifest["patient_key"])


def test_dataloader_workers_and_distributed_sampler_cover_disjoint_indices(
    ct_source: Path, tmp_path: Path
) -> None:
    prepare_dataset(ct_source, tmp_path / "out", image_size=32, workers=1, progress=False)
    ds = PreparedDataset(tmp_path / "out", indices=[0, 1, 2, 3])
    assert ds.manifest["file_key"].tolist()[-1] == file_key("case2/IM000.dcm")
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(ds, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = DataLoader(ds, batch_size=1, sampler=sampler, num_workers=2)
        indices = [int(batch["index"]) for batch in loader]
        assert len(indices) == 2
        seen.append(set(indices))
    assert seen[0].isdisjoint(seen[1]) and seen[0] | seen[1] == {0, 1, 2, 3}


def test_cli_prepare_prints_summary_and_reports_errors(
    ct_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ct_source / "empty.dcm").write_bytes(b"")
    out = ct_source / "prepared"  # inside the source: its own files must not be taken as inputs
    argv = cli_argv(ct_source, out)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert (
        "5 slices (CT 5) from 6 files" in printed
        and "1 files rejected" in printed
        and "empty file" in printed
    )
    assert main(argv) == 0 and "already done" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "missing"), "--out", str(tmp_path / "o2")]) == 2
    assert "source not found" in capsys.readouterr().err


def test_run_killed_mid_chunk_is_resumed_without_redoing_finished_chunks(
    ct_source: Path, tmp_path: Path, count_reads: list[str]
) -> None:
    out = tmp_path / "out"
    # a decoder that hangs on every file after the first chunk, so the kill lands inside chunk 1
    code = f"""
import time
import ssl_radiology.io as io
from ssl_radiology.data import prepare_dataset
real, seen = io.read_slices, []
def slow(path, modality=None, **options):
    seen.append(path)
    if len(seen) > 2:
        time.sleep(30)
    return real(path, modality, **options)
io.read_slices = slow
prepare_dataset({str(ct_source)!r}, {str(out)!r}, image_size=64, workers=1, chunk_files=2, progress=False)
"""  # image_size 64 = the files' own size: no resize, so the subprocess starts without importing torch
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 120
        while not (out / "parts" / "chunk-00000.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "prepare subprocess did not get going"
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "manifest.parquet").exists() and not (out / "parts" / "chunk-00001.json").exists()
    with pytest.raises(UserError, match="did not finish"):
        PreparedDataset(out)
    summary = prepare_dataset(ct_source, out, image_size=64, workers=1, chunk_files=2, progress=False)
    assert len(count_reads) == 3 and summary.chunks_processed == 2 and len(PreparedDataset(out)) == 5


def test_keep_paths_writes_the_map_with_a_warning_and_only_on_request(
    ct_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = cli_argv(ct_source, out)
    assert main(argv) == 0 and not (out / "paths.csv").exists()
    assert main([*argv, "--keep-paths"]) == 0  # on a finished dataset too: nothing is decoded again
    assert "warning: " in capsys.readouterr().err
    paths = pd.read_csv(out / "paths.csv")
    manifest = PreparedDataset(out).manifest
    assert (
        dict(zip(paths["file_key"], paths["path"], strict=True))[manifest["file_key"][0]] == "case1/IM000.dcm"
    )


def _folder_patient(rel: str, sl: object) -> tuple[str | None, str | None]:
    """A dataset-specific identity (as CheXpert's patient folder): module level, so workers can unpickle it."""
    parts = rel.split("/")
    return (f"toy/{parts[0]}", f"toy/{parts[0]}/{parts[1]}") if len(parts) > 2 else (None, None)


@pytest.mark.parametrize("workers", [1, 2])
def test_identify_gives_dataset_patient_keys_and_include_filters_files(tmp_path: Path, workers: int) -> None:
    from PIL import Image

    from ssl_radiology.data.keys import patient_key, study_key

    src = tmp_path / "src"
    gradient = (np.arange(64 * 48).reshape(64, 48) % 251).astype(np.uint8)
    for rel in ("p1/s1/a.png", "p1/s2/b.png", "p2/s1/c.png", "p2/s1/test_only.png", "loose.png"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(gradient).save(src / rel)
    summary = prepare_dataset(
        src, tmp_path / "out", image_size=32, workers=workers, progress=False, chunk_files=2,
        identify=_folder_patient, include=lambda rel: "test_only" not in rel,
    )  # fmt: skip
    assert summary.files == 4 and summary.slices == 4 and summary.rejected == 0
    m = PreparedDataset(tmp_path / "out").manifest.set_index("file_key")
    assert m.loc[file_key("p1/s1/a.png"), "patient_key"] == patient_key("toy/p1")
    assert m.loc[file_key("p1/s2/b.png"), "study_key"] == study_key("toy/p1/s2")
    assert m.loc[file_key("p2/s1/c.png"), "patient_key"] == patient_key("toy/p2")
    assert m.loc[file_key("loose.png"), "patient_key"] == patient_key(
        "path:loose"
    )  # no IDs: the path stands in
