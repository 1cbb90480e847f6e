"""The phantom corpus: real DICOM / NIfTI files with correct HU, tags, orientation, labels, determinism.

One small corpus (4 cases at 64 px) is generated per module; cases 0–3 cover every writer variant:
case 0 unsigned 12-bit CT + MONOCHROME1 radiograph, case 1 signed 16-bit CT with shuffled file names and
descending Instance Numbers, case 2 unsigned 16-bit CT, case 3 NIfTI.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from scipy import ndimage

from ssl_radiology.cli import main
from ssl_radiology.data.phantom import (
    CT_COLUMNS,
    SITES,
    XRAY_COLUMNS,
    generate_phantom,
    identity,
    lesion_present,
    radiograph_attenuation,
    scan_ct,
)
from ssl_radiology.data.phantom_anatomy import LUNG, REGIONS, render, sample_patient
from ssl_radiology.data.phantom_dicom import write_ct_nifti, write_ct_series
from ssl_radiology.errors import UserError

SIZE = 64
REGION_ORDER = [name for name, _ in REGIONS]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    generate_phantom(out, cases=4, seed=0, ct_size=SIZE, xray_size=SIZE)
    return out


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _series(folder: Path) -> list[pydicom.Dataset]:
    """A CT series sorted by position along the slice normal (the way a reader must sort it)."""
    datasets = [pydicom.dcmread(p) for p in folder.glob("*.dcm")]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, dtype=float), (2, 3)))
    return sorted(
        datasets, key=lambda ds: float(np.dot(np.asarray(ds.ImagePositionPatient, dtype=float), normal))
    )


def test_layout_counts_and_parameters(corpus: Path) -> None:
    assert sorted(p.name for p in (corpus / "ct").iterdir()) == ["CASE0000", "CASE0001", "CASE0002"]
    assert [p.name for p in (corpus / "ct_nifti").iterdir()] == ["CASE0003.nii.gz"]
    assert sorted(p.name for p in (corpus / "xray").iterdir()) == [f"CASE000{i}.dcm" for i in range(4)]
    params = json.loads((corpus / "phantom.json").read_text())
    assert params == {
        "version": 1,
        "seed": 0,
        "cases": 4,
        "first_case": 0,
        "ct_size": SIZE,
        "xray_size": SIZE,
    }


@pytest.mark.parametrize("case", ["CASE0000", "CASE0001", "CASE0002"])
def test_ct_hounsfield_units_through_the_modality_lut(corpus: Path, case: str) -> None:
    index = int(case[-4:])
    patient = sample_patient(0, index)
    scan = scan_ct(patient, 0, index, SIZE)
    hu = np.stack([apply_modality_lut(ds.pixel_array, ds) for ds in _series(corpus / "ct" / case)])
    # Exactly the generated volume, rounded and clipped to the stored range.
    np.testing.assert_array_equal(hu, np.clip(np.rint(scan.volume), -1024, 3071))
    assert abs(float(np.median(hu[:, :4, :4])) + 1000) < 40  # air in the corners
    assert hu.max() > 300  # bone
    lung = ndimage.binary_erosion(scan.tissue == LUNG, structure=np.ones((1, 3, 3)))
    assert lung.sum() > 100
    assert abs(float(np.median(hu[lung])) + 850) < 40


def test_ct_tags_and_fake_identifiers(corpus: Path) -> None:
    storage = {"CASE0000": (0, 12, "-1024"), "CASE0001": (1, 16, "0"), "CASE0002": (0, 16, "-1024")}
    sop_uids = set()
    for case, (representation, bits, intercept) in storage.items():
        series = _series(corpus / "ct" / case)
        patient = sample_patient(0, int(case[-4:]))
        for ds in series:
            assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
            assert ds.SOPClassUID == CTImageStorage == ds.file_meta.MediaStorageSOPClassUID
            assert ds.Modality == "CT" and ds.PhotometricInterpretation == "MONOCHROME2"
            assert (ds.PixelRepresentation, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (
                representation,
                16,
                bits,
                bits - 1,
            )
            assert str(ds.RescaleIntercept) == intercept and float(ds.RescaleSlope) == 1.0
            assert [float(c) for c in ds.ImageOrientationPatient] == [1, 0, 0, 0, 1, 0]
            assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
            assert float(ds.PixelSpacing[0]) == pytest.approx(SITES[patient.site].fov_mm / SIZE, abs=1e-3)
            assert ds.ManufacturerModelName == SITES[patient.site].ct_model
            assert str(ds.PatientName) == f"PHANTOM^{case}"
            assert ds.PatientID and len(ds.PatientBirthDate) == 8
            assert ds.PatientAge == f"{patient.age:03d}Y" and ds.PatientSex == patient.sex
            assert ds.WindowCenter is not None and ds.WindowWidth is not None
            sop_uids.add(ds.SOPInstanceUID)
        assert len({ds.SeriesInstanceUID for ds in series}) == 1
        z = [float(ds.ImagePositionPatient[2]) for ds in series]
        assert np.allclose(np.diff(z), float(series[0].SliceThickness))
    assert len(sop_uids) == sum(len(list((corpus / "ct" / c).iterdir())) for c in storage)


def test_series_must_be_sorted_by_geometry(corpus: Path) -> None:
    series = _series(corpus / "ct" / "CASE0001")
    by_name = [int(Path(ds.filename).stem[2:]) for ds in series]
    assert by_name != sorted(by_name)  # file names are shuffled against position
    instances = [int(ds.InstanceNumber) for ds in series]
    assert instances == sorted(instances, reverse=True)  # numbered superior → inferior
    labels = {row["source"]: row for row in _rows(corpus / "labels" / "ct_slices.csv")}
    regions = [labels[Path(ds.filename).relative_to(corpus).as_posix()]["region"] for ds in series]
    assert [REGION_ORDER.index(r) for r in regions] == sorted(REGION_ORDER.index(r) for r in regions)
    assert set(regions) == set(REGION_ORDER)


def test_nifti_affine_is_lps_and_content_matches(corpus: Path) -> None:
    image = nib.load(corpus / "ct_nifti" / "CASE0003.nii.gz")
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert image.get_data_dtype() == np.int16
    scan = scan_ct(sample_patient(0, 3), 0, 3, SIZE)
    canonical = nib.as_closest_canonical(image)
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")
    data = np.asarray(canonical.dataobj)
    for k in (0, data.shape[2] // 2, data.shape[2] - 1):
        np.testing.assert_array_equal(data[::-1, ::-1, k].T, np.clip(np.rint(scan.volume[k]), -1024, 3071))
    rows = [r for r in _rows(corpus / "labels" / "ct_slices.csv") if r["case"] == "CASE0003"]
    assert [int(r["slice_index"]) for r in rows] == list(range(data.shape[2]))
    assert rows[0]["region"] == "lower-abdomen" and rows[-1]["region"] == "neck"


def test_io_reads_the_same_slices_from_dicom_and_nifti(tmp_path: Path) -> None:
    from ssl_radiology.io import read_slices

    patient = sample_patient(5, 1)
    scan = scan_ct(patient, 5, 1, 48)
    ident = identity(patient, 5, 1, "test")
    write_ct_series(
        scan.volume,
        scan.geometry,
        ident,
        tmp_path / "series",
        storage="int16",
        file_numbers=np.random.default_rng(0).permutation(len(scan.grid.s)),
        instances_descending=True,
    )
    write_ct_nifti(scan.volume, scan.geometry, tmp_path / "volume.nii.gz")
    from_dicom = read_slices(tmp_path / "series")
    from_nifti = read_slices(tmp_path / "volume.nii.gz")
    assert len(from_dicom) == len(from_nifti) == len(scan.grid.s)
    for a, b, k in zip(from_dicom, from_nifti, range(len(scan.grid.s)), strict=True):
        np.testing.assert_array_equal(a.pixels, b.pixels)
        np.testing.assert_array_equal(a.pixels, np.clip(np.rint(scan.volume[k]), -1024, 3071))
        assert a.position == pytest.approx(b.position, abs=1e-3)
        assert a.spacing == pytest.approx(b.spacing, abs=1e-3)


def test_radiographs_tags_and_polarity(corpus: Path) -> None:
    for index in range(4):
        ds = pydicom.dcmread(corpus / "xray" / f"CASE000{index}.dcm")
        site = SITES[sample_patient(0, index).site]
        assert ds.Modality == site.xray_modality and ds.BitsStored == site.xray_bits
        assert ds.ManufacturerModelName == site.xray_model
        assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(400.0 / SIZE, abs=1e-3)
        assert str(ds.PatientName) == f"PHANTOM^CASE000{index}"
        stored = ds.pixel_array.astype(float)
        assert stored.max() <= 2**ds.BitsStored - 1
        inverted = ds.PhotometricInterpretation == "MONOCHROME1"
        assert inverted == (index % 2 == 0)
        shown = 2**ds.BitsStored - 1 - stored if inverted else stored
        air, spine = shown[:, :3].mean(), shown[:, SIZE // 2 - 2 : SIZE // 2 + 2].mean()
        lung = shown[SIZE // 4 : SIZE // 2, SIZE // 4 - 4 : SIZE // 4 + 2].mean()
        assert air < lung < spine  # displayed: air black, lung dark, spine bright


def test_labels_join_with_the_files(corpus: Path) -> None:
    ct = _rows(corpus / "labels" / "ct_slices.csv")
    xray = _rows(corpus / "labels" / "xray.csv")
    assert list(ct[0]) == CT_COLUMNS and list(xray[0]) == XRAY_COLUMNS
    keys = [(r["source"], r["slice_index"]) for r in ct]
    assert len(set(keys)) == len(keys)
    dicom_files = {p.relative_to(corpus).as_posix() for p in (corpus / "ct").rglob("*.dcm")}
    assert {r["source"] for r in ct if r["source"].startswith("ct/")} == dicom_files
    assert all(r["slice_index"] == "0" for r in ct if r["source"] in dicom_files)
    assert {r["source"] for r in xray} == {
        p.relative_to(corpus).as_posix() for p in (corpus / "xray").iterdir()
    }
    for r in ct + xray:
        assert (corpus / r["source"]).is_file()
        assert r["site"] in SITES and r["sex"] in {"M", "F"} and r["age_band"][0].isdigit()
    assert {r["region"] for r in ct} == set(REGION_ORDER)
    for r in xray:
        patient = sample_patient(0, int(r["case"][-4:]))
        assert r["nodule"] == str(int(bool(patient.nodules)))
        assert r["effusion"] == str(int(bool(patient.effusion)))
        assert r["cardiomegaly"] == str(int(patient.heart_ratio > 0.5))


def test_same_seed_is_byte_identical_and_other_seeds_differ(corpus: Path, tmp_path: Path) -> None:
    again = generate_phantom(tmp_path / "again", cases=2, seed=0, ct_size=SIZE, xray_size=SIZE).out_dir
    for path in sorted(again.rglob("*")):
        rel = path.relative_to(again)
        if path.is_file() and rel.parts[0] not in ("labels", "phantom.json"):
            assert path.read_bytes() == (corpus / rel).read_bytes(), rel
    ct_again = _rows(again / "labels" / "ct_slices.csv")
    assert ct_again == [
        r for r in _rows(corpus / "labels" / "ct_slices.csv") if r["case"] in ("CASE0000", "CASE0001")
    ]
    other = generate_phantom(tmp_path / "other", cases=1, seed=1, ct_size=SIZE, xray_size=SIZE).out_dir
    assert (other / "xray" / "CASE0000.dcm").read_bytes() != (corpus / "xray" / "CASE0000.dcm").read_bytes()


def test_case_ranges_continue_one_cohort_and_disjoint_ranges_share_no_patient(
    corpus: Path, tmp_path: Path
) -> None:
    tail = generate_phantom(tmp_path / "tail", cases=2, seed=0, ct_size=SIZE, xray_size=SIZE, first_case=2)
    assert json.loads(tail.params.read_text())["first_case"] == 2
    for case in ("CASE0002", "CASE0003"):  # case i depends only on (seed, i): the same patient
        assert (tail.out_dir / "xray" / f"{case}.dcm").read_bytes() == (
            corpus / "xray" / f"{case}.dcm"
        ).read_bytes()
    far = generate_phantom(
        tmp_path / "far", cases=2, seed=0, ct_size=SIZE, xray_size=SIZE, first_case=100_000
    )
    assert sorted(p.stem for p in (far.out_dir / "xray").glob("*.dcm")) == ["CASE100000", "CASE100001"]

    def patient_ids(root: Path) -> set[str]:
        return {str(pydicom.dcmread(p, stop_before_pixels=True).PatientID) for p in root.rglob("*.dcm")}

    assert not patient_ids(corpus) & patient_ids(far.out_dir)
    assert not {r["case"] for r in _rows(corpus / "labels" / "ct_slices.csv")} & {
        r["case"] for r in _rows(far.out_dir / "labels" / "ct_slices.csv")
    }
    with pytest.raises(UserError, match="first_case"):
        generate_phantom(tmp_path / "bad", cases=1, first_case=-1)


def test_findings_change_the_radiograph() -> None:
    patient = next(p for p in (sample_patient(0, i) for i in range(100)) if p.effusion == ("right",))
    index = int(patient.case[-4:])
    wet = radiograph_attenuation(patient, 0, index, SIZE)
    dry = radiograph_attenuation(patient, 0, index, SIZE, effusion=False)
    # Patient's right is the viewer's left; the right lung base is in the lower-left quarter of the lung field.
    base = (slice(SIZE // 2, 3 * SIZE // 4), slice(SIZE // 6, SIZE // 2 - 4))
    assert (wet - dry)[base].max() > 0.2
    assert np.all((wet - dry)[:, SIZE // 2 + 4 :] == 0)  # the left side is unchanged
    with_nodules = next(p for p in (sample_patient(0, i) for i in range(100)) if p.nodules)
    index = int(with_nodules.case[-4:])
    shown = radiograph_attenuation(with_nodules, 0, index, SIZE)
    hidden = radiograph_attenuation(replace(with_nodules, nodules=()), 0, index, SIZE)
    assert (shown - hidden).max() > 0.15


@pytest.mark.parametrize("finding", ["nodules", "liver_lesions"])
def test_lesions_are_visible_in_the_slices_labelled_with_them(finding: str) -> None:
    patient = next(p for p in (sample_patient(0, i) for i in range(100)) if getattr(p, finding))
    index = int(patient.case[-4:])
    scan = scan_ct(patient, 0, index, SIZE)
    labelled = lesion_present(getattr(patient, finding), scan.grid.s, scan.grid.length)
    assert 0 < labelled.sum() < len(labelled)
    change = np.abs(render(patient, scan.grid).hu - render(replace(patient, **{finding: ()}), scan.grid).hu)
    per_slice = change.max(axis=(1, 2))
    # Liver lesions are ≥ 30 HU below the liver, nodules ≥ 800 HU above the lung; partial volume at 64 px.
    assert np.all(per_slice[labelled] > 20.0)
    unchanged = per_slice == 0
    assert not np.any(labelled & unchanged)


def test_cardiomegaly_widens_the_heart() -> None:
    patients = [sample_patient(0, i) for i in range(60)]
    big = [p for p in patients if p.cardiomegaly]
    assert big and all(p.heart()[3] / p.inner_width(p.heart()[2]) > 0.5 for p in big)
    assert all(p.heart()[3] / p.inner_width(p.heart()[2]) < 0.5 for p in patients if not p.cardiomegaly)


def test_label_balance_over_many_patients() -> None:
    patients = [sample_patient(3, i) for i in range(200)]
    for rate in (
        np.mean([bool(p.nodules) for p in patients]),
        np.mean([bool(p.effusion) for p in patients]),
        np.mean([p.cardiomegaly for p in patients]),
    ):
        assert 0.15 < rate < 0.45
    assert len({p.site for p in patients}) == 3 and len({p.sex for p in patients}) == 2
    # Every block of four cases holds each finding, so that even the default 8-case corpus has positives.
    for start in range(0, len(patients), 4):
        block = patients[start : start + 4]
        assert any(p.nodules for p in block) and any(p.liver_lesions for p in block)
        assert any(p.effusion for p in block) and any(p.cardiomegaly for p in block)


def test_cli_writes_a_corpus_and_refuses_a_foreign_folder(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli"
    assert main(["phantom", "--out", str(out), "--cases", "1", "--ct-size", "32", "--xray-size", "32"]) == 0
    assert "1 cases" in capsys.readouterr().out
    assert len(_rows(out / "labels" / "ct_slices.csv")) == len(list((out / "ct" / "CASE0000").iterdir()))
    # Re-running into a phantom corpus replaces it; a folder with other content is refused.
    assert main(["phantom", "--out", str(out), "--cases", "1", "--ct-size", "32", "--xray-size", "32"]) == 0
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["phantom", "--out", str(tmp_path / "mine"), "--cases", "1"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (tmp_path / "mine" / "notes.txt").is_file()
    # An interrupted run (files written, no phantom.json yet) is cleared and redone.
    (out / "phantom.json").unlink()
    (out / "xray" / "CASE0007.dcm").write_bytes(b"stale")
    assert main(["phantom", "--out", str(out), "--cases", "1", "--ct-size", "32", "--xray-size", "32"]) == 0
    assert sorted(p.name for p in (out / "xray").iterdir()) == ["CASE0000.dcm"]
    with pytest.raises(UserError, match="ct-size"):
        generate_phantom(tmp_path / "bad", ct_size=8)
