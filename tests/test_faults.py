"""Fault injection for ``prepare`` and prepared datasets: kills, full disks, hostile files, damaged data.

Each test is one trial of the reliability issue's tally: a *fault* (the environment fails: kill -9, a full
disk, a concurrent writer, damaged files) must be survived — nothing finished is lost, the re-run is
identical, damage is named and repaired — and a *bad input* (a hostile file, a CLI misuse) must end in one
clear line or a ``rejected.csv`` row, never a traceback, a hang or a silent drop. The module prints
``faults survived / tried`` and ``bad inputs with a clear error / tried`` when it finishes (``pytest -s``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, RLELossless, generate_uid
from test_prepare_support import PHI, write_ct_series

from ssl_radiology.cli import main
from ssl_radiology.data import PreparedDataset, prepare_dataset
from ssl_radiology.data.keys import file_key
from ssl_radiology.errors import UserError
from ssl_radiology.io import ReadError, read_slices

PACS_FOLDER = "MUSTERMANN^MAX^4711_19800101"  # NAME^ID_BIRTHDATE, as PACS exports name folders
TALLY: Counter[str] = Counter()


@pytest.fixture(autouse=True, scope="module")
def _report() -> Iterator[None]:
    yield
    faults, bad = TALLY["fault"], TALLY["bad"]
    sys.__stderr__.write(
        f"\nfault injection: faults survived {faults} / {TALLY['fault-tried']}, "
        f"bad inputs with a clear error {bad} / {TALLY['bad-tried']}\n"
    )


@pytest.fixture
def fault() -> Iterator[None]:
    TALLY["fault-tried"] += 1
    yield
    TALLY["fault"] += 1


@pytest.fixture
def bad(request: pytest.FixtureRequest) -> Iterator[None]:
    TALLY["bad-tried"] += getattr(request, "param", 1)
    yield
    TALLY["bad"] += getattr(request, "param", 1)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSL_RAD_SALT", raising=False)
    monkeypatch.setenv("SSL_RAD_KEY", "fault-injection-key")


@pytest.fixture
def source(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    write_ct_series(src / PACS_FOLDER / "series1", 3, patient_id="PID-1")
    write_ct_series(src / "case2", 2, patient_id="PID-2")
    return src


def _prepare(src: Path, out: Path, **options) -> object:
    return prepare_dataset(
        src, out, image_size=32, workers=options.pop("workers", 1), progress=False, **options
    )


def _same(a: Path, b: Path) -> None:
    """Two prepared datasets hold the same rows and the same pixels."""
    da, db = PreparedDataset(a), PreparedDataset(b)
    pd.testing.assert_frame_equal(da.manifest, db.manifest)
    assert all(torch.equal(da[i]["image"], db[i]["image"]) for i in range(len(da)))


def _rle_bomb(path: Path, side: int = 65535) -> Path:
    """A few-KB RLE Lossless CT whose header claims side × side 16-bit pixels (8 GB to decode)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit, ds.PixelRepresentation = 15, 0
    header = (2).to_bytes(4, "little") + (64).to_bytes(4, "little") + (3064).to_bytes(4, "little") + bytes(52)
    ds.PixelData = encapsulate([header + bytes([127, 0] * 1500) + bytes([127, 0] * 1500)])
    ds["PixelData"].VR = "OB"
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


