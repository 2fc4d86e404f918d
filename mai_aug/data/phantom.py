"""A synthetic chest X-ray phantom in NIH ChestX-ray14's exact layout (the embedded default dataset) or CheXpert's.

``--layout chexpert`` writes the same images in CheXpert-v1.0's layout (train.csv, valid.csv, patient/study
folders), labelled with CheXpert's observations mapped from the planted findings (:data:`CHEXPERT_FROM_NIH`).

Every image is rendered from an attenuation map in canonical thorax coordinates (x, y in [-1, 1], x to the image
right, which is the patient's left, y down), then placed by a per-image acquisition (rotation, shift, scale,
exposure, gamma, noise, blur). A patient's anatomy is drawn once from the patient's seed, so follow-ups share it.
Chronic findings (Cardiomegaly, Emphysema, Fibrosis, Hernia, Pleural_Thickening) belong to the patient; the others
are drawn per image. Because every finding is planted, the phantom is ground truth for tests.
"""

from __future__ import annotations

import csv
import json
import math
import signal
import struct
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image
from scipy import ndimage

from mai_aug.core.choices import PHANTOM_LAYOUTS, TEST_SHIFTS
from mai_aug.core.errors import MaiAugError
from mai_aug.core.threads import available_cores
from mai_aug.data.datasets.chexpert import HEADER as CHEXPERT_HEADER
from mai_aug.data.datasets.chexpert import OBSERVATIONS as CHEXPERT_OBSERVATIONS
from mai_aug.data.datasets.chexpert import TRAIN_CSV as CHEXPERT_TRAIN_CSV
from mai_aug.data.datasets.chexpert import VALID_CSV as CHEXPERT_VALID_CSV
from mai_aug.data.nih import FINDINGS, HEADER, NO_FINDING

# Image-level prevalences, ranked as in NIH ChestX-ray14 (Infiltration commonest, Hernia rarest), with floors so
# that every finding has positives in a 20 % test split of the default 3000 images.
PREVALENCE: dict[str, float] = {
    "Infiltration": 0.17,
    "Effusion": 0.12,
    "Atelectasis": 0.10,
    "Nodule": 0.075,
    "Mass": 0.065,
    "Pneumothorax": 0.06,
    "Consolidation": 0.055,
    "Pleural_Thickening": 0.05,
    "Cardiomegaly": 0.045,
    "Emphysema": 0.04,
    "Edema": 0.037,
    "Fibrosis": 0.035,
    "Pneumonia": 0.03,
    "Hernia": 0.025,
}
CHRONIC: tuple[str, ...] = ("Cardiomegaly", "Emphysema", "Fibrosis", "Hernia", "Pleural_Thickening")
LOCALISED: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,"
LUT_SIZE, LUT_MAX_ATT = 4096, 4.0
HALF_RES_LAYER_FROM = 128
# Band-pass sigmas (fractions of the image size) of the texture banks.
TEXTURES: dict[str, tuple[float, float]] = {
    "vessels": (0.008, 0.035), "reticular": (0.004, 0.012), "bronchi": (0.006, 0.02), "patchy": (0.012, 0.05),
}
NOISE_BANK_SEED = 20170901
# NIH's files are 1024 px at about 0.143 mm a pixel; the phantom keeps the field of view.
NIH_SIZE, NIH_SPACING = 1024, 0.143
# CheXpert's observation columns from the planted NIH findings: positive when any source finding is planted.
# Emphysema, Fibrosis and Hernia have no CheXpert column; Enlarged Cardiomediastinum, Fracture and Support Devices
# are never planted, so their cells stay blank (not mentioned), as does any observation not planted.
CHEXPERT_FROM_NIH: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("Cardiomegaly",),
    "Lung Opacity": ("Atelectasis", "Consolidation", "Edema", "Pneumonia", "Infiltration", "Mass", "Nodule"),
    "Lung Lesion": ("Mass", "Nodule"),
    "Edema": ("Edema",),
    "Consolidation": ("Consolidation",),
    "Pneumonia": ("Pneumonia",),
    "Atelectasis": ("Atelectasis",),
    "Pneumothorax": ("Pneumothorax",),
    "Pleural Effusion": ("Effusion",),
    "Pleural Other": ("Pleural_Thickening",),
}
# A CheXpert observation whose strongest source finding was planted below this severity (the phantom draws
# severities uniformly in 0.2 to 1.0) is written -1.0, uncertain: the subtle finding a report calls "possible".
# About one single-source positive in eight.
CHEXPERT_UNCERTAIN_BELOW = 0.3
# CheXpert's image folders: train.csv's patients (False) and valid.csv's, the test patients (True).
CHEXPERT_DIRS: tuple[str, str] = ("train", "valid")
# What a phantom of either layout writes besides phantom.json (cleared by --overwrite).
IMAGE_GLOBS: tuple[str, ...] = ("images/*.png", "train/patient*/study*/*.png", "valid/patient*/study*/*.png")
TABLE_FILES: tuple[str, ...] = ("Data_Entry_2017_v2020.csv", "BBox_List_2017.csv", "train_val_list.txt",
                                "test_list.txt", "train.csv", "valid.csv")


@dataclass
class Acquisition:
    """How one image was taken: positioning and exposure."""

    angle: float
    shift: tuple[float, float]
    scale: float
    exposure: float
    gamma: float
    noise: float
    blur: float


@dataclass
class Anatomy:
    """A patient's thorax in canonical coordinates, with the patient-level (chronic) findings."""

    seed: int
    thorax_w: float
    lung_r: tuple[float, float, float, float]  # cx, cy, rx, ry of the right lung (image left)
    lung_l: tuple[float, float, float, float]
    dome_r: float  # dome apex height (y) of the right hemidiaphragm: higher (smaller y) than the left
    dome_l: float
    dome_curv: float
    heart: tuple[float, float, float, float, float]  # cx, cy, rx, ry, tilt (radians)
    rib_y0: float
    rib_gap: float
    soft: float
    chronic: dict[str, float] = field(default_factory=dict)  # finding -> severity


