"""Ingest benchmark: decoding DICOM vs reading a prepared dataset, all measured in one run on the same files.

Writes ``--files`` uncompressed 512² CT DICOMs (synthetic body + noise, pydicom), then times on one core:

1. raw pydicom ``dcmread`` + ``pixel_array`` + rescale (files/s) — pydicom's own decoding path;
2. MONAI ``LoadImage(reader="PydicomReader")`` (files/s) — the common baseline;
3. ``ssl_radiology.io.read_slices`` (files/s) — our reader alone (header, metadata, HU pixels);
4. ``prepare_dataset(workers=1)`` (files/s, including resize to ``--size``, int16 conversion and writing;
   one warm-up call on a single file first, as MONAI gets one: imports are not per-file work);
5. ``PreparedDataset`` random-order reads (slices/s) — what a training loader pays per sample;
6. the same slices as WebDataset tar shards, streamed sequentially (slices/s; a tar stream cannot
   random-access, so a global shuffle needs a shuffle buffer instead);
7. compiled DICOM parsers, when installed (``dicomsdl``, ``python-gdcm``): files/s for header + HU pixels,
   the per-file cost split (header parse vs pixels) against pydicom, and **exactness**: whether their
   rescaled pixels are bit-identical to ``read_slices`` on the real pydicom test files the reader tests
   use (compressed ones included). A compiled path may only replace pydicom where it is bit-identical.

Usage: ``python scripts/bench/ingest.py [--files 200] [--size 256] [--reads 10000] [--stream 4000]``.
Timings on a shared CPU are noisy: rates are printed per wall second and per CPU-second of the process;
compare the ratios, not absolute numbers across machines.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_files(folder: Path, count: int, size: int = 512, seed: int = 0) -> list[Path]:
    """``count`` slices of one synthetic CT series: an elliptic soft-tissue body with lungs, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1 : 1 : complex(size), -1 : 1 : complex(size)]
    body = (xx / 0.85) ** 2 + (yy / 0.65) ** 2 < 1
    lungs = ((np.abs(xx) - 0.4) / 0.25) ** 2 + (yy / 0.4) ** 2 < 1
    study, series = generate_uid(), generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        hu = np.where(body, 40.0, -1000.0)
        hu[lungs & body] = -850.0
        hu += rng.normal(0, 15, hu.shape)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "CT", "BENCH"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelSpacing = [0.7, 0.7]
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, float(k)], [1, 0, 0, 0, 1, 0]
        ds.PixelData = np.rint(np.clip(hu, -1024, 3071) + 1024).astype(np.int16).tobytes()
        path = folder / f"IM{k:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@dataclass
class Rate:
    """Items per second of wall time and per second of this process's CPU time (user + system).

    On a shared machine the wall figure drops with the load of other processes; the CPU figure is what one
    dedicated core would do (it misses only time spent waiting for the disk, small with a warm page cache).
    """

    wall: float
    cpu: float

    def __str__(self) -> str:
        return f"{self.wall:10.1f} /s wall {self.cpu:10.1f} /s per CPU-second"


def per_second(count: int, work: Callable[[], object]) -> Rate:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return Rate(count / (time.perf_counter() - wall), count / max(time.process_time() - cpu, 1e-9))


def bench_pydicom(paths: list[Path]) -> Rate:
    def run() -> None:
        for path in paths:
            ds = pydicom.dcmread(path)
            _ = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)

    return per_second(len(paths), run)


def bench_monai(paths: list[Path]) -> Rate:
    import warnings

    from monai.transforms import LoadImage

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loader = LoadImage(reader="PydicomReader", image_only=True)
        loader(paths[0])  # reader set-up outside the timing

        def run() -> None:
            for path in paths:
                _ = loader(path)

        return per_second(len(paths), run)


def bench_reader(paths: list[Path]) -> Rate:
    from ssl_radiology.io import read_slices

    def run() -> None:
        for path in paths:
            _ = read_slices(path)

    return per_second(len(paths), run)


def bench_prepare(src: Path, out: Path, size: int, n_files: int, warm_up: Path) -> Rate:
    """One-core ``prepare`` of ``src``, after one warm-up run on a single file (imports, first calls)."""
    import shutil

    from ssl_radiology.data.prepare import prepare_dataset

    (warm_up / "src").mkdir(parents=True)
    shutil.copy(next(src.glob("*.dcm")), warm_up / "src")
    prepare_dataset(warm_up / "src", warm_up / "out", image_size=size, workers=1, progress=False)
    return per_second(n_files, lambda: prepare_dataset(src, out, image_size=size, workers=1, progress=False))


