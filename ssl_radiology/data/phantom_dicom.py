"""Writers for the phantom corpus: CT series and radiographs as DICOM (pydicom), CT volumes as NIfTI (nibabel).

The files deliberately exercise a reader: CT pixel storage varies (unsigned 12-bit with intercept −1024,
signed 16-bit with intercept 0, unsigned 16-bit with intercept −1024), file names can be shuffled against
slice positions and Instance Numbers can run superior → inferior, so a reader must sort a series by
geometry (Image Position (Patient) along the slice normal). Radiographs are CR or DX with 12/14/16 stored
bits, some MONOCHROME1 (stored values inverted, so a reader that honours the photometric interpretation
shows bone bright). Fake identifying data (names, IDs, birth dates, UIDs) are present so that privacy
stripping downstream can be tested. Every UID comes from ``pydicom.uid.generate_uid`` with entropy sources
derived from the corpus seed, so the same seed writes byte-identical files.

Geometry: voxel ``volume[k, r, c]`` sits at LPS ``origin + (c * col_spacing, r * row_spacing,
k * thickness)``: Image Orientation (Patient) is (1, 0, 0, 0, 1, 0) and slice ``k`` ascends along the normal
(+z, inferior → superior). The NIfTI copy stores ``volume.transpose(2, 1, 0)`` with an LPS affine (first two
axes negated relative to RAS), i.e. *not* RAS, so that readers must reorient.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

#: CT pixel storage variants: (numpy dtype, Bits Stored, Pixel Representation, Rescale Intercept).
CT_STORAGE: dict[str, tuple[str, int, int, float]] = {
    "uint12": ("<u2", 12, 0, -1024.0),
    "int16": ("<i2", 16, 1, 0.0),
    "uint16": ("<u2", 16, 0, -1024.0),
}


@dataclass(frozen=True)
class CTGeometry:
    """Where the voxels of a ``slices × rows × columns`` volume lie in the LPS patient frame (mm)."""

    origin: tuple[float, float, float]  # centre of voxel [0, 0, 0]
    row_spacing: float
    col_spacing: float
    thickness: float  # distance between slice centres

    def affine_ras(self) -> np.ndarray:
        """NIfTI affine of ``volume.transpose(2, 1, 0)``: axes L, P, S (LPS), mapped to RAS world mm."""
        x0, y0, z0 = self.origin
        return np.array(
            [
                [-self.col_spacing, 0.0, 0.0, -x0],
                [0.0, -self.row_spacing, 0.0, -y0],
                [0.0, 0.0, self.thickness, z0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )


@dataclass(frozen=True)
class Identity:
    """The patient/study/equipment attributes of one phantom patient (fake, but shaped like real PHI)."""

    patient_name: str
    patient_id: str
    birth_date: str  # YYYYMMDD
    sex: str
    age: str  # DICOM Age String, "047Y"
    study_date: str
    manufacturer: str
    model: str
    institution: str
    uid_entropy: tuple[str, ...]  # seeds every UID of this patient

    def uid(self, *parts: object) -> str:
        return str(generate_uid(entropy_srcs=[*self.uid_entropy, *(str(p) for p in parts)]))


def _base_dataset(ident: Identity, sop_class: str, modality: str, series: str) -> Dataset:
    """Patient, study, series and equipment modules shared by every image of one series."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ident.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "101500"
    ds.AccessionNumber = ident.patient_id[-6:]
    ds.Modality = modality
    ds.Manufacturer = ident.manufacturer
    ds.ManufacturerModelName = ident.model
    ds.InstitutionName = ident.institution
    ds.ReferringPhysicianName = "REFERRER^PHANTOM"
    ds.PatientName = ident.patient_name
    ds.PatientID = ident.patient_id
    ds.PatientBirthDate = ident.birth_date
    ds.PatientSex = ident.sex
    ds.PatientAge = ident.age
    ds.StudyInstanceUID = ident.uid("study")
    ds.SeriesInstanceUID = ident.uid("series", series)
    ds.StudyID = "1"
    ds.SeriesNumber = 2 if modality == "CT" else 1
    ds.SamplesPerPixel = 1
    ds.BitsAllocated = 16
    return ds


