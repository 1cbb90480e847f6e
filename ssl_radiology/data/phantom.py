"""The built-in phantom corpus: synthetic CT scans and chest radiographs of the same patients, as real files.

``generate_phantom(out_dir)`` writes (paths relative to ``out_dir``)::

    ct/<CASE>/IM<n>.dcm         CT Image Storage series, one file per slice (most cases)
    ct_nifti/<CASE>.nii.gz      the CT of every 4th case (index % 4 == 3) as NIfTI instead, int16 HU, LPS affine
    xray/<CASE>.dcm             a digitally reconstructed chest radiograph (CR or DX, some MONOCHROME1)
    labels/ct_slices.csv        source, slice_index, case, region, nodule, liver_lesion, site, sex, age_band
    labels/xray.csv             source, slice_index, case, nodule, effusion, cardiomegaly, site, sex, age_band
    phantom.json                the generation parameters (written last: its presence means complete)

Label join: ``(source, slice_index)``, where ``source`` is the posix path relative to ``out_dir``. A DICOM
series is read file by file, so each CT file is its own source with ``slice_index`` 0. For a NIfTI volume
``slice_index`` is the axial index in the order ``ssl_radiology.io`` returns slices: ascending along the
slice normal, i.e. ascending z in RAS = inferior → superior for an axial scan. Radiographs have
``slice_index`` 0. Slice ``k`` of a case is the same anatomy whichever way it was written.

Anatomy (``phantom_anatomy``): air −1000, subcutaneous fat ≈ −100, muscle ≈ 45, lungs ≈ −850 with branching
vessels, heart (myocardium 40, blood 50), aorta, liver 60, spleen, stomach with gas, kidneys (cortex 45,
medulla 32, in perirenal fat), bowel loops, spine (cortex 800, cancellous 420, discs, canal, posterior
arch), ribs, sternum and clavicles 550–800; per-patient body size, fat, position and slight roll. Regions
are bands of anatomical height: lower-abdomen, upper-abdomen, lower-thorax, upper-thorax, neck (roughly a
fifth of the slices each). The CT body is compressed along z (240 mm from pelvis to neck) so that a few
dozen slices cover every region; slice spacing follows from the slice count (5 mm at 128 px, 10 mm at 64).

Findings: lung nodules (1–4 solid spheres, −50..50 HU, radius 6–10 mm) in ~37 % of patients, hypodense
liver lesions (10–30 HU, radius 6–12 mm) in ~30 %, pleural effusion (10 HU filling the posterior-inferior
lung) in 25 %, cardiomegaly (cardiothoracic ratio 0.56–0.64 instead of 0.38–0.46) in ~27 %. Every block of
four consecutive cases holds each finding at least once, so that even the default 8-case corpus has
positives for every task. A lesion is labelled present in a slice when its cross-section there has a
radius ≥ 3 mm.

Sites ("A", "B", "C", balanced within each block of four cases) differ in CT field of view (pixel spacing),
reconstruction blur and noise, and in radiograph modality (CR / DX), bit depth (12 / 14 / 16), dose
(quantum noise), detector blur, processing and contrast curve; the site is written as Manufacturer /
Manufacturer Model Name. Independently of the site, CT pixel storage cycles through unsigned 12-bit
(intercept −1024), signed 16-bit (intercept 0) and unsigned 16-bit; odd cases have file names shuffled
against slice position; every third case (index % 3 == 1) numbers instances superior → inferior; even
cases' radiographs are MONOCHROME1.

Radiographs are line integrals of attenuation (μ = μ_water · (1 + HU/1000)) along the antero-posterior axis
through the thorax of the same patient, rendered on a finer grid with a realistic body length (600 mm),
then I = N0 · exp(−∫μ) with quantum noise, log transform, unsharp masking and the site's contrast curve.

Everything is drawn from ``numpy.random.default_rng`` seeded with ``(seed, case index, ...)``: the same seed
writes byte-identical files, case ``i`` does not depend on how many cases are generated, different seeds
give different patients.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from ssl_radiology.data.phantom_anatomy import (
    MIN_VISIBLE_RADIUS_MM,
    Grid,
    Patient,
    Sphere,
    region_of,
    render,
    sample_patient,
)
from ssl_radiology.data.phantom_dicom import CTGeometry, Identity, write_ct_nifti, write_ct_series, write_xray
from ssl_radiology.errors import UserError

PHANTOM_VERSION = 1
CT_COLUMNS = ["source", "slice_index", "case", "region", "nodule", "liver_lesion", "site", "sex", "age_band"]
XRAY_COLUMNS = [
    "source",
    "slice_index",
    "case",
    "nodule",
    "effusion",
    "cardiomegaly",
    "site",
    "sex",
    "age_band",
]
_OWN_FOLDERS = ("ct", "ct_nifti", "xray", "labels")
_OWN_ENTRIES = frozenset({*_OWN_FOLDERS, "phantom.json", "phantom.json.tmp"})
MU_WATER_PER_MM = 0.02  # linear attenuation of water at ~60 keV
CT_LENGTH_MM = 240.0  # body length (s = 0 → 1) on the CT grid: compressed ~2.5x, see phantom_anatomy
XRAY_LENGTH_MM = 600.0  # body length (s = 0 → 1) on the radiograph grid
XRAY_FIELD_MM = 400.0


@dataclass(frozen=True)
class Site:
    """Acquisition differences between the three sites."""

    manufacturer: str
    ct_model: str
    xray_model: str
    fov_mm: float  # CT reconstruction field of view
    ct_blur_mm: float  # Gaussian σ of the reconstruction kernel
    ct_noise_hu: float
    xray_modality: str
    xray_bits: int
    photons: float  # detected quanta per pixel without attenuation (dose)
    detector_blur_px: float
    gamma: float  # contrast curve of the stored radiograph
    enhance: float  # unsharp-mask gain of the radiograph processing


SITES: dict[str, Site] = {
    "A": Site(
        manufacturer="Acme Imaging",
        ct_model="Acme CT-64",
        xray_model="Acme CR-1",
        fov_mm=340.0,
        ct_blur_mm=0.9,
        ct_noise_hu=10.0,
        xray_modality="CR",
        xray_bits=12,
        photons=30000.0,
        detector_blur_px=0.5,
        gamma=1.0,
        enhance=1.2,
    ),
    "B": Site(
        manufacturer="Borealis Medical",
        ct_model="Aurora 128",
        xray_model="Aurora DX",
        fov_mm=380.0,
        ct_blur_mm=1.6,
        ct_noise_hu=18.0,
        xray_modality="DX",
        xray_bits=14,
        photons=12000.0,
        detector_blur_px=0.8,
        gamma=0.85,
        enhance=0.8,
    ),
    "C": Site(
        manufacturer="Cobalt Systems",
        ct_model="Spectra 16",
        xray_model="Spectra DX",
        fov_mm=430.0,
        ct_blur_mm=2.4,
        ct_noise_hu=28.0,
        xray_modality="DX",
        xray_bits=16,
        photons=5000.0,
        detector_blur_px=1.1,
        gamma=1.2,
        enhance=1.0,
    ),
}
_STORAGE_CYCLE = ("uint12", "int16", "uint16")


@dataclass(frozen=True)
class PhantomSummary:
    """What ``generate_phantom`` wrote."""

    out_dir: Path
    cases: int
    ct_slices: int
    xrays: int
    dicom_series: int
    nifti_volumes: int
    ct_labels: Path
    xray_labels: Path
    params: Path


@dataclass(frozen=True)
class CTScan:
    """One case's CT: the noisy, blurred HU volume, its tissue map, where it lies, and how it was sampled."""

    volume: np.ndarray  # slices × rows × columns, float32 HU, slices inferior → superior
    tissue: np.ndarray  # the same shape, uint8 tissue codes of the noise-free anatomy (phantom_anatomy)
    geometry: CTGeometry
    grid: Grid  # where the anatomy was sampled: ``grid.s`` is each slice's height, ``grid.length`` mm per s