def bench_prepared_reads(root: Path, reads: int) -> Rate:
    from ssl_radiology.data.prepared import PreparedDataset

    ds = PreparedDataset(root)
    order = np.random.default_rng(0).integers(0, len(ds), size=reads)
    ds[0]  # open the memmap outside the timing (a worker does it once)

    def run() -> None:
        for i in order:  # each item is dropped after use, as in a loader (a list of all would measure malloc)
            _ = ds[int(i)]["image"]

    return per_second(reads, run)


def bench_webdataset(root: Path, tar_dir: Path, passes: int) -> Rate:
    """Same slices as ``.npy`` members of tar shards, decoded to float32 tensors while streaming."""
    import webdataset as wds

    from ssl_radiology.data.prepared import PreparedDataset

    ds = PreparedDataset(root)
    tar_dir.mkdir(parents=True, exist_ok=True)
    with wds.ShardWriter(str(tar_dir / "shard-%05d.tar"), maxcount=1000, verbose=0) as sink:
        for i in range(len(ds)):
            buffer = io.BytesIO()
            np.save(buffer, ds[i]["image"][0].numpy().astype(np.int16))
            sink.write({"__key__": f"{i:08d}", "npy": buffer.getvalue()})
    urls = [str(p) for p in sorted(tar_dir.glob("*.tar"))]

    def run() -> None:
        for _ in range(passes):
            stream = wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode()
            for sample in stream:
                _ = torch.from_numpy(sample["npy"].astype(np.float32))[None]

    return per_second(passes * len(ds), run)


#: grayscale pydicom test files (shipped with pydicom, no download): uncompressed little / big endian, implicit
#: VR, deflated, no file meta, RLE, JPEG-LS, JPEG 2000, JPEG extended; the CR is MONOCHROME1 (ours inverts it)
EXACTNESS_FILES = (
    "CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_expb.dcm",
    "MR_small_padded.dcm", "ExplVR_BigEnd.dcm", "image_dfl.dcm", "no_meta.dcm", "MR_small_RLE.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "JPEGLSNearLossless_16.dcm", "MR_small_jp2klossless.dcm", "JPEG2000.dcm",
    "693_J2KI.dcm", "J2K_pixelrep_mismatch.dcm", "JPGExtended.dcm", "dicomdirtests/77654033/CR1/6154",
)  # fmt: skip


def _dicomsdl_hu(path: Path) -> np.ndarray:
    import dicomsdl

    dcm = dicomsdl.open(str(path))
    _ = [getattr(dcm, k) for k in ("Modality", "PatientID", "StudyInstanceUID", "SeriesInstanceUID")]
    _ = [getattr(dcm, k) for k in ("PixelSpacing", "ImagePositionPatient", "ImageOrientationPatient")]
    return dcm.pixelData()  # float32 after Rescale Slope / Intercept


def _gdcm_hu(path: Path) -> np.ndarray:
    import gdcm

    reader = gdcm.ImageReader()
    reader.SetFileName(str(path))
    if not reader.Read():
        raise ValueError("gdcm cannot read it")
    image = reader.GetImage()
    dims = [image.GetDimension(i) for i in range(image.GetNumberOfDimensions())][::-1]
    fmt = image.GetPixelFormat()
    kind = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u2", 5: "i2", 8: "u4", 9: "i4"}[fmt.GetScalarType()]
    stored = np.frombuffer(image.GetBuffer().encode("utf-8", "surrogateescape"), dtype=kind).reshape(dims)
    return (stored.astype(np.float64) * image.GetSlope() + image.GetIntercept()).astype(np.float32)


def compiled_parsers() -> dict[str, Callable[[Path], np.ndarray]]:
    """The compiled DICOM parsers installed here (none is a dependency of the project)."""
    import importlib.util

    found = {}
    if importlib.util.find_spec("dicomsdl"):
        found["dicomsdl"] = _dicomsdl_hu
    if importlib.util.find_spec("gdcm"):
        found["python-gdcm"] = _gdcm_hu
    return found


