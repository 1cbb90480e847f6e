"""Small real DICOM files for the prepare / sources tests, written with pydicom (no fixtures on disk)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    generate_uid,
)

PHI = {"PatientName": "Doe^Jane", "PatientID": "PID-98765", "PatientBirthDate": "19610704"}


def write_dicom(
    path: Path,
    stored: np.ndarray,
    modality: str = "CT",
    patient_id: str = PHI["PatientID"],
    study_uid: str | None = None,
    intercept: float = -1024.0,
    photometric: str = "MONOCHROME2",
    spacing: tuple[float, float] = (0.7, 0.7),
    z: float = 0.0,
) -> Path:
    """Write ``stored`` (uint16, rows × cols) as an uncompressed CT or DX file with identifying tags."""
    sop_class = CTImageStorage if modality == "CT" else DigitalXRayImageStorageForPresentation
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = PHI["PatientName"]
    ds.PatientID = patient_id
    ds.PatientBirthDate = PHI["PatientBirthDate"]
    ds.PatientSex = "F"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.PixelSpacing = list(spacing)
    if modality == "CT":
        ds.RescaleIntercept = intercept
        ds.RescaleSlope = 1
        ds.ImagePositionPatient = [0.0, 0.0, z]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelData = np.ascontiguousarray(stored, dtype=np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ct_block(rows: int = 64, cols: int = 48, inside_hu: int = 60, seed: int = 0) -> np.ndarray:
    """Stored values (HU + 1024) of air with a large soft-tissue rectangle and some noise elsewhere."""
    rng = np.random.default_rng(seed)
    hu = np.full((rows, cols), -1000.0)
    hu[rows // 4 : 3 * rows // 4, cols // 4 : 3 * cols // 4] = inside_hu
    hu[: rows // 8] += rng.normal(0, 20, size=(rows // 8, cols))
    return np.rint(np.clip(hu, -1024, 3071) + 1024).astype(np.uint16)


def write_ct_series(folder: Path, count: int, patient_id: str = PHI["PatientID"]) -> list[Path]:
    study = generate_uid()
    return [
        write_dicom(
            folder / f"IM{k:03d}.dcm", ct_block(seed=k), patient_id=patient_id, study_uid=study, z=float(k)
        )
        for k in range(count)
    ]