def write_ct_series(
    volume_hu: np.ndarray,
    geometry: CTGeometry,
    ident: Identity,
    folder: Path,
    *,
    storage: str = "uint12",
    file_numbers: Sequence[int] | None = None,
    instances_descending: bool = False,
) -> list[Path]:
    """Write ``volume_hu`` (slices × rows × columns, HU) as one CT series, a file per slice.

    ``file_numbers[k]`` names slice ``k``'s file ``IM<n>.dcm`` (default ``n = k``); ``instances_descending``
    numbers instances superior → inferior as many scanners do. Returns the file of each slice ``k``.
    """
    dtype, bits, representation, intercept = CT_STORAGE[storage]
    folder.mkdir(parents=True, exist_ok=True)
    n, rows, cols = volume_hu.shape
    numbers = list(range(n)) if file_numbers is None else [int(i) for i in file_numbers]
    ds = _base_dataset(ident, CTImageStorage, "CT", "ct")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SeriesDescription = "CHEST ABDOMEN PHANTOM"
    ds.FrameOfReferenceUID = ident.uid("frame")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "HFS"
    ds.KVP = 120
    ds.SliceThickness = f"{geometry.thickness:.2f}"
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [f"{geometry.row_spacing:.4f}", f"{geometry.col_spacing:.4f}"]
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits - 1, representation
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{intercept:g}", "1", "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    stored = (np.clip(np.rint(volume_hu), -1024, 3071) - intercept).astype(dtype)
    paths = []
    x0, y0, z0 = geometry.origin
    for k in range(n):
        z = z0 + k * geometry.thickness
        sop = ident.uid("ct", k)
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.SOPInstanceUID = sop
        ds.InstanceNumber = n - k if instances_descending else k + 1
        ds.ImagePositionPatient = [f"{x0:.3f}", f"{y0:.3f}", f"{z:.3f}"]
        ds.SliceLocation = f"{z:.3f}"
        ds.PixelData = stored[k].tobytes()
        path = folder / f"IM{numbers[k]}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        if k == 0:
            # Continue from the file just written: pydicom writes elements it read (still raw bytes) without
            # re-encoding them, which halves the cost of every further slice of the series.
            ds = dcmread(path)
    return paths


def write_ct_nifti(volume_hu: np.ndarray, geometry: CTGeometry, path: Path) -> Path:
    """Write ``volume_hu`` as int16 HU NIfTI in LPS voxel order (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.rint(volume_hu), -1024, 3071).astype(np.int16).transpose(2, 1, 0)
    image = nib.Nifti1Image(data, geometry.affine_ras())
    image.header.set_xyzt_units("mm", "sec")
    image.set_qform(geometry.affine_ras(), code=1)
    image.set_sform(geometry.affine_ras(), code=1)
    # Compressed here rather than by nibabel so that the gzip header carries no timestamp (byte-reproducible).
    with (
        path.open("wb") as handle,
        gzip.GzipFile(filename="", mode="wb", fileobj=handle, mtime=0, compresslevel=1) as gz,
    ):
        gz.write(image.to_bytes())
    return path


def write_xray(
    stored: np.ndarray,
    spacing_mm: float,
    ident: Identity,
    path: Path,
    *,
    modality: str,
    bits_stored: int,
    monochrome1: bool,
) -> Path:
    """Write a chest radiograph whose ``stored`` values (uint16) already follow the photometric interpretation."""
    if modality not in ("CR", "DX"):
        raise ValueError(f"radiograph modality must be CR or DX, not {modality}")
    sop_class = (
        ComputedRadiographyImageStorage if modality == "CR" else DigitalXRayImageStorageForPresentation
    )
    ds = _base_dataset(ident, sop_class, modality, "xray")
    sop = ident.uid("xray")
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SOPInstanceUID = sop
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SeriesDescription = "CHEST PA"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.PatientOrientation = ["L", "F"]
    ds.InstanceNumber = 1
    ds.KVP = 120
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "INVERSE" if monochrome1 else "IDENTITY"
    ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits_stored, bits_stored - 1, 0
    top = 2**bits_stored - 1
    ds.WindowCenter, ds.WindowWidth = str((top + 1) // 2), str(top + 1)
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path