def exactness(decode: Callable[[Path], np.ndarray]) -> dict[str, str]:
    """Per test file: "identical", "differs (max |d|)", "refused by ours" or the parser's failure."""
    from pydicom.data import get_testdata_file

    from ssl_radiology.io import ReadError, read_slices

    verdicts = {}
    for name in EXACTNESS_FILES:
        path = Path(get_testdata_file("CT_small.dcm")).parent / name
        try:
            ours = np.stack([s.pixels for s in read_slices(path)])
        except ReadError:
            verdicts[name] = "refused by ours"
            continue
        try:
            theirs = np.asarray(decode(path), dtype=np.float32).reshape(ours.shape)
        except Exception as exc:
            verdicts[name] = f"fails ({type(exc).__name__})"
            continue
        same = np.array_equal(ours, theirs)
        verdicts[name] = "identical" if same else f"differs (max |d| {np.abs(ours - theirs).max():g})"
    return verdicts


def bench_header(paths: list[Path]) -> Rate:
    """pydicom's header parse alone (what 80 % of read_slices' per-file time goes to)."""

    def run() -> None:
        for path in paths:
            _ = pydicom.dcmread(path, stop_before_pixels=True)

    return per_second(len(paths), run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="number of 512² CT DICOM files")
    parser.add_argument("--size", type=int, default=256, help="prepared image size")
    parser.add_argument("--reads", type=int, default=10000, help="random-order reads of the prepared dataset")
    parser.add_argument("--stream", type=int, default=4000, help="slices streamed from the WebDataset shards")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="ssl-rad-bench-") as tmp:
        work = Path(tmp)
        paths = write_ct_files(work / "dicom", args.files)
        for path in paths:  # warm the page cache so every reader starts equal
            path.read_bytes()
        raw = bench_pydicom(paths)
        monai = bench_monai(paths)
        reader = bench_reader(paths)
        prepare = bench_prepare(work / "dicom", work / "prepared", args.size, len(paths), work / "warm")
        reads = bench_prepared_reads(work / "prepared", args.reads)
        stream = bench_webdataset(work / "prepared", work / "wds", max(1, args.stream // len(paths)))
        header = bench_header(paths)
        compiled = {
            name: per_second(len(paths), lambda f=f: all(f(p) is not None for p in paths))
            for name, f in compiled_parsers().items()
        }
    print(
        f"{args.files} uncompressed 512² CT DICOM files, prepared at {args.size}², one process, 1 torch thread"
    )
    print(f"  pydicom decode + rescale        {raw}  files")
    print(f"  MONAI LoadImage(PydicomReader)  {monai}  files")
    print(f"  ssl_radiology read_slices       {reader}  files (header, metadata, HU float32)")
    print(f"  prepare --workers 1             {prepare}  files (decode + resize + int16 + write)")
    print(f"  PreparedDataset random reads    {reads}  slices")
    print(f"  WebDataset tar, sequential      {stream}  slices (cannot random-access)")
    print(f"  pydicom header only             {header}  files (dcmread stop_before_pixels)")
    for name, rate in compiled.items():
        print(
            f"  {name + ' header + HU':31s} {rate}  files ({rate.cpu / reader.cpu:.2f}x read_slices per CPU-s)"
        )
    print("ratios (wall / CPU):")
    print(
        f"  prepare / MONAI                 {prepare.wall / monai.wall:6.2f}x / {prepare.cpu / monai.cpu:6.2f}x (target >= 5x)"
    )
    print(
        f"  prepare / raw pydicom           {prepare.wall / raw.wall:6.2f}x / {prepare.cpu / raw.cpu:6.2f}x"
    )
    print(
        f"  read_slices / MONAI             {reader.wall / monai.wall:6.2f}x / {reader.cpu / monai.cpu:6.2f}x"
    )
    print(
        f"  PreparedDataset / WebDataset    {reads.wall / stream.wall:6.2f}x / {reads.cpu / stream.cpu:6.2f}x"
    )
    print(f"  PreparedDataset / raw pydicom   {reads.wall / raw.wall:6.1f}x / {reads.cpu / raw.cpu:6.1f}x")
    verdict = "yes" if reads.cpu >= 5000 else "NO"
    print(f"prepared reads >= 5000 slices per CPU-second (target): {verdict} ({reads.cpu:.0f})")
    print(
        f"per-file CPU cost of read_slices: {1e3 / reader.cpu:.2f} ms, of which pydicom header {1e3 / header.cpu:.2f} ms"
    )
    for name, decode in compiled_parsers().items():
        verdicts = exactness(decode)
        same = sum(v == "identical" for v in verdicts.values())
        compared = sum(not v.startswith("refused") for v in verdicts.values())
        print(f"exactness of {name} vs read_slices: {same} / {compared} test files bit-identical")
        for file, verdict in verdicts.items():
            print(f"    {file:32s} {verdict}")


if __name__ == "__main__":
    main()