@dataclass
class PhantomImage:
    """One rendered image: pixels (H, W) uint8, its findings and boxes in pixel coordinates."""

    pixels: np.ndarray
    findings: list[str]
    boxes: list[tuple[str, float, float, float, float]]


def _pil_affine(inv: np.ndarray, offset: np.ndarray) -> tuple[float, ...]:
    """PIL's AFFINE coefficients (output x, y to input x, y, pixel corners) for a (row, col) map on pixel centres."""
    (a_rr, a_rc), (a_cr, a_cc) = inv
    # input_rc = inv @ output_rc + offset with centres at integers; PIL samples at centres + 0.5.
    off_c = offset[1] + 0.5 - (a_cc + a_cr) * 0.5
    off_r = offset[0] + 0.5 - (a_rc + a_rr) * 0.5
    return (float(a_cc), float(a_cr), float(off_c), float(a_rc), float(a_rr), float(off_r))


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def _sigmoid(v: np.ndarray, soft: float) -> np.ndarray:
    """A soft 0-to-1 edge over about +-2 ``soft``: a clipped smoothstep (several times cheaper than tanh)."""
    t = np.clip(v * (0.25 / soft) + 0.5, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _aortic_knob(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The aortic arch seen end-on: a bulge of the mediastinum into the left (image right) upper lung."""
    return _sigmoid(1 - _ellipse(x, y, 0.085, -0.23, 0.095, 0.075), 0.2)


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float, tilt: float = 0.0) -> np.ndarray:
    """Implicit ellipse value: < 1 inside."""
    if tilt:
        c, s = math.cos(tilt), math.sin(tilt)
        dx, dy = x - cx, y - cy
        u, v = c * dx + s * dy, -s * dx + c * dy
        return (u / rx) ** 2 + (v / ry) ** 2
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2


def _bandpass(rng: np.random.Generator, size: int, lo: float, hi: float) -> np.ndarray:
    """Unit-variance band-passed noise (difference of Gaussians), sigmas as fractions of the size.

    Drawn on a grid of at most 128 px and upsampled: the texture is smooth, and this keeps generation fast.
    """
    small = min(size, 128)
    white = rng.standard_normal((small, small)).astype(np.float32)
    n = ndimage.gaussian_filter(white, max(lo * small, 0.5)) - ndimage.gaussian_filter(white, hi * small)
    if small != size:
        n = np.asarray(Image.fromarray(n, mode="F").resize((size, size), Image.BILINEAR))
    return n / (n.std() + 1e-6)


def sample_anatomy(seed: int, patient: int, chronic: dict[str, float]) -> Anatomy:
    """Draw a patient's thorax; Cardiomegaly and Emphysema change it."""
    r = _rng(seed, patient, 1)
    tw = r.uniform(0.74, 0.84)
    lung_ry = r.uniform(0.56, 0.64)
    # Cardiothoracic ratio = heart width / thoracic width = rx / tw: normal 0.40 to 0.48, enlarged above 0.52.
    heart_rx = tw * r.uniform(0.40, 0.48)
    if "Cardiomegaly" in chronic:
        heart_rx = tw * (0.53 + 0.12 * chronic["Cardiomegaly"])
    dome = r.uniform(0.46, 0.54)
    curv = r.uniform(0.9, 1.3)
    if "Emphysema" in chronic:
        dome += 0.10 * chronic["Emphysema"]
        curv *= 1.0 - 0.7 * chronic["Emphysema"]
    return Anatomy(
        seed=int(r.integers(2**31)),
        thorax_w=tw,
        lung_r=(-tw * 0.50, -0.02, tw * 0.43, lung_ry),
        lung_l=(tw * 0.50, 0.0, tw * 0.40, lung_ry * 1.02),
        dome_r=dome - r.uniform(0.04, 0.08),
        dome_l=dome,
        dome_curv=curv,
        heart=(heart_rx - tw * 0.30, 0.34, heart_rx, r.uniform(0.21, 0.25), r.uniform(0.15, 0.3)),
        rib_y0=r.uniform(-0.72, -0.66),
        rib_gap=r.uniform(0.115, 0.13),
        soft=r.uniform(0.9, 1.1),
        chronic=dict(chronic),
    )


class PhantomRenderer:
    """Render phantom images of one size; per-patient layers are computed once and reused for follow-ups."""

    def __init__(self, size: int = 256, difficulty: float = 1.0) -> None:
        if size < 32:
            raise MaiAugError(f"`size` {size}: phantom images must be at least 32 px")
        if difficulty <= 0:
            raise MaiAugError(f"`difficulty` {difficulty}: must be positive")
        self.size = size
        self.difficulty = difficulty
        c = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        # Broadcastable axes (row = y down, column = x to the image right = the patient's left): terms of x or y
        # alone then cost one line of pixels, not a whole image.
        self.x, self.y = c[None, :], c[:, None]
        self._banks: dict[str, np.ndarray] = {}

    # --- patient layers -------------------------------------------------------------------------------------
    def lungs(self, a: Anatomy, view: str = "PA") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Soft masks of the right and left lung (image left and right) and the heart."""
        x, y = self.x, self.y
        cx, cy, rx, ry, tilt = a.heart
        mag = 1.12 if view == "AP" else 1.0  # AP films magnify the heart
        heart = _sigmoid(1 - _ellipse(x, y, cx, cy, rx * mag, ry * mag, tilt), 0.08)
        medi = _sigmoid(0.085 - np.abs(x - 0.02 - 0.02 * (y + 1)), 0.012) * _sigmoid(0.45 - y, 0.05)
        medi = np.maximum(medi, _aortic_knob(x, y))
        out = []
        for (lcx, lcy, lrx, lry), dome, side in ((a.lung_r, a.dome_r, -1), (a.lung_l, a.dome_l, 1)):
            inside = _sigmoid(1 - _ellipse(x, y, lcx, lcy, lrx, lry), 0.06)
            dome_y = dome + a.dome_curv * 0.35 * (x - lcx) ** 2  # dome surface: lung lies above
            above = _sigmoid(dome_y - y, 0.015)
            medial = _sigmoid(side * x - 0.07, 0.015)
            out.append(inside * above * medial * (1 - heart) * (1 - medi))
        return out[0], out[1], heart

    def patient_layer(self, a: Anatomy, view: str = "PA") -> dict:
        """Attenuation of the patient's anatomy and chronic findings, with the masks findings need.

        From 128 px up it is drawn at half size and upsampled: the anatomy is smooth at that scale, and this
        halves its cost. Image-level findings, noise and blur stay at full resolution.
        """
        if self.size < HALF_RES_LAYER_FROM:
            return self._draw_layer(a, view)
        half = _renderer(self.size // 2, self.difficulty)._draw_layer(a, view)
        layer = {k: self._upsample(v) for k, v in half.items() if isinstance(v, np.ndarray)}
        layer["boxes"] = [(name, self._upsample(mask.astype(np.float32)) > 0.5) for name, mask in half.get("boxes", [])]
        return layer

    def _upsample(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((self.size, self.size), Image.BILINEAR))

    def _draw_layer(self, a: Anatomy, view: str = "PA") -> dict:
        x, y = self.x, self.y
        r_chronic = _rng(a.seed, 1)
        lung_r, lung_l, heart = self.lungs(a, view)
        lung = lung_r + lung_l
        body = _sigmoid(1 - _ellipse(x, y, 0.0, 0.15, a.thorax_w * 1.28, 1.12), 0.04)
        neck = _sigmoid(0.22 - np.abs(x), 0.03) * _sigmoid(-0.5 - y, 0.05)
        shoulders = _sigmoid(1 - _ellipse(x, y, 0.0, -0.55, 1.3, 0.45), 0.08)
        att = a.soft * 0.9 * np.clip(body + neck + shoulders, 0, 1)
        # Vessels: ridges of band-passed noise, densest at the hila, fading to the periphery.
        vessels = np.exp(-((self._texture("vessels", _rng(a.seed, 2)) / 0.3) ** 2))  # same for PA and AP
        hilum = np.exp(-(((np.abs(x) - a.thorax_w * 0.25) / 0.35) ** 2 + ((y - 0.02) / 0.4) ** 2))
        markings = 1.0 - 0.6 * a.chronic.get("Emphysema", 0.0)
        texture = vessels * (0.015 + 0.30 * hilum) * markings + 0.1 * hilum
        layer_texture = texture * lung
        lucency = 0.72 + 0.20 * a.chronic.get("Emphysema", 0.0) / self.difficulty
        att = att - lung * (lucency - texture)
        medi = _sigmoid(0.11 - np.abs(x - 0.01), 0.03) * _sigmoid(0.5 - y, 0.05) * _sigmoid(y + 0.85, 0.05)
        trachea = _sigmoid(0.035 - np.abs(x - 0.005), 0.01) * _sigmoid(-0.22 - y, 0.05)
        # The heart sits on the diaphragm: below the dome it merges with the abdomen instead of showing an edge.
        below = _sigmoid(y - (a.dome_l + 0.02), 0.03)
        att = att + 0.15 * np.maximum(medi, _aortic_knob(x, y)) + 0.12 * heart * (1 - below) - 0.25 * trachea
        # Spine with vertebrae, clavicles, ribs (all ten on a side in one pass: a periodic band along the arc).
        spine = _sigmoid(0.055 - np.abs(x - 0.01), 0.01) * _sigmoid(y + 0.95, 0.02)
        vert = 0.75 + 0.25 * np.cos(2 * np.pi * y / 0.11) ** 2
        att = att + 0.3 * spine * vert
        t = np.clip((np.abs(x) - 0.05) / (a.thorax_w * 0.98), 0, 1.2)
        clav_y = -0.66 - 0.10 * t
        clav = np.exp(-(((y - clav_y) / 0.022) ** 2)) * _sigmoid(t - 0.05, 0.03) * _sigmoid(0.6 - t, 0.03)
        att = att + 0.3 * clav
        arc = -0.12 * np.sin(np.pi * np.clip(t, 0, 1) * 0.8) + 0.30 * t**2
        phase = (y - a.rib_y0 - arc) / a.rib_gap
        k = np.round(phase)
        dist = (phase - k) * a.rib_gap
        width = 0.021 + 0.008 * t
        ribs = np.exp(-((dist / width) ** 4)) * ((k >= 0) & (k < 10)) * _sigmoid(1.02 - t, 0.03) * _sigmoid(t - 0.02, 0.02)
        edge = np.exp(-(((np.abs(dist) - width) / 0.006) ** 2)) * ((k >= 0) & (k < 10)) * _sigmoid(1.02 - t, 0.03)
        chest = _sigmoid(max(a.dome_r, a.dome_l) + 0.1 - y, 0.08)
        att = att + (0.10 * ribs + 0.05 * edge) * chest
        # Gastric bubble under the left hemidiaphragm (image right).
        bubble = _sigmoid(1 - _ellipse(x, y, a.lung_l[0] * 0.8, a.dome_l + 0.14, 0.10, 0.06), 0.05)
        att = att - 0.45 * bubble
        layer = {"att": att.astype(np.float32), "lung_r": lung_r, "lung_l": lung_l, "heart": heart, "texture": layer_texture}
        self._chronic(a, layer, r_chronic)
        return layer

    def _chronic(self, a: Anatomy, layer: dict[str, np.ndarray], r: np.random.Generator) -> None:
        x, y, d = self.x, self.y, self.difficulty
        lung = layer["lung_r"] + layer["lung_l"]
        boxes = layer.setdefault("boxes", [])
        if "Cardiomegaly" in a.chronic:
            boxes.append(("Cardiomegaly", layer["heart"] > 0.5))
        if "Fibrosis" in a.chronic:
            sev = a.chronic["Fibrosis"]
            net = np.abs(self._texture("reticular", r))
            reticular = np.exp(-((net / 0.25) ** 2))
            upper = _sigmoid(0.05 - y, 0.12)
            layer["att"] += (0.10 + 0.25 * sev) / d * reticular * upper * lung
        if "Pleural_Thickening" in a.chronic:
            sev = a.chronic["Pleural_Thickening"]
            side = r.choice([-1, 1])
            cx, cy, rx, ry = a.lung_r if side < 0 else a.lung_l
            e = _ellipse(x, y, cx, cy, rx, ry)
            rim = _sigmoid(e - (1 - 0.20 * (0.4 + sev)), 0.02) * _sigmoid(side * (x - cx), 0.05)
            mask = layer["lung_r"] if side < 0 else layer["lung_l"]
            layer["att"] += (0.25 + 0.3 * sev) / d * rim * mask
        if "Hernia" in a.chronic:
            sev = a.chronic["Hernia"]
            hx, hy = a.heart[0] - 0.05, a.heart[1] + 0.05
            sac = _sigmoid(1 - _ellipse(x, y, hx, hy, 0.10 + 0.05 * sev, 0.08 + 0.03 * sev), 0.05)
            gas = _sigmoid(1 - _ellipse(x, y, hx, hy - 0.02, 0.07, 0.04), 0.03) * (r.random() < 0.6)
            layer["att"] += (0.30 * sac - (0.35 + 0.3 * sev) * gas) / d

    # --- image-level findings -------------------------------------------------------------------------------
    def acute(self, name: str, sev: float, a: Anatomy, layer: dict[str, np.ndarray], r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Attenuation change and footprint mask of one image-level finding."""
        x, y, d = self.x, self.y, self.difficulty
        side = int(r.choice([-1, 1]))
        lung = layer["lung_r"] if side < 0 else layer["lung_l"]
        both = layer["lung_r"] + layer["lung_l"]
        cx, cy, rx, ry = a.lung_r if side < 0 else a.lung_l
        dome = a.dome_r if side < 0 else a.dome_l

        def spot() -> tuple[float, float]:
            return self._spot(lung, (cx, cy, rx, ry), r)

        if name == "Nodule":
            px, py = spot()
            rad = 0.030 + 0.022 * sev
            blob = _sigmoid(1 - _ellipse(x, y, px, py, rad, rad), 0.25)
            return (0.30 + 0.35 * sev) / d * blob, blob > 0.5
        if name == "Mass":
            px, py = spot()
            rad = 0.08 + 0.07 * sev
            blob = _sigmoid(1 - _ellipse(x, y, px, py, rad, rad * r.uniform(0.8, 1.2), r.uniform(0, 3)), 0.2)
            for _ in range(2):
                ox, oy = r.uniform(-0.6, 0.6, 2) * rad
                blob = np.maximum(blob, _sigmoid(1 - _ellipse(x, y, px + ox, py + oy, rad * 0.6, rad * 0.6), 0.2))
            return (0.35 + 0.30 * sev) / d * blob, blob > 0.5
        if name == "Effusion":
            lat = np.clip(np.abs(x - cx) / rx, 0, 1.2)
            level = dome + 0.02 - (0.10 + 0.28 * sev) + 0.18 * lat**2 * -1  # meniscus: fluid climbs laterally
            base = _sigmoid(1 - _ellipse(x, y, cx, cy + 0.05, rx * 1.02, ry * 1.05), 0.04) * _sigmoid(side * x - 0.07, 0.02)
            fluid = _sigmoid(y - level, 0.03) * base * _sigmoid(dome + 0.12 - y, 0.05)
            return (0.40 + 0.35 * sev) / d * fluid * (1 - layer["heart"]), fluid > 0.5
        if name == "Pneumothorax":
            shrink = 1 - (0.12 + 0.20 * sev)
            inner = _ellipse(x, y, cx + side * rx * (1 - shrink) * 0.4, cy + ry * (1 - shrink) * 0.5, rx * shrink, ry * shrink)
            gap = _sigmoid(inner - 1, 0.03) * lung
            line = np.exp(-(((inner - 1) / 0.03) ** 2)) * lung
            lucent = gap * (0.12 + 0.15 * sev) + gap * layer["texture"]  # no lung markings beyond the pleural line
            return (-lucent + 0.15 * line) / d, gap > 0.5
        if name in ("Infiltration", "Pneumonia", "Consolidation"):
            return self._airspace(name, sev, spot(), lung, (rx, ry), r)
        if name == "Atelectasis":
            ang = r.uniform(-0.4, 0.2)
            px, py = cx, dome - r.uniform(0.12, 0.28)
            dist = (np.cos(ang) * (y - py) - np.sin(ang) * (x - px))
            plate = np.exp(-((dist / (0.012 + 0.012 * sev)) ** 2)) * lung
            volume_loss = _sigmoid(y - (dome - 0.05 - 0.07 * sev), 0.02) * lung  # elevated hemidiaphragm
            change = (0.35 + 0.3 * sev) * plate + (0.5 + 0.2 * sev) * volume_loss
            return change / d, (plate + volume_loss) > 0.4
        if name == "Edema":
            return self._edema(sev, a, both, r)
        raise ValueError(name)

    def _spot(self, lung: np.ndarray, box: tuple[float, float, float, float],
              r: np.random.Generator) -> tuple[float, float]:
        """A point well inside the lung ``lung`` whose ellipse is ``box`` (centre x, y, radii x, y)."""
        cx, cy, rx, ry = box
        for _ in range(50):
            px, py = cx + r.uniform(-0.7, 0.7) * rx, cy + r.uniform(-0.7, 0.6) * ry
            i = min(max(int((py + 1) / 2 * self.size), 0), self.size - 1)
            j = min(max(int((px + 1) / 2 * self.size), 0), self.size - 1)
            if lung[i, j] > 0.8:
                return px, py
        return cx, cy

    def _airspace(self, name: str, sev: float, at: tuple[float, float], lung: np.ndarray,
                  radii: tuple[float, float], r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Infiltration, Pneumonia or Consolidation: a patchy (or air-bronchogram) opacity around ``at``."""
        (px, py), (rx, ry) = at, radii
        zone = _sigmoid(1 - _ellipse(self.x, self.y, px, py, rx * r.uniform(0.4, 0.7), ry * r.uniform(0.3, 0.5)), 0.15)
        if name == "Consolidation":
            bronch = np.exp(-((self._texture("bronchi", r) / 0.3) ** 2))
            dens, patch = 0.45 + 0.3 * sev, 1 - 0.5 * bronch
            zone = _sigmoid(zone - 0.3, 0.05)
        else:
            patch = np.clip(self._texture("patchy", r) * 0.6 + 0.5, 0, 1)
            dens = (0.30 + 0.25 * sev) if name == "Infiltration" else (0.40 + 0.3 * sev)
        blob = zone * patch * lung
        return dens / self.difficulty * blob, blob > 0.3

    def _edema(self, sev: float, a: Anatomy, both: np.ndarray, r: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Edema: perihilar bat-wing haze over both lungs and Kerley B lines at the bases."""
        x, y = self.x, self.y
        bat = np.exp(-(((np.abs(x) - 0.25) / 0.25) ** 2 + ((y - 0.05) / 0.35) ** 2)) * both
        kerley = np.zeros((self.size, self.size), np.float32)
        for _ in range(8):
            ky, kside = r.uniform(0.15, 0.45), r.choice([-1, 1])
            kx = kside * a.thorax_w * r.uniform(0.78, 0.9)
            kerley += np.exp(-(((y - ky) / 0.006) ** 2)) * _sigmoid(0.05 - np.abs(x - kx), 0.01)
        change = (0.25 + 0.25 * sev) * bat + 0.25 * kerley * both
        return change / self.difficulty, bat > 0.4

    # --- one image --------------------------------------------------------------------------------------------
    def render(self, a: Anatomy, layer: dict[str, np.ndarray], acute: dict[str, float], acq: Acquisition, seed: int) -> PhantomImage:
        """Render the patient's layer plus ``acute`` findings, placed and exposed by ``acq``."""
        r = _rng(seed)
        att = layer["att"].copy()
        masks: list[tuple[str, np.ndarray]] = list(layer.get("boxes", []))
        for name in FINDINGS:  # fixed order keeps the draws reproducible
            if name in acute:
                change, mask = self.acute(name, acute[name], a, layer, r)
                att += change.astype(np.float32)
                masks.append((name, mask))
        # Place: image coordinate u = scale * R @ canonical + shift, so canonical = R^-1 (u - shift) / scale.
        s = self.size
        c, sn = math.cos(acq.angle), math.sin(acq.angle)
        inv = np.array([[c, sn], [-sn, c]]) / acq.scale  # acting on (row, col) = (y, x)
        center = np.array([s / 2 - 0.5, s / 2 - 0.5])
        shift = np.array(acq.shift[::-1]) * s / 2
        offset = center - inv @ (center + shift)
        # PIL's affine warp is several times faster than scipy's; coefficients map output (x, y) to input (x, y).
        coeffs = _pil_affine(inv, offset)
        placed = np.asarray(Image.fromarray(att, mode="F").transform((s, s), Image.AFFINE, coeffs, Image.BILINEAR))
        img = self._expose(placed, acq)
        if acq.blur > 0.05:
            img = ndimage.gaussian_filter(img, acq.blur * s / 256, truncate=2.5)
        img = img + self._noise(r) * acq.noise
        self._marker(img)
        pixels = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
        fwd = np.linalg.inv(inv)
        boxes = []
        for name, mask in masks:
            if name not in LOCALISED or not mask.any():
                continue
            rows, cols = np.nonzero(mask)
            corners = np.array([[rows.min(), cols.min()], [rows.min(), cols.max()], [rows.max(), cols.min()], [rows.max(), cols.max()]], dtype=float)
            placed_c = (fwd @ (corners - center).T).T + center + shift
            (r0, c0), (r1, c1) = placed_c.min(0).clip(0, s - 1), placed_c.max(0).clip(0, s - 1)
            boxes.append((name, float(c0), float(r0), float(c1 - c0 + 1), float(r1 - r0 + 1)))
        found = sorted(set(acute) | set(a.chronic))
        return PhantomImage(pixels=pixels, findings=found, boxes=boxes)

    def _expose(self, att: np.ndarray, acq: Acquisition) -> np.ndarray:
        """Detector response 1 - exp(-mu A), then exposure and gamma, through a lookup table (faster than pow)."""
        grid = np.linspace(0, LUT_MAX_ATT, LUT_SIZE, dtype=np.float32)
        lut = np.clip((1 - np.exp(-1.3 * grid)) * acq.exposure, 0, 1) ** acq.gamma
        idx = np.clip(att * ((LUT_SIZE - 1) / LUT_MAX_ATT), 0, LUT_SIZE - 1).astype(np.intp)
        return lut[idx]

    def _texture(self, kind: str, r: np.random.Generator) -> np.ndarray:
        """A random window, randomly mirrored, of a fixed band-passed texture bank twice the image size.

        Filtering fresh noise for every patient and finding cost more than the rest of the rendering; windows of
        one bank per texture are as varied and still fully determined by the seed.
        """
        if kind not in self._banks:
            lo, hi = TEXTURES[kind]
            self._banks[kind] = _bandpass(_rng(NOISE_BANK_SEED, len(kind)), 2 * self.size, lo / 2, hi / 2)
        return self._window(self._banks[kind], r)

    def _noise(self, r: np.random.Generator) -> np.ndarray:
        """Unit Gaussian noise: a random window of a fixed noise bank (drawing fresh noise per image is slower)."""
        if "noise" not in self._banks:
            self._banks["noise"] = _rng(NOISE_BANK_SEED).standard_normal((2 * self.size, 2 * self.size), dtype=np.float32)
        return self._window(self._banks["noise"], r)

    def _window(self, bank: np.ndarray, r: np.random.Generator) -> np.ndarray:
        """An image-sized window of ``bank`` at a random offset, randomly mirrored on each axis."""
        i, j = r.integers(0, self.size, 2)
        flip = r.integers(0, 2, 2) * 2 - 1
        return bank[i : i + self.size, j : j + self.size][:: flip[0], :: flip[1]]

    def _marker(self, img: np.ndarray) -> None:
        """A radiographer's side marker: an 'L' at the top of the image right (the patient's left)."""
        s = self.size
        u = max(1, s // 64)
        r0, c0 = 3 * u, s - 8 * u
        img[r0 : r0 + 5 * u, c0 : c0 + u] = 1.0
        img[r0 + 4 * u : r0 + 5 * u, c0 : c0 + 3 * u] = 1.0


def sample_acquisition(r: np.random.Generator, shifted: bool) -> Acquisition:
    """Positioning and exposure of one image; ``shifted`` widens the ranges (another site's test patients)."""
    k = 2.2 if shifted else 1.0
    return Acquisition(
        angle=math.radians(r.uniform(-3, 3) * k),
        shift=(float(r.uniform(-0.03, 0.03) * k), float(r.uniform(-0.03, 0.03) * k)),
        scale=float(r.uniform(0.95, 1.05)),
        exposure=float(r.uniform(1 - 0.10 * k, 1 + 0.10 * k)),
        gamma=float(np.exp(r.uniform(-0.2, 0.2) * k)),
        noise=float(r.uniform(0.008, 0.025)),
        blur=float(r.uniform(0.3, 1.0)),
    )


def sample_patient_findings(r: np.random.Generator, n_images: int) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Chronic findings of a patient and acute findings of each image, with NIH-like co-occurrence."""
    chronic = {f: float(r.uniform(0.2, 1.0)) for f in CHRONIC if r.random() < PREVALENCE[f]}
    images = []
    for _ in range(n_images):
        p = dict(PREVALENCE)
        if "Cardiomegaly" in chronic:
            p["Effusion"], p["Edema"] = p["Effusion"] * 3, p["Edema"] * 4
        found = {}
        for f in ("Infiltration", "Consolidation", "Effusion", "Edema", "Atelectasis", "Pneumonia", "Nodule", "Mass", "Pneumothorax"):
            q = p[f]
            if f == "Pneumonia" and ("Infiltration" in found or "Consolidation" in found):
                q *= 3
            if f == "Atelectasis" and "Effusion" in found:
                q *= 2.5
            if r.random() < q:
                found[f] = float(r.uniform(0.2, 1.0))
        images.append(found)
    return chronic, images


@dataclass
class PhantomSpec:
    """What ``mai-aug phantom`` writes."""

    out: Path
    n: int = 3000
    size: int = 256
    seed: int = 0
    images_per_patient: float = 3.0
    difficulty: float = 1.0
    test_shift: str = "none"
    test_frac: float = 0.2
    layout: str = "nih"


class RenderedImage(NamedTuple):
    """What the dataset's tables need of one written image."""

    name: str  # NIH: the file name in images/; CheXpert: the Path column, relative to the dataset folder
    findings: list[str]
    follow_up: int
    age: int
    sex: str  # M or F
    view: str
    boxes: list[tuple[str, float, float, float, float]]
    severity: dict[str, float]  # planted finding -> severity


def _patient_plan(spec: PhantomSpec) -> list[tuple[int, int, bool]]:
    """(patient id, number of images, is test patient) until ``spec.n`` images are planned."""
    r = _rng(spec.seed, 0)
    plan, total, pid = [], 0, 0
    while total < spec.n:
        pid += 1
        k = int(min(1 + r.poisson(max(spec.images_per_patient - 1, 0)), spec.n - total))
        plan.append((pid, k, bool(r.random() < spec.test_frac)))
        total += k
    return plan


def _site_shifted(spec: PhantomSpec, is_test: bool) -> bool:
    """Whether an image is taken at the shifted site: NIH layout, the test patients'; CheXpert layout, every one."""
    return spec.test_shift == "site" and (is_test or spec.layout == "chexpert")


def image_name(layout: str, pid: int, follow_up: int, is_test: bool) -> tuple[str, str]:
    """An image's name in the dataset's tables and its file, relative to the dataset folder.

    CheXpert's layout holds one study per image: study K is follow-up K - 1, its frontal view ``view1_frontal``.
    """
    if layout == "chexpert":
        rel = f"{CHEXPERT_DIRS[is_test]}/patient{pid:05d}/study{follow_up + 1}/view1_frontal.png"
        return rel, rel
    name = f"{pid:08d}_{follow_up:03d}.png"
    return name, f"images/{name}"


def _render_patient(args: tuple[PhantomSpec, int, int, bool]) -> list[RenderedImage]:
    spec, pid, k, is_test = args
    renderer = _renderer(spec.size, spec.difficulty)
    r = _rng(spec.seed, pid, 2)
    chronic, per_image = sample_patient_findings(r, k)
    anatomy = sample_anatomy(spec.seed, pid, chronic)
    age, sex = int(np.clip(r.normal(47, 17), 1, 95)), ("M" if r.random() < 0.56 else "F")
    views = ["AP" if r.random() < 0.4 else "PA" for _ in range(k)]
    layers: dict[str, dict] = {}
    rows = []
    for f, (acute, view) in enumerate(zip(per_image, views)):
        if view not in layers:
            layers[view] = renderer.patient_layer(anatomy, view)
        ri = _rng(spec.seed, pid, 3, f)
        acq = sample_acquisition(ri, shifted=_site_shifted(spec, is_test))
        image = renderer.render(anatomy, layers[view], acute, acq, seed=int(ri.integers(2**31)))
        name, file = image_name(spec.layout, pid, f, is_test)
        path = spec.out / file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_png(image.pixels))
        rows.append(RenderedImage(name, image.findings, f, age + f // 4, sex, view, image.boxes, {**chronic, **acute}))
    return rows


def encode_png(pixels: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG with zlib level 1 and no row filter.

    Written here because Pillow's encoder spends half its time choosing row filters that buy little on noisy
    radiographs: this is twice as fast for files about 15 % larger. Any PNG reader (Pillow, MONAI) reads it.
    """
    h, w = pixels.shape
    raw = np.empty((h, w + 1), np.uint8)
    raw[:, 0] = 0  # filter type 0 (None) for every row
    raw[:, 1:] = pixels

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)  # 8 bit, grayscale, deflate, no interlace
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 1)) + chunk(b"IEND", b"")


_RENDERERS: dict[tuple[int, float], PhantomRenderer] = {}


def _renderer(size: int, difficulty: float) -> PhantomRenderer:
    key = (size, difficulty)
    if key not in _RENDERERS:
        _RENDERERS[key] = PhantomRenderer(size, difficulty)
    return _RENDERERS[key]


RECORD_NAME = "phantom.json"


def check_spec(spec: PhantomSpec) -> None:
    """Refuse arguments the phantom cannot honour (``nan``/``inf`` included) before anything is written."""
    if spec.n < 1:
        raise MaiAugError(f"`n` {spec.n}: must be at least 1")
    if not math.isfinite(spec.images_per_patient) or spec.images_per_patient < 1:
        raise MaiAugError(f"`images_per_patient` {spec.images_per_patient}: must be a finite number of at least 1")
    if not math.isfinite(spec.difficulty) or spec.difficulty <= 0:
        raise MaiAugError(f"`difficulty` {spec.difficulty}: must be a finite positive number")
    if not math.isfinite(spec.test_frac) or not 0 <= spec.test_frac < 1:
        raise MaiAugError(f"test fraction {spec.test_frac}: must be in [0, 1)")
    if spec.test_shift not in TEST_SHIFTS:
        raise MaiAugError(f"`test_shift` {spec.test_shift!r}: expected none or site")
    if spec.layout not in PHANTOM_LAYOUTS:
        raise MaiAugError(f"`layout` {spec.layout!r}: expected one of {', '.join(PHANTOM_LAYOUTS)}")
    name = Path(spec.out).resolve().name
    if spec.layout == "chexpert" and name in CHEXPERT_DIRS:
        # the CheXpert adapter reads a Path's first folder named as the dataset folder as that folder itself
        raise MaiAugError(f"`out` {spec.out}: a CheXpert-layout folder cannot be named {name!r} (its CSV paths "
                          f"start with {'/ and '.join(CHEXPERT_DIRS)}/)")
    _renderer(spec.size, spec.difficulty)  # validates the size


def _clear_previous(out: Path) -> None:
    """Delete the files a previous phantom wrote in ``out``, of either layout (nothing else).

    A smaller phantom must not leave stale images behind, nor one of the other layout its tables (they would
    decide the dataset ``--dataset auto`` detects).
    """
    for pattern in IMAGE_GLOBS:
        for old in out.glob(pattern):
            old.unlink()
    for name in TABLE_FILES:
        if (out / name).is_file():
            (out / name).unlink()
    for top in CHEXPERT_DIRS:  # the emptied study and patient folders
        for folder in sorted(out.glob(f"{top}/patient*/study*"), reverse=True) + sorted(out.glob(f"{top}/patient*")):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()


def prepare_out(out: Path, overwrite: bool, layout: str = "nih") -> None:
    """Create ``out``; refuse a non-empty folder unless ``overwrite``, which clears the previous phantom first."""
    if out.exists() and not out.is_dir():
        raise MaiAugError(f"`out` {out}: exists and is not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries and not overwrite:
        raise MaiAugError(f"`out` {out}: folder is not empty ({len(entries)} entries, e.g. {entries[0]}); "
                          "pass `overwrite` to replace the dataset there")
    try:
        if overwrite and out.is_dir():
            _clear_previous(out)
        for folder in (CHEXPERT_DIRS if layout == "chexpert" else ("images",)):
            (out / folder).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MaiAugError(f"`out` {out}: cannot create ({e.strerror})") from None


def write_record(spec: PhantomSpec, plan: list[tuple[int, int, bool]]) -> Path:
    """``phantom.json``: the arguments, the layout, and which patients were imaged at the shifted site.

    The split reads ``shifted_patients`` of an NIH-layout phantom; a CheXpert-layout one imaged at the shifted site
    is that site as a whole (``"shifted": "all"``), its ``shifted_patients`` empty.
    """
    nih = spec.layout == "nih"
    shifted = [pid for pid, _, is_test in plan if nih and is_test and spec.test_shift == "site"]
    record = {"generator": "mai_aug phantom", "n": spec.n, "size": spec.size, "seed": spec.seed,
              "images_per_patient": spec.images_per_patient, "difficulty": spec.difficulty,
              "test_shift": spec.test_shift, "test_frac": spec.test_frac, "layout": spec.layout,
              "shifted_patients": shifted}
    if not nih and spec.test_shift == "site":
        record["shifted"] = "all"
    path = spec.out / RECORD_NAME
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def _ignore_sigint() -> None:
    """A rendering process ignores Ctrl-C (sent to the terminal's whole process group): the parent stops it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _rendered(spec: PhantomSpec, plan: list[tuple[int, int, bool]], workers: int,
              progress: Callable[[int, int], None] | None) -> list[tuple[bool, list[RenderedImage]]]:
    """Render every planned patient, in plan order: (is test patient, its images)."""
    jobs = [(spec, pid, k, t) for pid, k, t in plan]
    results: Iterator
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_ignore_sigint)
        results = pool.map(_render_patient, jobs, chunksize=8)
    else:
        pool, results = None, map(_render_patient, jobs)
    out, done = [], 0
    try:
        for (_, _, is_test), rows in zip(plan, results):
            out.append((is_test, rows))
            done += len(rows)
            if progress is not None:
                progress(done, spec.n)
    finally:
        if pool is not None:  # interrupted: the jobs not started are dropped, not rendered first
            pool.shutdown(cancel_futures=True)
    return out


def _write_nih_tables(spec: PhantomSpec, plan: list[tuple[int, int, bool]],
                      patients: list[tuple[bool, list[RenderedImage]]]) -> None:
    """NIH's Data_Entry_2017_v2020.csv, BBox_List_2017.csv, train_val_list.txt and test_list.txt."""
    entries, boxes, test_names, train_names = [], [], [], []
    spacing = round(NIH_SPACING * NIH_SIZE / spec.size, 6)
    for (pid, _, _), (is_test, rows) in zip(plan, patients):
        for im in rows:
            entries.append([im.name, "|".join(im.findings) or NO_FINDING, im.follow_up, pid, im.age, im.sex, im.view,
                            spec.size, spec.size, spacing, spacing])
            boxes.extend([im.name, b[0], *(round(v, 3) for v in b[1:])] for b in im.boxes)
            (test_names if is_test else train_names).append(im.name)
    with open(spec.out / "Data_Entry_2017_v2020.csv", "w", newline="") as f:
        f.write(",".join(HEADER) + "\n")
        csv.writer(f, lineterminator="\n").writerows(entries)
    with open(spec.out / "BBox_List_2017.csv", "w", newline="") as f:
        f.write(BBOX_HEADER + "\n")
        csv.writer(f, lineterminator="\n").writerows(boxes)
    (spec.out / "train_val_list.txt").write_text("".join(n + "\n" for n in train_names))
    (spec.out / "test_list.txt").write_text("".join(n + "\n" for n in test_names))


def chexpert_labels(severity: dict[str, float]) -> list[str]:
    """CheXpert's observation cells (in ``OBSERVATIONS`` order) of an image with these planted NIH findings.

    ``1.0`` positive, ``-1.0`` uncertain (the strongest source finding below :data:`CHEXPERT_UNCERTAIN_BELOW`),
    blank not mentioned; ``No Finding`` is 1.0 when nothing at all is planted.
    """
    cells = dict.fromkeys(CHEXPERT_OBSERVATIONS, "")
    for column, sources in CHEXPERT_FROM_NIH.items():
        planted = [severity[s] for s in sources if s in severity]
        if planted:
            cells[column] = "1.0" if max(planted) >= CHEXPERT_UNCERTAIN_BELOW else "-1.0"
    if not severity:
        cells["No Finding"] = "1.0"
    return list(cells.values())


def _write_chexpert_tables(spec: PhantomSpec, patients: list[tuple[bool, list[RenderedImage]]]) -> None:
    """CheXpert's train.csv (the non-test patients) and valid.csv (the test patients; none when there are none)."""
    tables: dict[bool, list[list]] = {False: [], True: []}
    for is_test, rows in patients:
        tables[is_test].extend([im.name, {"M": "Male", "F": "Female"}[im.sex], im.age, "Frontal", im.view,
                                *chexpert_labels(im.severity)] for im in rows)
    for is_test, name in ((False, CHEXPERT_TRAIN_CSV), (True, CHEXPERT_VALID_CSV)):
        if is_test and not tables[is_test]:  # the adapter refuses a CSV without rows, and reads no valid.csv as none
            continue
        with open(spec.out / name, "w", newline="") as f:
            f.write(",".join(CHEXPERT_HEADER) + "\n")
            csv.writer(f, lineterminator="\n").writerows(tables[is_test])


def write_phantom(spec: PhantomSpec, workers: int = 1, progress: Callable[[int, int], None] | None = None,
                  overwrite: bool = False) -> Path:
    """Write the phantom dataset in ``spec.layout`` (NIH's or CheXpert's) under ``spec.out``.

    Same arguments, byte-identical files (whatever ``workers``); the tables are written last, once every image is.

    Args:
        spec: what to write.
        workers: rendering processes.
        progress: called with (images done, total).
        overwrite: write into a non-empty ``spec.out`` (else refused).
    """
    check_spec(spec)
    plan = _patient_plan(spec)
    if spec.layout == "chexpert" and all(is_test for _, _, is_test in plan):
        raise MaiAugError(f"`n` {spec.n}: all {len(plan)} patient(s) drew the test split (valid.csv), so CheXpert's "
                          "train.csv would have no rows; ask for more images")
    prepare_out(Path(spec.out), overwrite, spec.layout)
    patients = _rendered(spec, plan, workers, progress)
    if spec.layout == "chexpert":
        _write_chexpert_tables(spec, patients)
    else:
        _write_nih_tables(spec, plan, patients)
    write_record(spec, plan)
    return spec.out


def default_workers() -> int:
    """Worker processes for generation: the cores this process may use."""
    return available_cores()
