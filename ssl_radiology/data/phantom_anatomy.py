"""Parametric patients for the phantom corpus, and their rendering into Hounsfield-unit volumes.

A patient is a handful of random parameters (body size, position, roll, fat, organ sizes, findings); the
anatomy is a fixed recipe of solids whose shapes follow those parameters. The same patient can be rendered
on any grid, which is how the CT scan (coarse in z) and the radiograph (a finer, taller grid) show the same
body. Coordinates:

- ``x``, ``y``: world millimetres in the DICOM patient frame (LPS): ``x`` grows toward the patient's left,
  ``y`` toward posterior. A CT slice is stored ``[row, column]`` = ``[y, x]``, so rows run anterior →
  posterior and columns patient-right → left, as in an axial DICOM slice.
- ``u``, ``v``: the same two axes in the *body frame* (centred on the body, turned by the patient's slight
  roll about z); all organ positions are given in ``u``, ``v``.
- ``s``: anatomical height, 0 = bottom of the lower abdomen, 1 = top of the neck. The slice regions are
  fixed bands of ``s`` (:data:`REGIONS`), so a region label means the same anatomy in every patient.
  A grid maps ``s`` to millimetres with a length ``L`` (``z = s * L``). The CT uses a short ``L`` (the
  phantom is compressed ~2.5x along z so that a few dozen slices cover neck to pelvis while a nodule still
  spans a few slices); the radiograph uses a realistic ``L`` of 600 mm. Lesions are spheres in millimetres
  on either grid, so they stay round.

Rendering paints solids in order onto a ``Canvas`` (later solids replace earlier ones, optionally only over
given tissues, e.g. vessels only in aerated lung). Each solid is evaluated for the whole volume at once
inside its bounding box (numpy broadcasting over ``z × y × x``); small solids (vessels, nodules, lesions)
are drawn with partial-volume edges so that they stay visible at coarse pixel sizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

#: Slice regions as bands of anatomical height ``s`` (upper bounds), inferior → superior.
REGIONS: tuple[tuple[str, float], ...] = (
    ("lower-abdomen", 0.2),
    ("upper-abdomen", 0.4),
    ("lower-thorax", 0.6),
    ("upper-thorax", 0.8),
    ("neck", np.inf),
)

#: Tissue codes of the label map that rendering keeps beside the HU values (used to restrict painting).
AIR, FAT, SOFT, LUNG, BONE, FLUID, HEART, LIVER, VESSEL, LESION, GAS, KIDNEY, ORGAN = range(13)

#: A lesion counts as present in a slice when its cross-section there has at least this radius (mm).
MIN_VISIBLE_RADIUS_MM = 3.0

_S_KNOTS = np.array([0.0, 0.2, 0.35, 0.45, 0.6, 0.74, 0.8, 0.84, 0.88, 1.0])
_HALF_WIDTH = np.array([160.0, 158.0, 152.0, 158.0, 166.0, 168.0, 160.0, 95.0, 62.0, 58.0])
_HALF_DEPTH = np.array([112.0, 108.0, 108.0, 112.0, 118.0, 112.0, 100.0, 72.0, 62.0, 58.0])
_RIB_COUNT = 11

#: A scalar or one value per slice of the grid.
Values = np.ndarray | float
#: Tissue codes a solid may paint over (``None``: anything).
Over = Sequence[int] | None
#: Extra restriction of a solid: ``clip(u, v, zslice) -> bool mask`` on its bounding box.
Clip = Callable[[np.ndarray, np.ndarray, slice], np.ndarray] | None
_VERTEBRA_PITCH_S = 0.042


def region_of(s: float) -> str:
    """The region name of anatomical height ``s``."""
    for name, upper in REGIONS:
        if s < upper:
            return name
    raise AssertionError("unreachable: the last region is unbounded")


@dataclass(frozen=True)
class Sphere:
    """A lesion: centre in the body frame (``u``, ``v`` mm; ``s`` height), radius in mm, its HU."""

    u: float
    v: float
    s: float
    radius: float
    hu: float


@dataclass(frozen=True)
class Patient:
    """Everything random about one synthetic patient; the anatomy recipe turns it into a volume."""

    case: str
    sex: str  # "M" | "F"
    age: int
    site: str  # "A" | "B" | "C"
    centre: tuple[float, float]  # body centre (x, y) in mm, LPS
    roll: float  # radians, rotation about z
    width: float  # body half-width scale
    depth: float  # body half-depth scale
    fat: float  # subcutaneous fat thickness, mm
    lung_base: float  # s of the lung bases / diaphragm
    lung_apex: float
    heart_ratio: float  # cardiothoracic ratio (heart width / inner thorax width)
    effusion: tuple[str, ...]  # sides ("right", "left") with a pleural effusion
    effusion_level: float  # half-space threshold: lower = more fluid
    nodules: tuple[Sphere, ...]
    liver_lesions: tuple[Sphere, ...]
    bowel: tuple[Sphere, ...]
    vessel_seed: int
    breast_size: float  # scale of the breasts (female patients)
    aorta_scale: float  # aortic calibre; grows with age

    @property
    def cardiomegaly(self) -> bool:
        return self.heart_ratio > 0.5

    def half_width(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, _S_KNOTS, _HALF_WIDTH) * self.width

    def half_depth(self, s: np.ndarray | float) -> np.ndarray:
        return np.interp(s, _S_KNOTS, _HALF_DEPTH) * self.depth

    def inner_width(self, s: np.ndarray | float) -> np.ndarray:
        """Half-width inside fat and chest-wall muscle: the rib cage / abdominal cavity."""
        return self.half_width(s) - self.fat - 14.0

    def inner_depth(self, s: np.ndarray | float) -> np.ndarray:
        return self.half_depth(s) - self.fat - 14.0

    def lung_centre(self) -> float:
        return self.lung_base + 0.55 * (self.lung_apex - self.lung_base)

    def lung_axes(
        self, side: str, s: np.ndarray | float | None = None
    ) -> tuple[Values, Values, Values, Values]:
        """Centre ``u``, ``v`` and semi-axes of one lung's outline, following the rib cage at height ``s``.

        Without ``s``: at the lung centre height. The lung's actual cross-section is this outline scaled by
        ``sqrt(lung_profile(s))``.
        """
        s = self.lung_centre() if s is None else s
        w, d = self.inner_width(s), self.inner_depth(s)
        sign = -1.0 if side == "right" else 1.0  # the patient's right is -x (LPS)
        return sign * 0.5 * w, 0.02 * d, 0.46 * w, 0.8 * d

    def lung_profile(self, s: np.ndarray) -> np.ndarray:
        """Squared cross-section scale of the lungs at height ``s``: a dome at the apex, a flat base."""
        sc = self.lung_centre()
        up = 1.0 - ((s - sc) / (self.lung_apex - sc)) ** 2
        down = 1.0 - ((sc - s) / (sc - self.lung_base)) ** 4
        return np.clip(np.where(s >= sc, up, down), 0.0, None)

    def lung_height(self, s: np.ndarray | float) -> np.ndarray:
        """Signed normalised height in the lung: -1 at the base, 0 at the centre, +1 at the apex."""
        sc = self.lung_centre()
        s = np.asarray(s, dtype=np.float64)
        return np.where(s >= sc, (s - sc) / (self.lung_apex - sc), (s - sc) / (sc - self.lung_base))

    def heart(self) -> tuple[float, float, float, float, float, float]:
        """Heart ellipsoid: centre ``u``, ``v``, ``s`` and semi-axes (mm, mm, s)."""
        sh = self.lung_base + 0.22 * (self.lung_apex - self.lung_base)
        w, d = float(self.inner_width(sh)), float(self.inner_depth(sh))
        au = self.heart_ratio * w
        return 0.16 * w, -0.32 * d, sh, au, 0.5 * d * np.sqrt(self.heart_ratio / 0.43), 0.095

    def liver(self) -> tuple[float, float, float, float, float, float]:
        top = self.lung_base + 0.07
        w, d = float(self.inner_width(0.33)), float(self.inner_depth(0.33))
        return -0.42 * w, -0.05 * d, top - 0.11, 0.55 * w, 0.78 * d, 0.11

    def effusion_mask(self, v: np.ndarray, s: np.ndarray, side: str) -> np.ndarray:
        """Fluid in the posterior-inferior lung: a tilted half-space in normalised lung coordinates."""
        _, cv, _, av = self.lung_axes(side, s)
        return 0.5 * (v - cv) / av - 0.85 * self.lung_height(s) > self.effusion_level


@dataclass(frozen=True)
class Grid:
    """Sample positions: ``x`` (columns) and ``y`` (rows) in world mm, ``s`` per slice, ``length`` mm per s."""

    x: np.ndarray
    y: np.ndarray
    s: np.ndarray
    length: float

    @property
    def pixel(self) -> float:
        """The coarser in-plane step: the width of a partial-volume edge."""
        return float(max(abs(self.x[1] - self.x[0]), abs(self.y[1] - self.y[0])))


class Canvas:
    """HU values and tissue codes on a grid, with painters for the solids of the anatomy."""

    def __init__(self, grid: Grid, patient: Patient) -> None:
        self.grid, self.p = grid, patient
        shape = (len(grid.s), len(grid.y), len(grid.x))
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.tissue = np.full(shape, AIR, dtype=np.uint8)
        dx = grid.x[None, :] - patient.centre[0]
        dy = grid.y[:, None] - patient.centre[1]
        c, s = np.cos(patient.roll), np.sin(patient.roll)
        self.u = (c * dx + s * dy).astype(np.float32)
        self.v = (-s * dx + c * dy).astype(np.float32)
        self.z = (grid.s * grid.length).astype(np.float32)
        self._ascending_x = grid.x[-1] > grid.x[0]
        self._ascending_y = grid.y[-1] > grid.y[0]

    def _window(self, coords: np.ndarray, lo: float, hi: float, ascending: bool) -> slice:
        order = coords if ascending else coords[::-1]
        i0, i1 = np.searchsorted(order, lo), np.searchsorted(order, hi, side="right")
        return slice(i0, i1) if ascending else slice(len(coords) - i1, len(coords) - i0)

    def _box(self, cu: np.ndarray, cv: np.ndarray, radius: float) -> tuple[slice, slice]:
        """Rows and columns that can hold body-frame points within ``radius`` of centres ``(cu, cv)``."""
        c, s = np.cos(self.p.roll), np.sin(self.p.roll)
        wx = self.p.centre[0] + c * cu - s * cv
        wy = self.p.centre[1] + s * cu + c * cv
        pad = radius + 2 * self.grid.pixel
        rows = self._window(self.grid.y, float(np.min(wy)) - pad, float(np.max(wy)) + pad, self._ascending_y)
        cols = self._window(self.grid.x, float(np.min(wx)) - pad, float(np.max(wx)) + pad, self._ascending_x)
        return rows, cols

    def _apply(self, block: tuple[slice, ...], mask: np.ndarray, hu: float, tissue: int, over: Over) -> None:
        if over is not None:
            mask &= _lookup(over)[self.tissue[block]]
        self.hu[block][mask] = hu
        self.tissue[block][mask] = tissue

    def ellipse(
        self,
        cu: Values,
        cv: Values,
        au: Values,
        av: Values,
        hu: float,
        tissue: int,
        over: Over = None,
        clip: Clip = None,
    ) -> None:
        """A solid whose axial cross-section is an ellipse with per-slice centre and semi-axes.

        ``cu``, ``cv``, ``au``, ``av`` are scalars or arrays over the grid's slices (a semi-axis ≤ 0 means
        absent there); ``clip(u, v, zslice)`` may further restrict the mask (e.g. an effusion's fluid level).
        """
        n = len(self.grid.s)
        cu, cv, au, av = (np.broadcast_to(np.asarray(a, dtype=np.float32), (n,)) for a in (cu, cv, au, av))
        present = np.nonzero((au > 0) & (av > 0))[0]
        if present.size == 0:
            return
        zs = slice(int(present[0]), int(present[-1]) + 1)
        rows, cols = self._box(cu[zs], cv[zs], float(max(au[zs].max(), av[zs].max())))
        u, v = self.u[rows, cols][None], self.v[rows, cols][None]
        with np.errstate(divide="ignore", invalid="ignore"):
            q = ((u - cu[zs, None, None]) / au[zs, None, None]) ** 2 + (
                (v - cv[zs, None, None]) / av[zs, None, None]
            ) ** 2
        mask = q <= 1.0
        if clip is not None:
            mask &= clip(u, v, zs)
        self._apply((zs, rows, cols), mask, hu, tissue, over)

    def ellipsoid(
        self,
        cu: float,
        cv: float,
        cs: float,
        au: float,
        av: float,
        as_: float,
        hu: float,
        tissue: int,
        over: Over = None,
        clip: Clip = None,
    ) -> None:
        """An ellipsoid with semi-axes in mm (``au``, ``av``) and in height units (``as_``)."""
        f = np.sqrt(np.clip(1.0 - ((self.grid.s - cs) / as_) ** 2, 0.0, None))
        self.ellipse(cu, cv, au * f, av * f, hu, tissue, over, clip)

    def capsule(
        self, a: Sequence[float], b: Sequence[float], radius: float, hu: float, tissue: int, over: Over = None
    ) -> None:
        """A tube of ``radius`` mm between body-frame points ``(u, v, s)``, with partial-volume edges."""
        p0 = np.array([a[0], a[1], a[2] * self.grid.length], dtype=np.float32)
        p1 = np.array([b[0], b[1], b[2] * self.grid.length], dtype=np.float32)
        pad = radius + self.grid.pixel
        zlo, zhi = min(p0[2], p1[2]) - pad, max(p0[2], p1[2]) + pad
        zs = self._window(self.z, zlo, zhi, True)
        if zs.stop <= zs.start:
            return
        rows, cols = self._box(np.array([p0[0], p1[0]]), np.array([p0[1], p1[1]]), radius)
        u, v = self.u[rows, cols][None], self.v[rows, cols][None]
        z = self.z[zs, None, None]
        w = p1 - p0
        t = ((u - p0[0]) * w[0] + (v - p0[1]) * w[1] + (z - p0[2]) * w[2]) / max(float(w @ w), 1e-6)
        t = np.clip(t, 0.0, 1.0)
        d = np.sqrt((u - p0[0] - t * w[0]) ** 2 + (v - p0[1] - t * w[1]) ** 2 + (z - p0[2] - t * w[2]) ** 2)
        frac = np.clip(0.5 + (radius - d) / self.grid.pixel, 0.0, 1.0)
        block = (zs, rows, cols)
        if over is not None:
            frac = frac * _lookup(over)[self.tissue[block]]
        self.hu[block] += frac * (hu - self.hu[block])
        self.tissue[block][frac >= 0.5] = tissue

    def sphere(self, sph: Sphere, tissue: int, over: Over = None) -> None:
        self.capsule((sph.u, sph.v, sph.s), (sph.u, sph.v, sph.s), sph.radius, sph.hu, tissue, over)

    def ribs(self, hu: float) -> None:
        """Eleven pairs of ribs: tubes just inside the chest wall that slope down toward the front.

        Evaluated only on the in-plane ring of pixels that the rib cage can reach at some height, which is
        a small part of each slice.
        """
        p, s = self.p, self.grid.s
        first = p.lung_apex - 0.03
        pitch = (first - (p.lung_base - 0.06)) / (_RIB_COUNT - 1)
        drop = 2.2 * pitch
        half_height = 0.2 * pitch
        zsel = np.nonzero(
            (s <= first + half_height) & (s >= first - (_RIB_COUNT - 1) * pitch - drop - half_height)
        )[0]
        if zsel.size == 0:
            return
        zs = slice(int(zsel[0]), int(zsel[-1]) + 1)
        ru = p.inner_width(s[zs]) + 6.0
        rv = p.inner_depth(s[zs]) + 6.0
        outer = (self.u / (ru.max() + 5.0)) ** 2 + (self.v / (rv.max() + 5.0)) ** 2 <= 1.0
        inner = (self.u / (ru.min() - 5.0)) ** 2 + (self.v / (rv.min() - 5.0)) ** 2 >= 1.0
        rows, cols = np.nonzero(outer & inner)
        u, v = self.u[rows, cols][None], self.v[rows, cols][None]
        ru, rv, ss = ru[:, None], rv[:, None], s[zs, None]
        phi = np.arctan2(u, v)  # 0 at the spine (posterior), ±π at the sternum
        radial_mm = (np.sqrt((u / ru) ** 2 + (v / rv) ** 2) - 1.0) * np.sqrt(ru * rv)
        slope = drop * (1.0 - np.cos(phi)) / 2.0
        k = np.clip(np.rint((first - slope - ss) / pitch), 0, _RIB_COUNT - 1)
        ds = ss - (first - k * pitch - slope)
        mask = (np.abs(ds) <= half_height) & (np.abs(radial_mm) <= 4.0) & (np.abs(phi) <= 0.78 * np.pi)
        z_hit, c_hit = np.nonzero(mask)
        index = (z_hit + zs.start, rows[c_hit], cols[c_hit])
        keep = _lookup((FAT, SOFT))[self.tissue[index]]
        index = tuple(i[keep] for i in index)
        self.hu[index] = hu
        self.tissue[index] = BONE


def _lookup(tissues: Sequence[int]) -> np.ndarray:
    """Boolean table over tissue codes: indexing it with a tissue array is a fast ``np.isin``."""
    table = np.zeros(256, dtype=bool)
    table[list(tissues)] = True
    return table


def render(patient: Patient, grid: Grid, effusion: bool = True) -> Canvas:
    """The patient on ``grid``: ``.hu`` (``z × y × x`` = slices × rows × columns, noise-free, sharp) and
    ``.tissue`` (the tissue code of each voxel, e.g. ``LUNG``), the ground truth that tests check HU against.

    Painted outside in, each step over what is already there: body wall, lungs, mediastinum, abdomen, spine.
    ``effusion=False`` leaves out the pleural fluid (to measure what it changes)."""
    cv = Canvas(grid, patient)
    _body_wall(cv)
    _lungs(cv, effusion)
    _mediastinum(cv)
    _lung_contents(cv)
    _abdomen(cv)
    _spine_and_clavicles(cv)
    return cv


def _neck_blend(s: np.ndarray) -> np.ndarray:
    """0 below the shoulders, rising to 1 in the neck: thins the fat and the vertebrae."""
    return np.clip((s - 0.8) / 0.08, 0.0, 1.0)


def _body_wall(cv: Canvas) -> None:
    """Body outline, breasts, subcutaneous fat, muscle, visceral fat with bowel loops, ribs and sternum."""
    p, s = cv.p, cv.grid.s
    w, d = p.half_width(s), p.half_depth(s)
    fat = p.fat * (1.0 - 0.6 * _neck_blend(s))
    iw, idp = p.inner_width(s), p.inner_depth(s)
    cv.ellipse(0.0, 0.0, w, d, -100.0, FAT)
    if p.sex == "F":
        breast_s = p.lung_base + 0.3 * (p.lung_apex - p.lung_base)
        size = p.breast_size
        for sign in (-1.0, 1.0):
            bu = sign * 0.42 * p.half_width(breast_s)
            bv = -p.half_depth(breast_s)
            cv.ellipsoid(bu, 0.9 * bv, breast_s, 55.0 * size, 42.0 * size, 0.085, -90.0, FAT)
            cv.ellipsoid(bu, 0.92 * bv, breast_s, 30.0 * size, 22.0 * size, 0.05, 15.0, SOFT)  # glandular
    cv.ellipse(0.0, 0.0, w - fat, d - fat, 45.0, SOFT)
    abdomen = np.where(s < p.lung_base - 0.02, 1.0, 0.0)
    cv.ellipse(0.0, -0.1 * idp, 0.8 * iw * abdomen, 0.6 * idp * abdomen, -90.0, FAT, over=(SOFT,))
    for loop in p.bowel:
        cv.sphere(loop, GAS if loop.hu < -500 else SOFT, over=(FAT, SOFT))
    cv.ribs(650.0)
    sternum = np.where((s > p.lung_base + 0.05) & (s < p.lung_apex - 0.1), 1.0, 0.0)
    cv.ellipse(0.0, -(d - fat - 9.0), 14.0 * sternum, 6.0 * sternum, 550.0, BONE)


def _lungs(cv: Canvas, effusion: bool) -> None:
    """Both lungs, then the pleural effusion as fluid filling the posterior-inferior part of a lung."""
    p, s = cv.p, cv.grid.s
    for side in ("right", "left"):
        lu, lv, au, av = p.lung_axes(side, s)
        f = np.sqrt(p.lung_profile(s))
        cv.ellipse(lu, lv, au * f, av * f, -850.0, LUNG, over=(SOFT, FAT))
        if effusion and side in p.effusion:

            def fluid(u: np.ndarray, v: np.ndarray, zs: slice, side: str = side) -> np.ndarray:
                return p.effusion_mask(v, s[zs, None, None], side)

            cv.ellipse(lu, lv, au * f, av * f, 10.0, FLUID, over=(LUNG,), clip=fluid)


def _mediastinum(cv: Canvas) -> None:
    """Heart (myocardium around blood), aorta (descending, arch, ascending), trachea and main bronchi."""
    p, s = cv.p, cv.grid.s
    hu_, hv, hs, ha, hb, hz = p.heart()
    cv.ellipsoid(hu_, hv, hs, ha, hb, hz, 40.0, HEART)
    cv.ellipsoid(hu_ + 4.0, hv + 2.0, hs, 0.72 * ha, 0.7 * hb, 0.8 * hz, 50.0, HEART)
    vd = 0.62 * float(p.inner_depth(p.lung_centre())) - 34.0
    aorta = 11.0 * p.aorta_scale
    ascending = (-14.0, hv + 0.45 * hb, hs + 0.06)
    top = p.lung_apex - 0.17
    arch = (-10.0, ascending[1] - 10.0, top + 0.02)
    cv.capsule((22.0, vd, 0.1), (22.0, vd, top), aorta, 45.0, VESSEL)
    cv.capsule((22.0, vd, top), arch, aorta, 45.0, VESSEL)
    cv.capsule(arch, ascending, aorta * 1.1, 45.0, VESSEL)
    carina = p.lung_base + 0.48 * (p.lung_apex - p.lung_base)
    trachea = np.where(s > carina, 9.0, 0.0)
    cv.ellipse(0.0, 0.62 * p.inner_depth(s) - 38.0, trachea, trachea * 0.9, -1000.0, GAS)
    for side in ("right", "left"):
        lu, lv, _, _ = (float(a) for a in p.lung_axes(side))
        start = (float(np.sign(lu)) * 12.0, 0.62 * float(p.inner_depth(carina)) - 38.0, carina)
        cv.capsule(start, (0.5 * lu, lv - 5.0, carina - 0.06), 5.0, -1000.0, GAS, over=(SOFT, LUNG, FAT))


def _lung_contents(cv: Canvas) -> None:
    """Branching vessels from each hilum (only over aerated lung), then the nodules."""
    p = cv.p
    rng = np.random.default_rng(p.vessel_seed)
    for side in ("right", "left"):
        lu, lv, au, _ = p.lung_axes(side)
        outward = -1.0 if side == "right" else 1.0
        hilum = np.array([lu - outward * 0.55 * au, lv, p.lung_centre() - 0.02], dtype=np.float64)
        _branch(cv, p, side, hilum, rng, radius=4.5, depth=0, outward=outward)
    for sph in p.nodules:
        cv.sphere(sph, LESION, over=(LUNG, VESSEL))


def _abdomen(cv: Canvas) -> None:
    """Liver (its dome pushes up into the right lung base) with lesions, spleen, stomach, kidneys."""
    p = cv.p
    lu, lv, ls, lau, lav, las = p.liver()
    cv.ellipsoid(lu, lv, ls, lau, lav, las, 60.0, LIVER, over=(SOFT, FAT, LUNG, GAS, VESSEL))
    for sph in p.liver_lesions:
        cv.sphere(sph, LESION, over=(LIVER,))
    w, d = float(p.inner_width(0.33)), float(p.inner_depth(0.33))
    viscera = (SOFT, FAT, GAS)
    cv.ellipsoid(
        0.62 * w, 0.35 * d, p.lung_base - 0.03, 0.2 * w, 0.3 * d, 0.07, 45.0, ORGAN, over=viscera
    )  # spleen
    cv.ellipsoid(0.3 * w, -0.35 * d, p.lung_base - 0.05, 0.24 * w, 0.26 * d, 0.08, 25.0, ORGAN, over=viscera)
    cv.ellipsoid(
        0.32 * w, -0.48 * d, p.lung_base - 0.04, 0.12 * w, 0.1 * d, 0.04, -1000.0, GAS, over=(ORGAN,)
    )
    for sign, centre in ((-1.0, 0.21), (1.0, 0.23)):
        ku, kv = sign * 0.42 * w, 0.48 * d
        cv.ellipsoid(ku, kv, centre, 40.0, 34.0, 0.12, -95.0, FAT, over=viscera)  # perirenal fat
        cv.ellipsoid(ku, kv, centre, 28.0, 24.0, 0.09, 45.0, KIDNEY)  # cortex
        cv.ellipsoid(ku, kv, centre, 17.0, 14.0, 0.06, 32.0, KIDNEY)  # medulla


def _spine_and_clavicles(cv: Canvas) -> None:
    """Vertebral bodies (cortex, cancellous core, discs), posterior arch, canal; clavicles at the shoulders."""
    p, s = cv.p, cv.grid.s
    spine_v = 0.62 * p.inner_depth(s)
    disc = np.where(np.mod(s / _VERTEBRA_PITCH_S, 1.0) < 0.22, 1.0, 0.0)
    body = 17.0 + 5.0 * (1.0 - _neck_blend(s))
    cv.ellipse(0.0, spine_v, body, body * 0.85, 800.0, BONE)
    cv.ellipse(0.0, spine_v, body - 3.0, body * 0.85 - 3.0, 420.0, BONE)
    cv.ellipse(0.0, spine_v, body * disc, body * 0.85 * disc, 85.0, SOFT)
    cv.ellipse(0.0, spine_v + body + 9.0, 16.0, 13.0, 700.0, BONE)
    cv.ellipse(0.0, spine_v + body + 26.0, 5.0, 11.0, 750.0, BONE)
    cv.ellipse(0.0, spine_v + body + 9.0, 8.0, 7.5, 15.0, SOFT)
    for sign in (-1.0, 1.0):
        medial = (sign * 14.0, -(float(p.half_depth(0.82)) - 12.0), 0.805)
        lateral = (sign * 0.85 * float(p.half_width(0.8)), -0.2 * float(p.half_depth(0.8)), 0.83)
        cv.capsule(medial, lateral, 7.0, 700.0, BONE, over=(SOFT, FAT, LUNG))


def _branch(
    cv: Canvas,
    p: Patient,
    side: str,
    start: np.ndarray,
    rng: np.random.Generator,
    *,
    radius: float,
    depth: int,
    outward: float,
) -> None:
    """One vessel segment toward the lung periphery, then two thinner children (three generations)."""
    lu, lv, au, av = p.lung_axes(side)
    sc = p.lung_centre()
    lateral = outward * rng.uniform(0.25, 0.6) * au
    end = start + np.array([lateral, rng.uniform(-0.45, 0.45) * av, rng.uniform(-0.13, 0.15)])
    # Keep the end inside the lung: pull it toward the lung centre until its normalised radius is < 0.9.
    for _ in range(8):
        f = float(p.lung_profile(np.array([end[2]]))[0])
        r2 = ((end[0] - lu) / au) ** 2 + ((end[1] - lv) / av) ** 2
        if f > 0.05 and r2 < 0.81 * f:
            break
        end = 0.5 * (end + np.array([lu, lv, sc]))
    cv.capsule(tuple(start), tuple(end), radius, 40.0, VESSEL, over=(LUNG, VESSEL))
    if depth < 2:
        for _ in range(2):
            _branch(cv, p, side, end, rng, radius=radius * 0.62, depth=depth + 1, outward=outward)


#: Findings are assigned in blocks of four consecutive cases: in each block exactly one patient has each
#: finding, plus an independent chance of this much for the other three (so ~25 % + 3/4 of it overall).
#: A small corpus (the default has 8 cases) then always holds positives for every task, while case ``i``
#: still depends only on ``(seed, i)``.
EXTRA_FINDING_RATE = {"nodules": 0.15, "effusion": 0.0, "cardiomegaly": 0.03, "liver_lesions": 0.07}
BLOCK = 4


def _block_roles(seed: int, index: int) -> dict[str, bool | str]:
    """This case's findings, site and sex from the balanced design of its block of four cases."""
    rng = np.random.default_rng([seed, index // BLOCK, 7])
    slot = index % BLOCK
    roles: dict[str, bool | str] = {
        name: bool(rng.permutation(BLOCK)[slot] == 0) for name in EXTRA_FINDING_RATE
    }
    roles["site"] = ("A", "B", "C", "ABC"[int(rng.integers(3))])[int(rng.permutation(BLOCK)[slot])]
    roles["sex"] = ("M", "M", "F", "F")[int(rng.permutation(BLOCK)[slot])]
    return roles


def sample_patient(seed: int, index: int) -> Patient:
    """Patient ``index`` of the corpus drawn with ``seed``; independent of how many cases are generated."""
    roles = _block_roles(seed, index)
    rng = np.random.default_rng([seed, index])
    has = {name: roles[name] or rng.random() < rate for name, rate in EXTRA_FINDING_RATE.items()}
    sex = str(roles["sex"])
    age = int(rng.integers(22, 90))
    base = Patient(
        case=f"CASE{index:04d}",
        sex=sex,
        age=age,
        site=str(roles["site"]),
        centre=(float(rng.normal(0.0, 9.0)), float(rng.normal(8.0, 9.0))),
        roll=float(np.clip(rng.normal(0.0, 0.05), -0.1, 0.1)),
        width=float(np.clip(rng.normal(1.0, 0.07), 0.82, 1.18)) * (0.93 if sex == "F" else 1.0),
        depth=float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2)) * (0.94 if sex == "F" else 1.0),
        fat=float(np.clip(rng.uniform(5.0, 22.0) + 0.08 * (age - 50), 4.0, 30.0)),
        lung_base=float(0.415 + rng.normal(0.0, 0.01)),
        lung_apex=float(0.86 + rng.normal(0.0, 0.008)),
        heart_ratio=float(rng.uniform(0.56, 0.64) if has["cardiomegaly"] else rng.uniform(0.38, 0.46)),
        effusion=(("right",), ("left",), ("right", "left"))[int(rng.integers(3))] if has["effusion"] else (),
        effusion_level=float(rng.uniform(0.4, 0.62)),
        nodules=(),
        liver_lesions=(),
        bowel=(),
        vessel_seed=int(rng.integers(2**31)),
        breast_size=float(rng.uniform(0.8, 1.3)),
        aorta_scale=float(np.clip(0.85 + age / 250, 0.9, 1.25)),
    )
    nodules = _nodules(base, rng) if has["nodules"] else ()
    lesions = _liver_lesions(base, rng) if has["liver_lesions"] else ()
    return replace(base, nodules=nodules, liver_lesions=lesions, bowel=_bowel(base, rng))


def _nodules(p: Patient, rng: np.random.Generator) -> tuple[Sphere, ...]:
    """1–4 solid nodules in the lateral lung above the diaphragm, clear of the heart and of any effusion."""
    sc = p.lung_centre()
    found: list[Sphere] = []
    target = int(rng.integers(1, 5))
    for _attempt in range(1000):  # rejection sampling; accepts within a few tries
        if len(found) == target:
            break
        side = "right" if rng.random() < 0.5 else "left"
        xi, eta, zeta = rng.uniform(-0.1, 0.6), rng.uniform(-0.55, 0.5), rng.uniform(-0.7, 0.6)
        s = sc + zeta * ((p.lung_apex - sc) if zeta > 0 else (sc - p.lung_base))
        lu, lv, au, av = (float(a) for a in p.lung_axes(side, s))
        radius = float(rng.uniform(6.0, 10.0))
        u = lu + (1.0 if side == "left" else -1.0) * xi * au
        v = lv + eta * av
        inside = (abs(xi) + 0.16) ** 2 + (abs(eta) + 0.16) ** 2 <= float(p.lung_profile(np.array([s]))[0])
        in_heart = _inside((u, v, s), p.heart(), radius)
        in_liver = _inside((u, v, s), p.liver(), radius)
        wet = side in p.effusion and 0.5 * eta - 0.85 * zeta > p.effusion_level - 0.25
        if inside and not in_heart and not in_liver and not wet:
            found.append(Sphere(float(u), float(v), float(s), radius, float(rng.uniform(-50.0, 50.0))))
    return tuple(found)


def _inside(point: tuple[float, float, float], ellipsoid: tuple[float, ...], margin_mm: float) -> bool:
    """Is ``(u, v, s)`` within ``margin_mm`` of an ellipsoid (centre u, v, s; semi-axes mm, mm, s)?

    The margin along ``s`` assumes 150 mm per unit of s, shorter than any grid's body length: it errs wide.
    """
    cu, cv, cs, au, av, as_ = ellipsoid
    u, v, s = point
    return ((u - cu) / (au + margin_mm)) ** 2 + ((v - cv) / (av + margin_mm)) ** 2 + (
        (s - cs) / (as_ + margin_mm / 150.0)
    ) ** 2 <= 1.0


def _liver_lesions(p: Patient, rng: np.random.Generator) -> tuple[Sphere, ...]:
    """1–3 hypodense spheres well inside the liver."""
    lu, lv, ls, au, av, as_ = p.liver()
    found: list[Sphere] = []
    target = int(rng.integers(1, 4))
    for _attempt in range(1000):  # rejection sampling; accepts within a few tries
        if len(found) == target:
            break
        radius = float(rng.uniform(6.0, 12.0))
        # Normalised position in the liver shrunk by the lesion radius (s margin: the shortest CT body length).
        xi, eta, zeta = rng.uniform(-0.7, 0.7, size=3)
        if xi**2 + eta**2 + zeta**2 <= 0.49:
            u = lu + xi * (au - radius)
            v = lv + eta * (av - radius)
            s = ls + zeta * (as_ - radius / 200.0)
            found.append(Sphere(u, v, s, radius, float(rng.uniform(10.0, 30.0))))
    return tuple(found)


def _bowel(p: Patient, rng: np.random.Generator) -> tuple[Sphere, ...]:
    """Bowel loops below the liver: gas-filled (dark) or fluid-filled spheres in the visceral fat."""
    loops = []
    for _ in range(int(rng.integers(8, 15))):
        s = float(rng.uniform(0.0, p.lung_base - 0.1))
        w, d = float(p.inner_width(s)), float(p.inner_depth(s))
        hu = -950.0 if rng.random() < 0.4 else float(rng.uniform(10.0, 35.0))
        loops.append(
            Sphere(
                float(rng.uniform(-0.6, 0.6) * w),
                float(rng.uniform(-0.65, 0.2) * d),
                s,
                float(rng.uniform(7.0, 16.0)),
                hu,
            )
        )
    return tuple(loops)