# --------------------------------------------------------------------------------------------- faults
def test_kill_9_of_prepare_with_workers_leaves_no_orphans_and_rerun_is_identical(
    source: Path, tmp_path: Path, fault: None
) -> None:
    out, reference = tmp_path / "out", tmp_path / "reference"
    _prepare(source, reference, chunk_files=2)
    # the real CLI in a subprocess, with a decoder that slows down after the first chunk so the kill lands
    # while both pool workers are busy
    code = f"""
import sys, time
import ssl_radiology.io as io
real, seen = io.read_slices, []
def slow(path, modality=None, **options):
    seen.append(path)
    if len(seen) > 1:
        time.sleep(0.3)
    return real(path, modality, **options)
io.read_slices = slow
from ssl_radiology.cli import main
sys.exit(main(["prepare", {str(source)!r}, "--out", {str(out)!r}, "--image-size", "32", "--workers", "2",
               "--chunk-files", "2", "--no-progress"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": "1"})
    children: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(children) < 2 or not (out / "parts" / "chunk-00000.json").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "prepare did not get going"
            children = _children(proc.pid)
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in children if _alive(pid)], "decoder processes outlived their parent"
    with pytest.raises(UserError, match="did not finish"):
        PreparedDataset(out)
    summary = _prepare(source, out, chunk_files=2)
    assert summary.chunks - summary.chunks_processed >= 1  # the finished chunk was kept
    _same(out, reference)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.extend(int(child) for child in (task / "children").read_text().split())
        except OSError:  # a thread that ended while we looked
            continue
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_full_disk_is_one_clear_error_and_the_rerun_finishes(
    source: Path, tmp_path: Path, fault: None
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        for i in range(40):  # enough slices that the shards cannot fit
            write_ct_series(source / f"more{i:02d}", 1, patient_id=f"P{i}")
        with pytest.raises(UserError, match=r"disk full while writing .*: free \d+ MB"):
            _prepare(source, disk / "out", chunk_files=8)
        assert not list((disk / "out").rglob("*.tmp-*"))
    finally:
        subprocess.run(["umount", str(disk)], check=True)
    summary = _prepare(source, tmp_path / "roomy", chunk_files=8)
    assert summary.slices == 45


def test_a_numpy_short_write_reads_as_disk_full(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: None
) -> None:
    def short_write(*args, **kwargs):
        raise OSError("524288 requested and 225216 written")

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(UserError, match=r"disk full while writing .*chunk-00000-int16\.npy: free \d+ MB"):
        _prepare(source, tmp_path / "out")


def test_second_writer_on_one_folder_is_refused(source: Path, tmp_path: Path, fault: None) -> None:
    from filelock import FileLock

    out = tmp_path / "out"
    out.mkdir()
    with FileLock(str(out / ".prepare.lock")), pytest.raises(UserError, match="another 'ssl-rad prepare'"):
        _prepare(source, out)


@pytest.mark.parametrize(
    "damage", ["truncate-manifest", "flip-manifest-footer", "truncate-shard", "garbage-marker", "delete-rows"]
)
def test_damaged_dataset_is_named_by_readers_and_repaired_by_rerun(
    source: Path, tmp_path: Path, damage: str, fault: None
) -> None:
    out, reference = tmp_path / "out", tmp_path / "reference"
    _prepare(source, reference, chunk_files=2)
    _prepare(source, out, chunk_files=2)
    target = {
        "truncate-manifest": out / "manifest.parquet",
        "flip-manifest-footer": out / "manifest.parquet",
        "truncate-shard": out / "shards" / "chunk-00001-int16.npy",
        "garbage-marker": out / "parts" / "chunk-00002.json",
        "delete-rows": out / "parts" / "chunk-00000.parquet",
    }[damage]
    if damage == "delete-rows":
        target.unlink()
    elif damage == "garbage-marker":
        target.write_text("{not json")
    elif damage == "flip-manifest-footer":  # same size: only the Parquet footer check can see it
        data = bytearray(target.read_bytes())
        data[-6] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        target.write_bytes(target.read_bytes()[:200])
    if damage.startswith(("truncate", "flip")):
        with pytest.raises(UserError, match=rf"{target.name}: damaged prepared data"):
            dataset = PreparedDataset(out)
            [dataset[i] for i in range(len(dataset))]
    summary = _prepare(source, out, chunk_files=2)
    assert summary.chunks_processed == (0 if "manifest" in damage else 1)
    _same(out, reference)


def test_flipped_bytes_are_found_by_verify_and_repaired(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: None
) -> None:
    out = tmp_path / "out"
    _prepare(source, out, chunk_files=2)
    reference = PreparedDataset(out)[0]["image"].clone()
    shard = out / "shards" / "chunk-00000-int16.npy"
    data = bytearray(shard.read_bytes())
    data[-5] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["prepare", "--verify", str(out)]) == 2
    captured = capsys.readouterr()
    assert "chunk-00000-int16.npy: content changed" in captured.out and captured.err.startswith("error: ")
    assert _prepare(source, out, chunk_files=2).chunks_processed == 0  # sizes alone cannot see it
    summary = _prepare(source, out, chunk_files=2, verify=True)
    assert summary.chunks_processed == 1 and any("checksum" in r for r in summary.repaired)
    assert main(["prepare", "--verify", str(out)]) == 0
    assert torch.equal(PreparedDataset(out)[0]["image"], reference)


# --------------------------------------------------------------------------------------------- bad inputs
def test_huge_claim_rle_dicom_is_refused_before_decoding(tmp_path: Path, bad: None) -> None:
    bomb = _rle_bomb(tmp_path / "src" / "bomb.dcm")
    assert bomb.stat().st_size < 10_000
    started = time.monotonic()
    with pytest.raises(ReadError, match=r"65535 × 65535 pixels would need .* over the limit"):
        read_slices(bomb, max_bytes=256 * 2**20)
    write_ct_series(tmp_path / "src" / "ok", 1)
    summary = _prepare(tmp_path / "src", tmp_path / "out")  # the default limit (capped at 4 GiB) applies
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert summary.slices == 1 and "over the limit" in rejected["reason"][0]
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("bad", [5], indirect=True)  # FIFO, broken link, self link, folder loop, folder link
def test_fifo_device_and_links_are_accounted_for_and_never_opened(tmp_path: Path, bad: None) -> None:
    src = tmp_path / "src"
    write_ct_series(src / "real", 2)
    os.mkfifo(src / "pipe.dcm")
    (src / "broken.dcm").symlink_to(src / "nowhere.dcm")
    (src / "self.dcm").symlink_to(src / "self.dcm")
    (src / "real" / "loop").symlink_to(src)  # a folder link back to the root
    outside = tmp_path / "elsewhere" / "series"
    write_ct_series(outside, 3)
    (src / "linked").symlink_to(outside)  # a symlinked series folder: followed once
    summary = _prepare(src, tmp_path / "out")
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    reasons = dict(zip(rejected["file_key"], rejected["reason"], strict=True))
    assert "FIFO" in reasons[file_key("pipe.dcm")]
    assert "broken symbolic link" in reasons[file_key("broken.dcm")]
    assert "loop" in reasons[file_key("self.dcm")]
    assert "already read" in reasons[file_key("real/loop")]
    assert summary.slices == 5 and summary.files == 9 and summary.rejected == 4


@pytest.mark.parametrize("bad", [2], indirect=True)
def test_unreadable_folder_and_non_utf8_name_are_accounted_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bad: None
) -> None:
    src = tmp_path / "src"
    write_ct_series(src / "ok", 1)
    locked = src / "locked"
    write_ct_series(locked, 1)
    raw_name = os.fsencode(src / "ok") + b"/caf\xe9.dcm"  # Latin-1 bytes: not UTF-8
    shutil.copy(src / "ok" / "IM000.dcm", raw_name)
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the folder unreadable the way a mount would
        real_scandir = os.scandir

        def scandir(path):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        with pytest.warns(UserWarning, match=r"paths\.csv maps file keys back to file paths"):
            summary = _prepare(src, tmp_path / "out", keep_paths=True)
    finally:
        locked.chmod(0o755)
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert rejected["reason"].tolist() == ["folder unreadable (Permission denied)"]
    assert rejected["file_key"][0] == file_key("locked")
    manifest = PreparedDataset(tmp_path / "out").manifest
    assert file_key(b"ok/caf\xe9.dcm") in set(manifest["file_key"]) and summary.slices == 2
    assert "ok/caf\\xe9.dcm" in (tmp_path / "out" / "paths.csv").read_text()


@pytest.mark.parametrize(
    "bad", [3], indirect=True
)  # PACS folder name, a NIfTI and a PNG whose errors quote paths
def test_no_identifier_in_any_output_byte_even_from_error_texts(tmp_path: Path, bad: None) -> None:
    src = tmp_path / "src"
    write_ct_series(src / PACS_FOLDER / "s1", 2, patient_id="PID-1")
    (src / PACS_FOLDER / "s1" / "broken.nii.gz").write_bytes(b"\x1f\x8b" + b"x" * 400)  # nibabel quotes paths
    (src / PACS_FOLDER / "s1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 400)  # so does Pillow
    out = tmp_path / "out"
    summary = _prepare(src, out)
    assert summary.rejected == 2
    secrets = [
        PACS_FOLDER,
        "MUSTERMANN",
        "4711",
        "19800101",
        PHI["PatientName"],
        PHI["PatientBirthDate"],
        "PID-1",
    ]
    secrets.append("broken")  # file names below SRC (prepared.json names SRC itself, which the user chose)
    for path in (p for p in out.rglob("*") if p.is_file()):
        data = path.read_bytes()
        assert not [s for s in secrets if s.encode() in data], path


CLI_MISUSES = [
    (["--chunk-files", "0"], "--chunk-files must be at least 1"),
    (["--chunk-files", "-3"], "--chunk-files must be at least 1"),
    (["--workers", "-1"], "--workers must be 0 or more"),
    (["--image-size", "4"], "--image-size must be at least 8"),
    (["--max-image-mb", "0"], "--max-image-mb must be a positive"),
    (["--shard", "3/3"], "--shard must be I/N"),
    (["--shard", "one"], "--shard must be I/N"),
    (["--shard", "0/2", "--merge"], "--shard and --merge are two steps"),
]


@pytest.mark.parametrize("bad", [len(CLI_MISUSES) + 5], indirect=True)
def test_cli_misuses_are_one_line_before_any_work(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: None
) -> None:
    out = tmp_path / "never"
    for extra, message in CLI_MISUSES:
        assert main(["prepare", str(source), "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, (extra, err)
        assert not out.exists(), extra
    with pytest.raises(SystemExit):  # argparse: an unknown modality is refused with the valid choices
        main(["prepare", str(source), "--out", str(out), "--modality", "xyz"])
    assert "invalid choice: 'XYZ'" in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for argv, message in (
        (["prepare", str(source), "--out", str(a_file)], "is a file, not a folder"),
        (["prepare", str(source)], "prepare needs --out"),
        (["prepare", "--verify", str(source)], "is not a prepared dataset"),
        (["prepare", str(source), "--out", str(out), "--merge"], "cannot merge"),
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, (argv, err)


def test_damaged_info_file_is_one_clear_line(source: Path, tmp_path: Path, bad: None) -> None:
    out = tmp_path / "out"
    _prepare(source, out)
    (out / "prepared.json").write_text("[1, 2")
    with pytest.raises(UserError, match=r"prepared\.json: damaged prepared data"):
        PreparedDataset(out)
    with pytest.raises(UserError, match=r"prepared\.json: unreadable"):
        _prepare(source, out)
    json.loads((tmp_path / "out" / "integrity.json").read_text())