def age_band(age: int) -> str:
    """Decade band of an age in years, as ``ssl_radiology.io`` derives it from Patient's Age."""
    return "90+" if age >= 90 else f"{age // 10 * 10}-{age // 10 * 10 + 9}"


def ct_slice_count(ct_size: int) -> int:
    """Slices per CT scan: 3/8 of the matrix size (48 at 128 px), enough for ~10 slices per region."""
    return max(10, round(ct_size * 3 / 8))


def scan_ct(patient: Patient, seed: int, index: int, ct_size: int) -> CTScan:
    """Render, blur and add noise to the patient's CT as the patient's site would reconstruct it."""
    site = SITES[patient.site]
    rng = np.random.default_rng([seed, index, 1])
    n = ct_slice_count(ct_size)
    s0, s1 = rng.uniform(-0.03, 0.02), rng.uniform(0.97, 1.02)
    s = np.linspace(s0, s1, n)
    # Slice spacing follows from a fixed (compressed) body length, so anatomy and lesions keep their size in
    # millimetres whatever the slice count.
    thickness = round(CT_LENGTH_MM * float(rng.uniform(0.95, 1.05)) * (s1 - s0) / (n - 1), 2)
    length = (n - 1) * thickness / (s1 - s0)
    spacing = site.fov_mm / ct_size
    xy = -site.fov_mm / 2 + spacing * (np.arange(ct_size) + 0.5)
    grid = Grid(x=xy, y=xy.copy(), s=s, length=length)
    canvas = render(patient, grid)
    volume = ndimage.gaussian_filter(
        canvas.hu, sigma=(0.0, site.ct_blur_mm / spacing, site.ct_blur_mm / spacing)
    )
    noise = ndimage.gaussian_filter(
        rng.standard_normal(volume.shape, dtype=np.float32), sigma=(0.0, 0.7, 0.7)
    )
    volume += noise * (site.ct_noise_hu / float(noise.std()))
    table = round(float(rng.uniform(-650.0, -350.0)), 1)
    geometry = CTGeometry(
        origin=(float(xy[0]), float(xy[0]), table),
        row_spacing=spacing,
        col_spacing=spacing,
        thickness=thickness,
    )
    return CTScan(volume=volume.astype(np.float32), tissue=canvas.tissue, geometry=geometry, grid=grid)


def lesion_present(spheres: tuple[Sphere, ...], s: np.ndarray, length_mm: float) -> np.ndarray:
    """Per slice: does any sphere cut the slice plane with a cross-section radius ≥ MIN_VISIBLE_RADIUS_MM?"""
    present = np.zeros(len(s), dtype=bool)
    for sph in spheres:
        dz = (s - sph.s) * length_mm
        present |= sph.radius**2 - dz**2 >= MIN_VISIBLE_RADIUS_MM**2
    return present


def radiograph_attenuation(
    patient: Patient, seed: int, index: int, size: int, *, effusion: bool = True
) -> np.ndarray:
    """∫μ along the antero-posterior axis through the thorax: ``size × size``, rows superior → inferior.

    Columns run patient-right → left (the patient's right on the viewer's left, as a PA chest film is read).
    Rendered on its own grid (≤ 160 px, 3 mm steps along the beam) with a realistic body length and
    resampled to ``size``. ``effusion=False`` renders the same patient without pleural fluid.
    """
    rng = np.random.default_rng([seed, index, 2])
    n = min(size, 160)
    step = XRAY_FIELD_MM / n
    cx = patient.centre[0] + rng.normal(0.0, 10.0)
    x = cx - XRAY_FIELD_MM / 2 + step * (np.arange(n) + 0.5)
    top = patient.lung_apex + 40.0 / XRAY_LENGTH_MM + rng.normal(0.0, 0.012)
    s = top - XRAY_FIELD_MM / XRAY_LENGTH_MM + (step / XRAY_LENGTH_MM) * (np.arange(n) + 0.5)
    reach = float(np.max(patient.half_depth(s))) + 60.0
    y = patient.centre[1] + np.arange(-reach, reach, 3.0)
    volume = render(patient, Grid(x=x, y=y, s=s, length=XRAY_LENGTH_MM), effusion=effusion).hu
    mu = MU_WATER_PER_MM * np.clip(1.0 + volume / 1000.0, 0.0, None)
    line = mu.sum(axis=1) * 3.0
    line = line[::-1]  # superior at the top
    if n != size:
        line = ndimage.zoom(line, size / n, order=1)
    return line.astype(np.float32)


def expose(attenuation: np.ndarray, site: Site, rng: np.random.Generator, pixel_mm: float) -> np.ndarray:
    """Detector and processing → values in [0, 1].

    Blur, quantum noise on I = N0·exp(−∫μ), log transform, then the unsharp masking (20 mm kernel) that
    radiography systems apply to compress the dynamic range and bring out lung detail, and the site's
    contrast curve.
    """
    line = ndimage.gaussian_filter(attenuation, site.detector_blur_px)
    counts = site.photons * np.exp(-line)
    counts = counts + np.sqrt(counts) * rng.standard_normal(counts.shape, dtype=np.float32)
    log = -np.log(np.clip(counts, 0.5, None) / site.photons)
    log = log + site.enhance * (log - ndimage.gaussian_filter(log, 20.0 / pixel_mm))
    log = log - min(0.0, float(log.min()))
    scaled = np.clip(log / (1.05 * float(np.percentile(log, 99.5))), 0.0, 1.0)
    return scaled**site.gamma


def identity(patient: Patient, seed: int, index: int, modality_model: str) -> Identity:
    """Fake but realistic-looking identifying attributes (so that privacy stripping can be tested)."""
    rng = np.random.default_rng([seed, index, 3])
    year = 2018 + int(rng.integers(0, 7))
    study = f"{year}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    birth = f"{year - patient.age}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    site = SITES[patient.site]
    return Identity(
        patient_name=f"PHANTOM^{patient.case}",
        patient_id=f"PH{seed:04d}{index:06d}",
        birth_date=birth,
        sex=patient.sex,
        age=f"{patient.age:03d}Y",
        study_date=study,
        manufacturer=site.manufacturer,
        model=modality_model,
        institution=f"Phantom Hospital {patient.site}",
        uid_entropy=("ssl-radiology-phantom", str(PHANTOM_VERSION), str(seed), patient.case),
    )


def _prepare_out_dir(out: Path) -> None:
    """Clear a previous (complete or interrupted) phantom corpus in ``out``; refuse a folder with anything else.

    Only the corpus's own entries are ever deleted, so a mistyped ``--out`` cannot wipe a user's data.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a folder")
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in _OWN_ENTRIES)
        if foreign:
            raise UserError(
                f"{out}: folder holds files that are not part of a phantom corpus ({', '.join(foreign[:3])}); "
                "choose an empty or new folder"
            )
        for name in ("phantom.json", "phantom.json.tmp"):
            (out / name).unlink(missing_ok=True)
        for name in _OWN_FOLDERS:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def generate_case(out: Path, seed: int, index: int, ct_size: int, xray_size: int) -> tuple[list[dict], dict]:
    """Write one patient's CT and radiograph; return its CT slice label rows and its radiograph label row."""
    patient = sample_patient(seed, index)
    site = SITES[patient.site]
    common = {
        "case": patient.case,
        "site": patient.site,
        "sex": patient.sex,
        "age_band": age_band(patient.age),
    }
    rng = np.random.default_rng([seed, index, 4])

    scan = scan_ct(patient, seed, index, ct_size)
    n = len(scan.grid.s)
    if index % 4 == 3:
        nifti = write_ct_nifti(scan.volume, scan.geometry, out / "ct_nifti" / f"{patient.case}.nii.gz")
        sources = [(nifti.relative_to(out).as_posix(), k) for k in range(n)]
    else:
        numbers = rng.permutation(n) if index % 2 == 1 else np.arange(n)
        files = write_ct_series(
            scan.volume,
            scan.geometry,
            identity(patient, seed, index, site.ct_model),
            out / "ct" / patient.case,
            storage=_STORAGE_CYCLE[index % 3],
            file_numbers=numbers,
            instances_descending=index % 3 == 1,
        )
        sources = [(path.relative_to(out).as_posix(), 0) for path in files]
    nodule = lesion_present(patient.nodules, scan.grid.s, scan.grid.length)
    liver = lesion_present(patient.liver_lesions, scan.grid.s, scan.grid.length)
    ct_rows = [
        {
            "source": src,
            "slice_index": k_index,
            "region": region_of(float(scan.grid.s[k])),
            "nodule": int(nodule[k]),
            "liver_lesion": int(liver[k]),
            **common,
        }
        for k, (src, k_index) in enumerate(sources)
    ]

    attenuation = radiograph_attenuation(patient, seed, index, xray_size)
    top = 2**site.xray_bits - 1
    values = np.rint(expose(attenuation, site, rng, XRAY_FIELD_MM / xray_size) * top).astype(np.uint16)
    monochrome1 = index % 2 == 0
    xray_path = write_xray(
        top - values if monochrome1 else values,
        XRAY_FIELD_MM / xray_size,
        identity(patient, seed, index, site.xray_model),
        out / "xray" / f"{patient.case}.dcm",
        modality=site.xray_modality,
        bits_stored=site.xray_bits,
        monochrome1=monochrome1,
    )
    xray_row = {
        "source": xray_path.relative_to(out).as_posix(),
        "slice_index": 0,
        "nodule": int(bool(patient.nodules)),
        "effusion": int(bool(patient.effusion)),
        "cardiomegaly": int(patient.cardiomegaly),
        **common,
    }
    return ct_rows, xray_row


def generate_phantom(
    out_dir: str | os.PathLike[str],
    cases: int = 8,
    seed: int = 0,
    ct_size: int = 128,
    xray_size: int = 256,
    *,
    first_case: int = 0,
    on_case: Callable[[str], None] | None = None,
) -> PhantomSummary:
    """Write the phantom corpus into ``out_dir`` (see the module docstring); ``on_case`` is told each case done.

    The cases are ``first_case … first_case + cases − 1``. Case ``i`` depends only on ``(seed, i)``, so two
    corpora with the same seed and disjoint case ranges hold different patients (different anatomy,
    findings, patient IDs and file names): the built-in study pre-trains on one range and evaluates on
    another, and the leakage guard can verify it from the patient keys.
    """
    if cases < 1:
        raise UserError(f"--cases must be at least 1, got {cases}")
    if first_case < 0:
        raise UserError(f"first_case must be ≥ 0, got {first_case}")
    for name, size in (("ct-size", ct_size), ("xray-size", xray_size)):
        if not 32 <= size <= 1024:
            raise UserError(f"--{name} must be between 32 and 1024 pixels, got {size}")
    if seed < 0:
        raise UserError(f"--seed must be ≥ 0, got {seed}")
    out = Path(out_dir)
    _prepare_out_dir(out)
    ct_rows: list[dict] = []
    xray_rows: list[dict] = []
    for index in range(first_case, first_case + cases):
        rows, xray_row = generate_case(out, seed, index, ct_size, xray_size)
        ct_rows.extend(rows)
        xray_rows.append(xray_row)
        if on_case is not None:
            on_case(xray_row["case"])
    ct_labels, xray_labels = out / "labels" / "ct_slices.csv", out / "labels" / "xray.csv"
    _write_csv(ct_labels, CT_COLUMNS, ct_rows)
    _write_csv(xray_labels, XRAY_COLUMNS, xray_rows)
    params = out / "phantom.json"
    meta = {
        "version": PHANTOM_VERSION,
        "seed": seed,
        "cases": cases,
        "first_case": first_case,
        "ct_size": ct_size,
        "xray_size": xray_size,
    }
    tmp = params.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, params)
    nifti = sum(1 for index in range(first_case, first_case + cases) if index % 4 == 3)
    return PhantomSummary(
        out_dir=out,
        cases=cases,
        ct_slices=len(ct_rows),
        xrays=len(xray_rows),
        dicom_series=cases - nifti,
        nifti_volumes=nifti,
        ct_labels=ct_labels,
        xray_labels=xray_labels,
        params=params,
    )
