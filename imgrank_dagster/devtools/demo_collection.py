"""A deterministic demo collection: synthetic street scenes with a known ground truth.

Sequences of frames from a camera driving forward through a synthetic Berlin (city streets,
residential roads, a highway, a tunnel, a park road, a street at night), some sequences standing
still, a few defective frames (blurred, too dark, overexposed, lens covered, a truncated JPEG, a
text file named .jpg), capture time and GPS in EXIF, and a labels file whose images come mostly
from one area. Only numpy and Pillow; no downloads; the same seed gives byte-identical files.

Layout under the root directory:
    images/<sequence_id>/frame_NNNN.jpg
    manifest.csv   ground truth, one row per file (MANIFEST_COLUMNS)
    labels/labels.csv   one column image_id: the images that count as already labelled (a
                   folder: annotation tools deliver their exports next to it)

Run `python -m imgrank_dagster.devtools.demo_collection --root data/demo` to write one.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from PIL.TiffImagePlugin import IFDRational

SCENE_TYPES = ("city_street", "residential", "highway", "tunnel", "park_road", "night")
DEFECTS = ("blurred", "dark", "overexposed", "black", "truncated", "not_an_image")
MANIFEST_COLUMNS = (
    "image_id",
    "path",
    "sequence_id",
    "frame_index",
    "scene_type",
    "time_of_day",
    "duplicate_group",
    "defect",
    "captured_at",
    "lat",
    "lng",
)
# The labelled images come mostly from the sequences of this scene type (all in one district),
# as in the study, where the labelled images were taken around one point.
LABELLED_SCENE_TYPE = "city_street"
LABELLED_FOCUS_SHARE = 0.8

IMAGE_WIDTH, IMAGE_HEIGHT = 384, 288
JPEG_QUALITY = 90
IMAGES_PER_SEQUENCE = 25  # sets the default number of sequences
MIN_FRAMES_PER_SEQUENCE = 5
MIN_IMAGES = 30
STILL_SEQUENCE_SHARE = 0.125
# Share of the images per pixel defect (at least one each); plus one truncated, one non-image.
DEFECT_SHARES = {"blurred": 0.03, "dark": 0.015, "overexposed": 0.015, "black": 0.005}
# "labels.csv": where demos before the labels folder kept their labels.
_COLLECTION_ENTRIES = frozenset({"images", "manifest.csv", "labels", "labels.csv"})
LABELS_DIR = "labels"
LABELS_FILE = "labels.csv"

RGB = tuple[int, int, int]

# Camera: a pinhole at roof height; metres in the world, pixels on the image.
_FOCAL = 0.9 * IMAGE_WIDTH
_CAMERA_HEIGHT = 1.7
_NEAR = 1.0
_FAR = 220.0
_PROP_FAR = 150.0  # trees, cars and signs further away blend into the skyline
_DETAIL_FAR = 90.0  # windows and lane markings further away are a few pixels at most
_METRES_PER_DEGREE = 111_320.0

# Districts of Berlin that each scene type is captured in (lat, lng).
_DISTRICTS = {
    "city_street": (52.5200, 13.4050),  # Mitte
    "residential": (52.4700, 13.3300),  # Friedenau
    "highway": (52.5000, 13.2800),  # A100 near the Funkturm
    "tunnel": (52.5100, 13.3700),  # Tiergartentunnel
    "park_road": (52.4700, 13.2400),  # Grunewald
    "night": (52.4970, 13.4200),  # Kreuzberg
}
_DISTRICT_RADIUS_M = 1500.0


@dataclass(frozen=True)
class DemoSummary:
    root: Path
    images_dir: Path
    manifest_path: Path
    labels_path: Path
    n_images: int
    n_sequences: int
    n_labelled: int
    n_duplicate_groups: int
    defect_counts: dict[str, int] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Scene styles


@dataclass(frozen=True)
class _SceneStyle:
    speed: float  # metres per frame (one frame per second)
    road_half_width: float
    lane_width: float
    lanes_per_direction: int
    sidewalk_width: float
    road_color: RGB
    sidewalk_color: RGB
    ground_color: RGB
    times_of_day: tuple[str, ...]
    skyline: str  # "city", "hills", "trees" or "none"
    building_colors: tuple[RGB, ...] = ()
    building_height: tuple[float, float] = (0.0, 0.0)
    building_length: tuple[float, float] = (0.0, 0.0)
    building_gap: tuple[float, float] = (0.0, 0.0)
    building_setback: float = 0.0
    pitched_roofs: bool = False
    window_color: RGB = (60, 70, 85)
    tree_spacing: float = 0.0  # mean metres between trees per side, 0 = none
    tree_rows: int = 1
    tree_colors: tuple[RGB, ...] = ((70, 110, 50),)
    parked_car_share: float = 0.0
    oncoming_car_spacing: float = 0.0
    sign_spacing: float = 0.0
    lamp_spacing: float = 0.0


_CAR_COLORS: tuple[RGB, ...] = (
    (200, 200, 205),
    (35, 35, 40),
    (150, 20, 25),
    (30, 60, 130),
    (225, 225, 220),
    (110, 115, 120),
    (20, 90, 60),
    (210, 160, 30),
)
_DAY_TIMES = ("day", "day", "golden", "overcast")

_STYLES: dict[str, _SceneStyle] = {
    "city_street": _SceneStyle(
        speed=5.0,
        road_half_width=9.2,
        lane_width=3.5,
        lanes_per_direction=2,
        sidewalk_width=4.0,
        road_color=(88, 88, 92),
        sidewalk_color=(165, 160, 150),
        ground_color=(150, 145, 138),
        times_of_day=_DAY_TIMES,
        skyline="city",
        building_colors=(
            (205, 195, 170),
            (180, 170, 160),
            (150, 85, 65),
            (220, 215, 205),
            (120, 125, 130),
            (195, 150, 110),
        ),
        building_height=(14.0, 30.0),
        building_length=(12.0, 30.0),
        building_gap=(0.0, 0.5),
        window_color=(55, 70, 90),
        tree_spacing=22.0,
        tree_colors=((65, 105, 50), (80, 120, 55)),
        parked_car_share=0.5,
        oncoming_car_spacing=45.0,
        sign_spacing=35.0,
        lamp_spacing=30.0,
    ),
    "residential": _SceneStyle(
        speed=4.0,
        road_half_width=5.6,
        lane_width=3.5,
        lanes_per_direction=1,
        sidewalk_width=2.0,
        road_color=(105, 103, 100),
        sidewalk_color=(175, 170, 160),
        ground_color=(95, 140, 65),
        times_of_day=_DAY_TIMES,
        skyline="hills",
        building_colors=(
            (235, 220, 180),
            (200, 220, 230),
            (240, 200, 190),
            (210, 230, 200),
            (245, 245, 235),
            (225, 190, 140),
        ),
        building_height=(5.5, 8.0),
        building_length=(9.0, 14.0),
        building_gap=(4.0, 10.0),
        building_setback=6.0,
        pitched_roofs=True,
        window_color=(70, 90, 110),
        tree_spacing=9.0,
        tree_colors=((60, 115, 45), (90, 135, 50), (50, 95, 40)),
        parked_car_share=0.35,
        oncoming_car_spacing=140.0,
        sign_spacing=60.0,
        lamp_spacing=35.0,
    ),
    "highway": _SceneStyle(
        speed=10.0,
        road_half_width=12.0,
        lane_width=3.75,
        lanes_per_direction=3,
        sidewalk_width=2.5,
        road_color=(100, 100, 104),
        sidewalk_color=(120, 118, 112),
        ground_color=(120, 145, 80),
        times_of_day=_DAY_TIMES,
        skyline="hills",
        tree_spacing=25.0,
        tree_rows=2,
        tree_colors=((60, 100, 50), (75, 110, 45)),
        oncoming_car_spacing=35.0,
        lamp_spacing=50.0,
    ),
    "tunnel": _SceneStyle(
        speed=9.0,
        road_half_width=5.5,
        lane_width=3.5,
        lanes_per_direction=1,
        sidewalk_width=0.8,
        road_color=(55, 52, 50),
        sidewalk_color=(90, 85, 80),
        ground_color=(40, 38, 36),
        times_of_day=("tunnel",),
        skyline="none",
        oncoming_car_spacing=40.0,
    ),
    "park_road": _SceneStyle(
        speed=4.0,
        road_half_width=3.0,
        lane_width=3.0,
        lanes_per_direction=1,
        sidewalk_width=1.5,
        road_color=(95, 92, 88),
        sidewalk_color=(170, 150, 115),
        ground_color=(80, 130, 55),
        times_of_day=_DAY_TIMES,
        skyline="trees",
        tree_spacing=7.0,
        tree_rows=3,
        tree_colors=((45, 95, 35), (70, 125, 45), (95, 140, 55), (40, 80, 40)),
        oncoming_car_spacing=200.0,
        sign_spacing=80.0,
    ),
    "night": _SceneStyle(
        speed=5.0,
        road_half_width=8.2,
        lane_width=3.0,
        lanes_per_direction=2,
        sidewalk_width=3.5,
        road_color=(28, 28, 34),
        sidewalk_color=(45, 44, 48),
        ground_color=(35, 34, 38),
        times_of_day=("night",),
        skyline="city",
        building_colors=((45, 42, 48), (38, 40, 52), (55, 48, 45), (30, 32, 38)),
        building_height=(12.0, 26.0),
        building_length=(10.0, 25.0),
        building_gap=(0.0, 1.0),
        window_color=(20, 22, 30),
        tree_spacing=30.0,
        tree_colors=((20, 35, 22), (25, 40, 25)),
        parked_car_share=0.45,
        oncoming_car_spacing=50.0,
        sign_spacing=45.0,
        lamp_spacing=22.0,
    ),
}

# Sky: (colour at the top, colour at the horizon), haze for distant objects, scene tint.
_SKIES: dict[str, tuple[RGB, RGB]] = {
    "day": ((70, 125, 205), (180, 208, 235)),
    "golden": ((85, 100, 160), (250, 185, 125)),
    "overcast": ((140, 145, 155), (205, 205, 208)),
    "night": ((4, 6, 18), (28, 32, 55)),
    "tunnel": ((40, 38, 36), (40, 38, 36)),
}
_TINTS: dict[str, tuple[float, float, float]] = {
    "day": (1.0, 1.0, 1.0),
    "golden": (1.1, 0.97, 0.82),
    "overcast": (0.92, 0.93, 0.95),
    "night": (1.0, 1.0, 1.0),
    "tunnel": (1.05, 0.95, 0.8),  # sodium lights
}


# --------------------------------------------------------------------------------------------
# Planning: which frames exist, where and when they were taken, and what is wrong with them


@dataclass(frozen=True)
class _FramePlan:
    frame_index: int
    camera_z: float  # metres driven since the first frame
    world_time: float  # seconds of traffic movement (frozen while the camera stands)
    captured_at: datetime
    lat: float
    lng: float
    duplicate_group: int = -1
    defect: str = ""


@dataclass(frozen=True)
class _SequencePlan:
    index: int
    sequence_id: str
    scene_type: str
    time_of_day: str
    still: bool
    exact_copies: bool  # a still sequence whose frames are pixel-identical
    frames: tuple[_FramePlan, ...]

    def image_id(self, frame: _FramePlan) -> str:
        return f"{self.sequence_id}/{_frame_stem(frame.frame_index, len(self.frames))}"

    def file_name(self, frame: _FramePlan) -> str:
        return f"{_frame_stem(frame.frame_index, len(self.frames))}.jpg"


def _frame_stem(frame_index: int, n_frames: int) -> str:
    width = max(4, len(str(n_frames - 1)))
    return f"frame_{frame_index:0{width}d}"


def _sequence_ids(n_sequences: int) -> list[str]:
    width = max(3, len(str(n_sequences - 1)))
    return [f"seq-{index:0{width}d}" for index in range(n_sequences)]


def _split_lengths(n_images: int, n_sequences: int, rng: np.random.Generator) -> list[int]:
    """Frames per sequence: uneven, at least MIN_FRAMES_PER_SEQUENCE each, summing to n_images."""
    spare = n_images - MIN_FRAMES_PER_SEQUENCE * n_sequences
    weights = rng.uniform(0.4, 1.6, n_sequences)
    shares = weights / weights.sum() * spare
    extra = np.floor(shares).astype(int)
    # Largest remainders get the frames lost to rounding down.
    for index in np.argsort(-(shares - extra), kind="stable")[: spare - int(extra.sum())]:
        extra[index] += 1
    return [MIN_FRAMES_PER_SEQUENCE + int(value) for value in extra]


def _gps_track(
    start: tuple[float, float], heading_deg: float, distances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Points `distances` metres from start along a heading (flat earth: a few km at most)."""
    lat0, lng0 = start
    heading = math.radians(heading_deg)
    lat = lat0 + distances * math.cos(heading) / _METRES_PER_DEGREE
    lng = lng0 + distances * math.sin(heading) / (_METRES_PER_DEGREE * math.cos(math.radians(lat0)))
    return lat, lng


def _start_time(rng: np.random.Generator, sequence_index: int, time_of_day: str) -> datetime:
    first_hour, last_hour = {
        "day": (9, 16),
        "golden": (19, 20),
        "overcast": (8, 17),
        "night": (22, 22),
        "tunnel": (7, 18),
    }[time_of_day]
    day = datetime(2024, 6, 3) + timedelta(days=sequence_index % 21)
    hour = int(rng.integers(first_hour, last_hour + 1))
    return day + timedelta(
        hours=hour, minutes=int(rng.integers(0, 50)), seconds=int(rng.integers(0, 60))
    )


def _plan_sequences(
    n_images: int, n_sequences: int, rng: np.random.Generator
) -> list[_SequencePlan]:
    lengths = sorted(_split_lengths(n_images, n_sequences, rng))
    n_still = max(1, int(n_sequences * STILL_SEQUENCE_SHARE + 0.5)) if n_sequences >= 2 else 0
    # The first sequence always moves; still sequences get the shortest lengths.
    still_indices = sorted(int(i) for i in rng.choice(np.arange(1, n_sequences), n_still, False))
    moving_lengths = [lengths[i] for i in rng.permutation(np.arange(n_still, n_sequences))]
    still_lengths = lengths[:n_still]
    plans: list[_SequencePlan] = []
    next_group = 0
    n_still_so_far = 0
    for index, sequence_id in enumerate(_sequence_ids(n_sequences)):
        scene_type = SCENE_TYPES[index % len(SCENE_TYPES)]
        style = _STYLES[scene_type]
        still = index in still_indices
        n_frames = still_lengths.pop(0) if still else moving_lengths.pop(0)
        time_of_day = str(rng.choice(style.times_of_day))
        offset = np.array([_DISTRICT_RADIUS_M * math.sqrt(rng.uniform())])
        start_lat, start_lng = _gps_track(_DISTRICTS[scene_type], rng.uniform(0, 360), offset)
        heading = float(rng.uniform(0, 360))
        started_at = _start_time(rng, index, time_of_day)

        steps = np.zeros(n_frames)  # metres driven between frame i-1 and frame i
        groups = np.full(n_frames, -1)
        if still:
            groups[:] = next_group
            next_group += 1
        else:
            speed = style.speed * rng.uniform(0.8, 1.2)
            steps[1:] = speed * np.clip(1 + 0.1 * rng.standard_normal(n_frames - 1), 0.6, 1.4)
            # Some longer drives stop at a traffic light: a run of (near-)exact duplicates.
            if n_frames >= 25 and rng.uniform() < 0.4:
                stop_first = int(rng.integers(3, n_frames - 8))
                stop_last = stop_first + int(rng.integers(3, 6))
                steps[stop_first + 1 : stop_last + 1] = 0.0
                groups[stop_first : stop_last + 1] = next_group
                next_group += 1
        distances = np.cumsum(steps)
        world_times = np.cumsum(steps > 0).astype(float)
        lats, lngs = _gps_track((start_lat[0], start_lng[0]), heading, distances)
        frames = tuple(
            _FramePlan(
                frame_index=i,
                camera_z=float(distances[i]),
                world_time=float(world_times[i]),
                captured_at=started_at + timedelta(seconds=i),
                lat=round(float(lats[i]), 7),
                lng=round(float(lngs[i]), 7),
                duplicate_group=int(groups[i]),
            )
            for i in range(n_frames)
        )
        plans.append(
            _SequencePlan(
                index=index,
                sequence_id=sequence_id,
                scene_type=scene_type,
                time_of_day=time_of_day,
                still=still,
                # Still sequences alternate: pixel-identical frames, then frames with fresh noise.
                exact_copies=still and n_still_so_far % 2 == 0,
                frames=frames,
            )
        )
        n_still_so_far += still
    return plans


def _defect_counts(n_images: int) -> dict[str, int]:
    counts = {name: max(1, round(share * n_images)) for name, share in DEFECT_SHARES.items()}
    return {**counts, "truncated": 1, "not_an_image": 1}


def _spaced_out(candidates: list[tuple[int, int]], wanted: list[str]) -> dict[tuple[int, int], str]:
    """Give the wanted defects to (sequence, frame) candidates in order, never two in a row."""
    chosen: dict[tuple[int, int], str] = {}
    for sequence, frame in candidates:
        if len(chosen) == len(wanted):
            break
        if {(sequence, frame - 1), (sequence, frame), (sequence, frame + 1)} & chosen.keys():
            continue
        chosen[(sequence, frame)] = wanted[len(chosen)]
    return chosen


def _assign_defects(plans: list[_SequencePlan], rng: np.random.Generator) -> list[_SequencePlan]:
    """Defects go on inner frames of moving stretches, never next to each other, so every
    defective frame has a good neighbour to compare with."""
    candidates = [
        (plan.index, frame.frame_index)
        for plan in plans
        if not plan.still and plan.time_of_day != "night"  # a dark night frame proves nothing
        for frame in plan.frames[1:-1]
        if frame.duplicate_group == -1
    ]
    n_images = sum(len(plan.frames) for plan in plans)
    wanted = [name for name, count in _defect_counts(n_images).items() for _ in range(count)]
    # Random places first; if they happen to crowd each other out, frame order (which packs a
    # run of frames as tightly as possible).
    shuffled = [candidates[int(position)] for position in rng.permutation(len(candidates))]
    chosen = _spaced_out(shuffled, wanted)
    if len(chosen) < len(wanted):
        chosen = _spaced_out(candidates, wanted)
    if len(chosen) < len(wanted):
        raise ValueError(
            f"n_images={n_images} in {len(plans)} sequences leaves too few moving frames for "
            f"{len(wanted)} defective frames; use more images or fewer sequences"
        )
    return [
        replace(
            plan,
            frames=tuple(
                replace(frame, defect=chosen.get((plan.index, frame.frame_index), ""))
                for frame in plan.frames
            ),
        )
        for plan in plans
    ]


def _choose_labels(
    plans: list[_SequencePlan], labelled_fraction: float, rng: np.random.Generator
) -> list[str]:
    n_images = sum(len(plan.frames) for plan in plans)
    n_labels = round(labelled_fraction * n_images)
    focus = [
        plan.image_id(frame)
        for plan in plans
        if plan.scene_type == LABELLED_SCENE_TYPE
        for frame in plan.frames
        if not frame.defect
    ]
    elsewhere = [
        plan.image_id(frame)
        for plan in plans
        if plan.scene_type != LABELLED_SCENE_TYPE
        for frame in plan.frames
        if not frame.defect
    ]
    n_focus = min(len(focus), round(LABELLED_FOCUS_SHARE * n_labels))
    n_elsewhere = min(len(elsewhere), n_labels - n_focus)
    n_focus = min(len(focus), n_labels - n_elsewhere)
    picked = list(rng.choice(focus, n_focus, replace=False)) if n_focus else []
    picked += list(rng.choice(elsewhere, n_elsewhere, replace=False)) if n_elsewhere else []
    return sorted(str(image_id) for image_id in picked)


# --------------------------------------------------------------------------------------------
# Rendering


class _Camera:
    """Pinhole camera looking down the road (+z). Shapes come back as flat coordinate lists."""

    __slots__ = ("cx", "haze", "haze_distance", "horizon", "x", "z")

    def __init__(
        self, z: float, x: float, cx: float, horizon: float, haze: RGB, haze_distance: float
    ) -> None:
        self.z, self.x, self.cx, self.horizon = z, x, cx, horizon
        self.haze, self.haze_distance = haze, haze_distance

    def point(self, x: float, y: float, z: float) -> tuple[float, float]:
        scale = _FOCAL / (z - self.z)
        return self.cx + (x - self.x) * scale, self.horizon + (_CAMERA_HEIGHT - y) * scale

    def clip(self, z0: float, z1: float, far: float = _FAR) -> tuple[float, float] | None:
        """The part of [z0, z1] between the near and far planes, None when nothing is left."""
        z0, z1 = max(z0, self.z + _NEAR), min(z1, self.z + far)
        return (z0, z1) if z0 < z1 else None

    def wall(self, x: float, y0: float, y1: float, z0: float, z1: float) -> list[float] | None:
        """A vertical plane along the road (constant x)."""
        span = self.clip(z0, z1)
        if span is None:
            return None
        near, far = _FOCAL / (span[0] - self.z), _FOCAL / (span[1] - self.z)
        dx, top, bottom = x - self.x, _CAMERA_HEIGHT - y1, _CAMERA_HEIGHT - y0
        un, uf = self.cx + dx * near, self.cx + dx * far
        h = self.horizon
        return [un, h + bottom * near, uf, h + bottom * far, uf, h + top * far, un, h + top * near]

    def floor(
        self, x0: float, x1: float, y: float, z0: float, z1: float, far: float = _FAR
    ) -> list[float] | None:
        """A horizontal strip (constant y)."""
        span = self.clip(z0, z1, far)
        if span is None:
            return None
        near_scale, far_scale = _FOCAL / (span[0] - self.z), _FOCAL / (span[1] - self.z)
        d0, d1, dy, cx, h = x0 - self.x, x1 - self.x, _CAMERA_HEIGHT - y, self.cx, self.horizon
        return [
            cx + d0 * near_scale, h + dy * near_scale,
            cx + d1 * near_scale, h + dy * near_scale,
            cx + d1 * far_scale, h + dy * far_scale,
            cx + d0 * far_scale, h + dy * far_scale,
        ]  # fmt: skip

    def face(self, x0: float, x1: float, y0: float, y1: float, z: float) -> list[float] | None:
        """A rectangle facing the camera (constant z)."""
        if z - self.z < _NEAR:
            return None
        scale = _FOCAL / (z - self.z)
        left, right = self.cx + (x0 - self.x) * scale, self.cx + (x1 - self.x) * scale
        top = self.horizon + (_CAMERA_HEIGHT - y1) * scale
        bottom = self.horizon + (_CAMERA_HEIGHT - y0) * scale
        return [left, bottom, right, bottom, right, top, left, top]

    def fade(self, color: Sequence[int], depth: float) -> RGB:
        """Distant things fade into the haze of the horizon."""
        t = min(1.0, max(0.0, depth / self.haze_distance)) * 0.85
        haze = self.haze
        return (
            int(color[0] + (haze[0] - color[0]) * t),
            int(color[1] + (haze[1] - color[1]) * t),
            int(color[2] + (haze[2] - color[2]) * t),
        )


@dataclass(frozen=True)
class _Building:
    side: int  # -1 left of the road, +1 right
    z0: float
    z1: float
    facade_x: float  # distance of the facade from the road centre
    height: float
    depth: float
    color: RGB
    floor_height: float
    window_spacing: float
    window_color: RGB
    lit_windows: frozenset[tuple[int, int]]  # (floor, column) lit at night
    shopfront: bool


@dataclass(frozen=True)
class _Prop:
    """Something standing on the ground, drawn as a billboard facing the camera."""

    kind: str  # tree, parked_car, car, sign, lamp, gantry
    x: float
    z: float
    speed: float = 0.0  # metres per second along the road (cars)
    color: RGB = (0, 0, 0)
    size: float = 1.0
    variant: int = 0
    follows_camera: bool = False  # the car ahead in our lane keeps its distance


class _SceneRenderer:
    """Builds one sequence's world once; renders it from any camera position."""

    def __init__(self, plan: _SequencePlan, rng: np.random.Generator) -> None:
        self.style = _STYLES[plan.scene_type]
        self.scene_type = plan.scene_type
        self.time_of_day = plan.time_of_day
        self.night = plan.time_of_day == "night"
        self.tunnel = plan.scene_type == "tunnel"
        self.horizon = float(round(IMAGE_HEIGHT * rng.uniform(0.40, 0.47)))
        self.cx = IMAGE_WIDTH / 2 + rng.uniform(-14, 14)  # camera yaw
        self.camera_x = self.style.lane_width * (self.style.lanes_per_direction - 0.5)
        self.camera_x -= self.style.lane_width * int(
            rng.integers(0, self.style.lanes_per_direction)
        )
        self.sway_phase = rng.uniform(0, 2 * math.pi)
        top, bottom = _SKIES[plan.time_of_day]
        self.haze: RGB = bottom if not self.night else (22, 24, 36)
        self.haze_distance = 160.0 if plan.time_of_day != "overcast" else 110.0
        self.tint = np.array(_TINTS[plan.time_of_day])
        length = max(frame.camera_z for frame in plan.frames) + _FAR + 60
        self.buildings = self._place_buildings(rng, length)
        self.props = self._place_props(rng, length)
        self.background = self._background(rng, top, bottom)

    # ---- the world

    def _place_buildings(self, rng: np.random.Generator, length: float) -> list[_Building]:
        style = self.style
        if not style.building_colors:
            return []
        buildings = []
        facade = style.road_half_width + style.sidewalk_width + style.building_setback
        for side in (-1, 1):
            z = float(rng.uniform(-15, 0))
            while z < length:
                block = float(rng.uniform(*style.building_length))
                height = float(rng.uniform(*style.building_height))
                floor_height = float(rng.uniform(2.8, 3.4))
                spacing = float(rng.uniform(2.4, 3.4))
                n_floors, n_columns = int(height / floor_height), int(block / spacing)
                lit = frozenset(
                    (f, c)
                    for f in range(n_floors)
                    for c in range(n_columns)
                    if self.night and rng.uniform() < 0.35
                )
                buildings.append(
                    _Building(
                        side=side,
                        z0=z,
                        z1=z + block,
                        facade_x=facade + float(rng.uniform(0, 0.8)),
                        height=height,
                        depth=float(rng.uniform(8, 14)),
                        color=style.building_colors[int(rng.integers(len(style.building_colors)))],
                        floor_height=floor_height,
                        window_spacing=spacing,
                        window_color=style.window_color,
                        lit_windows=lit,
                        shopfront=self.scene_type in ("city_street", "night")
                        and rng.uniform() < 0.6,
                    )
                )
                z += block + float(rng.uniform(*style.building_gap))
        return buildings

    def _place_props(self, rng: np.random.Generator, length: float) -> list[_Prop]:
        style = self.style
        props: list[_Prop] = []
        kerb = style.road_half_width
        verge = kerb + style.sidewalk_width
        lanes_edge = style.lanes_per_direction * style.lane_width  # parking strip beyond
        if style.tree_spacing:
            for row in range(style.tree_rows):
                for side in (-1, 1):
                    z = float(rng.uniform(0, style.tree_spacing))
                    while z < length:
                        lateral = kerb + style.sidewalk_width * 0.6 + row * rng.uniform(5, 9)
                        if self.scene_type == "highway":
                            lateral += 8
                        props.append(
                            _Prop(
                                "tree",
                                side * (lateral + rng.uniform(-0.5, 0.5)),
                                z,
                                color=style.tree_colors[int(rng.integers(len(style.tree_colors)))],
                                size=float(rng.uniform(0.8, 1.4)),
                                variant=int(rng.integers(0, 3)),
                            )
                        )
                        z += style.tree_spacing * float(rng.uniform(0.6, 1.4))
        if style.parked_car_share:
            for side in (-1, 1):
                z = float(rng.uniform(0, 6))
                while z < length:
                    if rng.uniform() < style.parked_car_share:
                        color = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
                        props.append(_Prop("parked_car", side * (lanes_edge + 1.1), z, color=color))
                    z += float(rng.uniform(5.5, 7.5))
        if style.oncoming_car_spacing:
            for lane in range(style.lanes_per_direction):
                z = float(rng.uniform(10, style.oncoming_car_spacing))
                while z < length + 400:
                    color = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
                    x = -style.lane_width * (lane + 0.5)
                    speed = -float(rng.uniform(7, 12)) * (
                        1.6 if self.scene_type == "highway" else 1
                    )
                    props.append(_Prop("car", x, z, speed=speed, color=color, variant=1))
                    z += style.oncoming_car_spacing * float(rng.uniform(0.5, 1.5))
        # A car ahead of us in our lane, and on wider roads some traffic beside us.
        if rng.uniform() < 0.7:
            color = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
            gap = float(rng.uniform(14, 40))
            props.append(_Prop("car", self.camera_x, gap, color=color, follows_camera=True))
        for lane in range(style.lanes_per_direction):
            x = style.lane_width * (lane + 0.5)
            if abs(x - self.camera_x) < 0.1:
                continue
            for _ in range(int(rng.integers(1, 4))):
                color = _CAR_COLORS[int(rng.integers(len(_CAR_COLORS)))]
                speed = style.speed * float(rng.uniform(0.8, 1.3))
                z = float(rng.uniform(8, 90))
                props.append(_Prop("car", x, z, speed=speed, color=color))
        if style.sign_spacing:
            z = float(rng.uniform(5, style.sign_spacing))
            while z < length:
                props.append(
                    _Prop(
                        "sign", verge - style.sidewalk_width * 0.15, z, variant=int(rng.integers(5))
                    )
                )
                z += style.sign_spacing * float(rng.uniform(0.5, 1.5))
        if style.lamp_spacing:
            z = float(rng.uniform(0, style.lamp_spacing))
            lamp_x = 0.0 if self.scene_type == "highway" else -(verge - 0.4)
            while z < length:
                props.append(_Prop("lamp", lamp_x, z))
                if self.scene_type != "highway":
                    props.append(_Prop("lamp", verge - 0.4, z + style.lamp_spacing / 2))
                z += style.lamp_spacing
        if self.scene_type == "highway":
            z = float(rng.uniform(30, 150))
            while z < length:
                props.append(_Prop("gantry", 0.0, z, variant=int(rng.integers(2))))
                z += float(rng.uniform(250, 400))
        return props

    def _background(self, rng: np.random.Generator, top: RGB, bottom: RGB) -> np.ndarray:
        """Sky, clouds and the far skyline: at infinity, so the same for every frame."""
        horizon = int(self.horizon)
        image = np.empty((IMAGE_HEIGHT, IMAGE_WIDTH, 3), dtype=np.float32)
        rows = np.linspace(0.0, 1.0, horizon, dtype=np.float32)[:, None, None] ** 1.6
        image[:horizon] = np.array(top, np.float32) + rows * (
            np.array(bottom, np.float32) - np.array(top, np.float32)
        )
        ground = np.array(self.style.ground_color, np.float32)
        shade = np.linspace(0.85, 1.05, IMAGE_HEIGHT - horizon, dtype=np.float32)[:, None, None]
        image[horizon:] = ground * shade
        if self.time_of_day in ("day", "golden", "overcast"):
            self._add_clouds(image, rng, horizon)
        if self.time_of_day == "golden":
            sun_x, sun_y = rng.uniform(0.15, 0.85) * IMAGE_WIDTH, horizon * 0.75
            yy, xx = np.mgrid[0:horizon, 0:IMAGE_WIDTH].astype(np.float32)
            glow = np.exp(-((xx - sun_x) ** 2 + (yy - sun_y) ** 2) / (2 * 35.0**2))[..., None]
            image[:horizon] += glow * (np.array((255, 235, 190), np.float32) - image[:horizon])
        if self.night:
            for _ in range(40):
                y, x = int(rng.integers(0, horizon * 0.7)), int(rng.integers(0, IMAGE_WIDTH))
                image[y, x] = 160 + rng.uniform(0, 80)
        self._add_skyline(image, rng, horizon)
        return np.clip(image, 0, 255).astype(np.uint8)

    def _add_clouds(self, image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
        coarse = rng.uniform(0, 255, (5, 9)).astype(np.uint8)
        smooth = Image.fromarray(coarse).resize((IMAGE_WIDTH, horizon), Image.Resampling.BICUBIC)
        cover = np.asarray(smooth, np.float32) / 255.0
        threshold = 0.35 if self.time_of_day == "overcast" else 0.55
        alpha = np.clip((cover - threshold) * 2.5, 0, 0.85)[..., None]
        cloud = {"day": (245, 245, 248), "golden": (250, 205, 175), "overcast": (175, 175, 182)}
        image[:horizon] += alpha * (np.array(cloud[self.time_of_day], np.float32) - image[:horizon])

    def _add_skyline(self, image: np.ndarray, rng: np.random.Generator, horizon: int) -> None:
        kind = self.style.skyline
        if kind == "none":
            return
        columns = np.arange(IMAGE_WIDTH)
        if kind == "city":
            heights = np.zeros(IMAGE_WIDTH)
            x = 0
            while x < IMAGE_WIDTH:
                width = int(rng.integers(6, 30))
                heights[x : x + width] = rng.uniform(4, 38)
                x += width
            color = np.array(self.haze, np.float32) * (0.8 if not self.night else 0.6)
        else:
            coarse = rng.uniform(0, 1, 12 if kind == "hills" else 40)
            heights = np.interp(columns, np.linspace(0, IMAGE_WIDTH, coarse.size), coarse)
            heights = heights * (14 if kind == "hills" else 10) + (4 if kind == "hills" else 12)
            base = (95, 120, 115) if kind == "hills" else (55, 85, 50)
            color = np.array(base, np.float32) * 0.5 + np.array(self.haze, np.float32) * 0.5
            if self.night:
                color *= 0.3
        rows = np.arange(horizon)[:, None]
        mask = rows >= horizon - heights[None, :]
        image[:horizon][mask] = color
        if kind == "city" and self.night:  # a few lit windows in the distance
            for _ in range(60):
                x = int(rng.integers(0, IMAGE_WIDTH))
                if heights[x] > 3:
                    y = horizon - int(rng.uniform(1, heights[x]))
                    image[y, x] = (200, 170, 90)

    # ---- one frame

    def camera(self, frame: _FramePlan) -> _Camera:
        sway = 0.15 * math.sin(0.35 * frame.world_time + self.sway_phase)
        return _Camera(
            z=frame.camera_z,
            x=self.camera_x + sway,
            cx=self.cx,
            horizon=self.horizon,
            haze=self.haze,
            haze_distance=self.haze_distance,
        )

    def render(self, frame: _FramePlan) -> Image.Image:
        image = Image.fromarray(self.background)
        draw = ImageDraw.Draw(image, "RGBA")
        camera = self.camera(frame)
        if self.tunnel:
            self._draw_tunnel(draw, camera)
        else:
            self._draw_road(draw, camera)
        for building in sorted(
            (b for b in self.buildings if b.z1 > camera.z + _NEAR and b.z0 < camera.z + _FAR),
            key=lambda b: -b.z0,
        ):
            self._draw_building(draw, camera, building)
        painters = {
            "tree": self._draw_tree,
            "parked_car": self._draw_car,
            "car": self._draw_car,
            "sign": self._draw_sign,
            "lamp": self._draw_lamp,
            "gantry": self._draw_gantry,
        }
        visible = []
        for prop in self.props:
            z = self._prop_z(prop, frame)
            if 2.0 < z - camera.z < _PROP_FAR:
                visible.append((z - camera.z, z, prop))
        # Painter's algorithm: billboards facing the camera, far to near.
        for depth, z, prop in sorted(visible, key=lambda item: -item[0]):
            painters[prop.kind](draw, camera, prop, z, depth)
        return image

    def _prop_z(self, prop: _Prop, frame: _FramePlan) -> float:
        if prop.follows_camera:
            return frame.camera_z + prop.z + 3.0 * math.sin(0.5 * frame.world_time)
        return prop.z + prop.speed * frame.world_time

    def _draw_road(self, draw: ImageDraw.ImageDraw, camera: _Camera) -> None:
        style = self.style
        start, end = camera.z - 5, camera.z + _FAR
        kerb, verge = style.road_half_width, style.road_half_width + style.sidewalk_width
        lanes_edge = style.lanes_per_direction * style.lane_width
        for side in (-1, 1):
            strip = camera.floor(side * kerb, side * verge, 0, start, end)
            draw.polygon(strip, fill=style.sidewalk_color)
        draw.polygon(camera.floor(-kerb, kerb, 0, start, end), fill=style.road_color)
        marking: RGB = (235, 235, 225) if not self.night else (150, 150, 140)
        # Solid edge lines, dashed lane lines (their dashes flow past as the camera moves).
        for side in (-1, 1):
            x = side * (lanes_edge + 0.1)
            draw.polygon(camera.floor(x - 0.08, x + 0.08, 0, start, end, _DETAIL_FAR), fill=marking)
        lane_lines = [0.0] + [
            side * style.lane_width * k
            for k in range(1, style.lanes_per_direction)
            for side in (-1, 1)
        ]
        period, dash = (12.0, 4.0) if self.scene_type == "highway" else (9.0, 3.0)
        first = math.floor(camera.z / period)
        for k in range(first, first + int(_DETAIL_FAR / period) + 1):
            for x in lane_lines:
                width = 0.12 if x == 0.0 and style.lanes_per_direction > 1 else 0.08
                quad = camera.floor(x - width, x + width, 0, k * period, k * period + dash)
                if quad:
                    draw.polygon(quad, fill=marking)
        if self.scene_type == "highway":
            self._draw_barriers(draw, camera)
        elif self.scene_type in ("city_street", "night"):
            self._draw_crossings(draw, camera, marking)

    def _draw_barriers(self, draw: ImageDraw.ImageDraw, camera: _Camera) -> None:
        """Concrete median wall and guard rails along both edges."""
        start, end = camera.z - 5, camera.z + _FAR
        for x in (-0.3, 0.3):
            wall = camera.wall(x, 0, 0.9, start, end)
            if wall:
                draw.polygon(wall, fill=(175, 172, 165) if x < 0 else (150, 148, 142))
        for side in (-1, 1):
            x = side * (self.style.road_half_width + 0.5)
            rail = camera.wall(x, 0.5, 0.8, start, end)
            if rail:
                draw.polygon(rail, fill=(190, 192, 195))

    def _draw_crossings(self, draw: ImageDraw.ImageDraw, camera: _Camera, color: RGB) -> None:
        period = 120.0
        first = math.floor(camera.z / period)
        kerb = self.style.road_half_width
        for k in range(first, first + 2):
            z = k * period + 60.0
            stripes = np.arange(-kerb + 0.5, kerb - 0.5, 1.0)
            for x in stripes:
                quad = camera.floor(x, x + 0.5, 0, z, z + 4)
                if quad:
                    draw.polygon(quad, fill=color)

    def _draw_tunnel(self, draw: ImageDraw.ImageDraw, camera: _Camera) -> None:
        half, ceiling = self.style.road_half_width + self.style.sidewalk_width, 5.0
        far = camera.z + 320
        exit_light = (235, 235, 215)
        draw.polygon(camera.face(-half, half, 0, ceiling, far), fill=exit_light)
        start = camera.z - 5
        draw.polygon(camera.floor(-half, half, 0, start, far, 320), fill=self.style.sidewalk_color)
        draw.polygon(camera.floor(-half, half, ceiling, start, far, 320), fill=(30, 28, 27))
        band = 4.0
        first = math.floor(camera.z / band)
        for k in range(first + int(300 / band), first - 1, -1):
            z0 = k * band
            depth = z0 + band / 2 - camera.z
            shade = (95, 90, 80) if k % 2 else (85, 80, 72)
            stripe = (200, 120, 40)
            for side in (-1, 1):
                wall = camera.wall(side * half, 0, ceiling, z0, z0 + band)
                if wall:
                    draw.polygon(wall, fill=camera.fade(shade, depth * 0.3))
                band_quad = camera.wall(side * half, 0.9, 1.2, z0, z0 + band)
                if band_quad:
                    draw.polygon(band_quad, fill=camera.fade(stripe, depth * 0.3))
        draw.polygon(
            camera.floor(
                -self.style.road_half_width, self.style.road_half_width, 0, start, far, 320
            ),
            fill=self.style.road_color,
        )
        period = 7.0
        first = math.floor(camera.z / period)
        for k in range(first + 40, first - 1, -1):
            z = k * period
            for x in (-1.5, 1.5):
                quad = camera.floor(x - 0.3, x + 0.3, ceiling - 0.05, z, z + 2.0, 300)
                if quad:
                    draw.polygon(quad, fill=(255, 225, 160))
            lane = camera.floor(-0.1, 0.1, 0, z, z + 2.5, _DETAIL_FAR)
            if lane:
                draw.polygon(lane, fill=(200, 190, 150))

    def _draw_building(self, draw: ImageDraw.ImageDraw, camera: _Camera, b: _Building) -> None:
        x = b.side * b.facade_x
        depth = max(b.z0 - camera.z, _NEAR)
        lighting = 1.0 if b.side > 0 else 0.82
        color = camera.fade(_scaled(b.color, lighting), depth)
        facade = camera.wall(x, 0, b.height, b.z0, b.z1)
        if facade is None:
            return
        draw.polygon(facade, fill=color)
        front = camera.face(x, x + b.side * b.depth, 0, b.height, b.z0)
        if front:
            draw.polygon(front, fill=camera.fade(_scaled(b.color, lighting * 0.85), depth))
        if self.style.pitched_roofs:
            roof_color = camera.fade((150, 70, 55), depth)
            ridge = x + b.side * b.depth / 2
            span = camera.clip(b.z0, b.z1)
            if span:
                a, z1 = span
                slope = [
                    camera.point(x, b.height, a),
                    camera.point(x, b.height, z1),
                    camera.point(ridge, b.height + 3, z1),
                    camera.point(ridge, b.height + 3, a),
                ]
                draw.polygon(slope, fill=roof_color)
            if b.z0 - camera.z > _NEAR:
                gable = [
                    camera.point(x, b.height, b.z0),
                    camera.point(x + b.side * b.depth, b.height, b.z0),
                    camera.point(ridge, b.height + 3, b.z0),
                ]
                draw.polygon(gable, fill=_scaled(roof_color, 0.85))
        self._draw_windows(draw, camera, b, x, depth)

    def _draw_windows(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, b: _Building, x: float, depth: float
    ) -> None:
        n_floors = int(b.height / b.floor_height)
        n_columns = int((b.z1 - b.z0) / b.window_spacing)
        if b.shopfront:  # one band of shop windows along the ground floor
            band = camera.wall(x, 0.3, b.floor_height * 0.8, b.z0 + 0.5, b.z1 - 0.5)
            if band:
                shop = (230, 220, 170) if self.night else (45, 55, 65)
                draw.polygon(band, fill=camera.fade(shop, depth))
        dark = camera.fade(b.window_color, depth)
        lit: RGB = (250, 210, 120)
        # Window rows as (top, bottom) offsets below the camera's height, in metres.
        rows = [
            (
                floor,
                _CAMERA_HEIGHT - (floor + 0.8) * b.floor_height,
                _CAMERA_HEIGHT - (floor + 0.3) * b.floor_height,
            )
            for floor in range(1 if b.shopfront else 0, n_floors)
        ]
        dx, cx, horizon = x - camera.x, camera.cx, camera.horizon
        for column in range(n_columns):
            z0 = b.z0 + column * b.window_spacing + 0.6 - camera.z
            z1 = z0 + b.window_spacing * 0.5
            if z0 < _NEAR or z1 > _DETAIL_FAR:
                continue
            near, far = _FOCAL / z0, _FOCAL / z1
            un, uf = cx + dx * near, cx + dx * far
            for floor, top, bottom in rows:
                quad = [
                    un, horizon + bottom * near,
                    uf, horizon + bottom * far,
                    uf, horizon + top * far,
                    un, horizon + top * near,
                ]  # fmt: skip
                is_lit = self.night and (floor, column) in b.lit_windows
                draw.polygon(quad, fill=lit if is_lit else dark)

    def _draw_tree(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, prop: _Prop, z: float, depth: float
    ) -> None:
        trunk_height, radius = 2.6 * prop.size, 2.0 * prop.size
        trunk_color = camera.fade((75, 60, 45) if not self.night else (20, 18, 16), depth)
        draw.polygon(
            camera.face(prop.x - 0.18, prop.x + 0.18, 0, trunk_height + 0.5, z), fill=trunk_color
        )
        offsets = ((0.0, 0.0, 1.0), (-0.6, -0.4, 0.75), (0.6, -0.3, 0.8))[: 2 + (prop.variant > 0)]
        for dx, dy, scale in offsets:
            u, v = camera.point(prop.x + dx * radius, trunk_height + radius * (0.9 + dy), z)
            r = _FOCAL * radius * scale / depth
            ry = r * (1.15 if prop.variant == 2 else 1.0)
            shade = 1.0 + 0.12 * dx
            draw.ellipse(
                (u - r, v - ry, u + r, v + ry), fill=camera.fade(_scaled(prop.color, shade), depth)
            )

    def _draw_car(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, prop: _Prop, z: float, depth: float
    ) -> None:
        width, length = 1.8, 4.4
        x0, x1 = prop.x - width / 2, prop.x + width / 2
        body = camera.fade(prop.color, depth)
        # The side facing the road centre shows when the car is off to one side.
        side_x = x0 if prop.x > camera.x else x1
        if abs(prop.x - camera.x) > 1.2:
            side = camera.wall(side_x, 0.3, 1.0, z, z + length)
            if side:
                draw.polygon(side, fill=_scaled(body, 0.8))
            roof = camera.wall(
                side_x + (0.2 if prop.x > camera.x else -0.2), 1.0, 1.45, z + 1.0, z + 3.4
            )
            if roof:
                draw.polygon(roof, fill=camera.fade((50, 60, 70), depth))
        draw.polygon(camera.face(x0, x1, 0.3, 1.0, z), fill=body)
        draw.polygon(camera.face(x0 + 0.2, x1 - 0.2, 1.0, 1.45, z), fill=_scaled(body, 0.9))
        draw.polygon(
            camera.face(x0 + 0.3, x1 - 0.3, 1.02, 1.38, z), fill=camera.fade((45, 55, 68), depth)
        )
        for wheel in (x0 + 0.1, x1 - 0.45):
            draw.polygon(camera.face(wheel, wheel + 0.35, 0.0, 0.35, z), fill=(20, 20, 22))
        lights: RGB = (255, 250, 220) if prop.variant == 1 else (220, 30, 30)
        if self.night or self.tunnel:
            lights = (255, 255, 235) if prop.variant == 1 else (255, 40, 30)
        for light in (x0 + 0.1, x1 - 0.4):
            draw.polygon(camera.face(light, light + 0.3, 0.72, 0.88, z), fill=lights)
            if (self.night or self.tunnel) and depth < 80:
                u, v = camera.point(light + 0.15, 0.8, z)
                r = _FOCAL * (0.4 if prop.variant == 1 else 0.22) / depth
                draw.ellipse((u - r, v - r, u + r, v + r), fill=(*lights, 70))

    def _draw_sign(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, prop: _Prop, z: float, depth: float
    ) -> None:
        pole = camera.fade((120, 120, 125), depth)
        draw.polygon(camera.face(prop.x - 0.04, prop.x + 0.04, 0, 2.3, z), fill=pole)
        u, v = camera.point(prop.x, 2.65, z)
        r = _FOCAL * 0.35 / depth
        if prop.variant == 0:  # speed limit: red ring, white inside
            draw.ellipse((u - r, v - r, u + r, v + r), fill=camera.fade((200, 30, 30), depth))
            draw.ellipse(
                (u - r * 0.7, v - r * 0.7, u + r * 0.7, v + r * 0.7),
                fill=camera.fade((240, 240, 240), depth),
            )
        elif prop.variant == 1:  # mandatory direction: blue disc
            draw.ellipse((u - r, v - r, u + r, v + r), fill=camera.fade((30, 70, 170), depth))
        elif prop.variant == 2:  # warning triangle
            draw.polygon(
                [(u, v - r), (u + r, v + r * 0.8), (u - r, v + r * 0.8)],
                fill=camera.fade((200, 30, 30), depth),
            )
            draw.polygon(
                [(u, v - r * 0.45), (u + r * 0.55, v + r * 0.5), (u - r * 0.55, v + r * 0.5)],
                fill=(235, 235, 235),
            )
        elif prop.variant == 3:  # priority road: yellow diamond
            draw.polygon(
                [(u, v - r), (u + r, v), (u, v + r), (u - r, v)],
                fill=camera.fade((240, 200, 30), depth),
            )
        else:  # parking: blue square
            draw.rectangle((u - r, v - r, u + r, v + r), fill=camera.fade((30, 80, 180), depth))
            draw.rectangle(
                (u - r * 0.3, v - r * 0.6, u + r * 0.3, v + r * 0.6), fill=(240, 240, 240)
            )

    def _draw_lamp(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, prop: _Prop, z: float, depth: float
    ) -> None:
        pole = camera.fade((70, 75, 80) if not self.night else (40, 40, 45), depth)
        draw.polygon(camera.face(prop.x - 0.07, prop.x + 0.07, 0, 6.5, z), fill=pole)
        reach = 1.4 if prop.x <= 0 else -1.4
        arms = (reach, -reach) if prop.x == 0 else (reach,)
        for arm in arms:
            draw.polygon(
                camera.face(min(prop.x, prop.x + arm), max(prop.x, prop.x + arm), 6.4, 6.55, z),
                fill=pole,
            )
            u, v = camera.point(prop.x + arm, 6.35, z)
            r = _FOCAL * 0.25 / depth
            head: RGB = (255, 230, 160) if self.night else (200, 200, 195)
            draw.ellipse((u - r, v - r * 0.5, u + r, v + r * 0.5), fill=head)
            if self.night:
                glow = _FOCAL * 1.6 / depth
                draw.ellipse((u - glow, v - glow, u + glow, v + glow), fill=(255, 210, 130, 45))

    def _draw_gantry(
        self, draw: ImageDraw.ImageDraw, camera: _Camera, prop: _Prop, z: float, depth: float
    ) -> None:
        half = self.style.road_half_width + 1.0
        steel = camera.fade((150, 155, 160), depth)
        for x in (-half, half):
            draw.polygon(camera.face(x - 0.2, x + 0.2, 0, 7.0, z), fill=steel)
        draw.polygon(camera.face(-half, half, 6.6, 7.0, z), fill=steel)
        panel = camera.fade((30, 80, 170) if prop.variant == 0 else (20, 110, 60), depth)
        for x0 in (0.8, 0.8 + self.style.lane_width * 1.3):
            draw.polygon(
                camera.face(x0, x0 + 3.6, 4.6, 6.6, z), fill=camera.fade((235, 235, 235), depth)
            )
            draw.polygon(camera.face(x0 + 0.1, x0 + 3.5, 4.7, 6.5, z), fill=panel)


def _scaled(color: Sequence[int], factor: float) -> RGB:
    return (
        min(255, int(color[0] * factor)),
        min(255, int(color[1] * factor)),
        min(255, int(color[2] * factor)),
    )


# --------------------------------------------------------------------------------------------
# From rendered scene to file


def _finish(
    scene: Image.Image,
    tint: np.ndarray,
    noise: np.ndarray,
    rng: np.random.Generator,
    steady: bool,
) -> np.ndarray:
    """Exposure, colour of the light and sensor noise, as a camera would add them; a steady
    camera (standing still) keeps its exposure, so only the noise differs between frames."""
    gain = tint * (1 if steady else 1 + 0.03 * rng.standard_normal())
    levels = np.arange(256, dtype=np.float64)
    table = np.clip(np.round(levels[None, :] * gain[:, None]), 0, 255).astype(int).ravel()
    exposed = np.asarray(scene.point(table.tolist()), dtype=np.int16)
    top, left = int(rng.integers(0, IMAGE_HEIGHT)), int(rng.integers(0, IMAGE_WIDTH))
    exposed += noise[top : top + IMAGE_HEIGHT, left : left + IMAGE_WIDTH]
    return np.clip(exposed, 0, 255).astype(np.uint8)


def _apply_defect(pixels: np.ndarray, defect: str, rng: np.random.Generator) -> Image.Image:
    if defect == "blurred":
        radius = float(rng.uniform(3.0, 4.5))
        return Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius))
    if defect == "dark":
        return Image.fromarray(
            (pixels.astype(np.float32) * rng.uniform(0.1, 0.16)).astype(np.uint8)
        )
    if defect == "overexposed":
        bright = pixels.astype(np.float32) * rng.uniform(1.8, 2.2) + 90
        return Image.fromarray(np.clip(bright, 0, 255).astype(np.uint8))
    if defect == "black":  # lens covered: a faint glow at one edge, sensor noise
        gradient = np.linspace(0, 6, IMAGE_WIDTH, dtype=np.float32)[None, :, None]
        dark = 2 + gradient + rng.normal(0, 1.2, pixels.shape).astype(np.float32)
        return Image.fromarray(np.clip(dark, 0, 255).astype(np.uint8))
    return Image.fromarray(pixels)


def _exif(frame: _FramePlan) -> bytes:
    exif = Image.Exif()
    exif[0x8769] = {0x9003: frame.captured_at.strftime("%Y:%m:%d %H:%M:%S")}
    exif[0x8825] = {
        0x0000: b"\x02\x03\x00\x00",
        0x0001: "N" if frame.lat >= 0 else "S",
        0x0002: _dms(abs(frame.lat)),
        0x0003: "E" if frame.lng >= 0 else "W",
        0x0004: _dms(abs(frame.lng)),
    }
    return exif.tobytes()


def _dms(degrees: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    whole = int(degrees)
    minutes_float = (degrees - whole) * 60
    minutes = int(minutes_float)
    ten_thousandths = round((minutes_float - minutes) * 60 * 10_000)
    return IFDRational(whole, 1), IFDRational(minutes, 1), IFDRational(ten_thousandths, 10_000)


def _encode(image: Image.Image, frame: _FramePlan) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, exif=_exif(frame))
    return buffer.getvalue()


def _not_an_image(plan: _SequencePlan, frame: _FramePlan) -> bytes:
    return (
        f"camera log {plan.sequence_id} frame {frame.frame_index}\n"
        "upload interrupted: the recorder wrote this text instead of the picture\n"
    ).encode()


def _write_sequence(plan: _SequencePlan, folder: Path, seed: int, noise: np.ndarray) -> None:
    renderer = _SceneRenderer(plan, np.random.default_rng([seed, 1, plan.index]))
    folder.mkdir(parents=True)
    still_pixels: np.ndarray | None = None
    for frame in plan.frames:
        rng = np.random.default_rng([seed, 2, plan.index, frame.frame_index])
        path = folder / plan.file_name(frame)
        if frame.defect == "not_an_image":
            path.write_bytes(_not_an_image(plan, frame))
            continue
        if plan.exact_copies and still_pixels is not None:
            pixels = still_pixels
        else:
            # Within a stop the scene is the same; only exposure and sensor noise differ.
            steady = frame.duplicate_group >= 0
            pixels = _finish(renderer.render(frame), renderer.tint, noise, rng, steady)
            if plan.exact_copies:
                still_pixels = pixels
        data = _encode(_apply_defect(pixels, frame.defect, rng), frame)
        if frame.defect == "truncated":
            data = data[: int(len(data) * rng.uniform(0.45, 0.6))]
        path.write_bytes(data)


def _write_manifest(path: Path, plans: list[_SequencePlan]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for plan in plans:
            for frame in plan.frames:
                readable = frame.defect not in ("truncated", "not_an_image")
                writer.writerow(
                    (
                        plan.image_id(frame),
                        f"{plan.sequence_id}/{plan.file_name(frame)}",
                        plan.sequence_id,
                        frame.frame_index,
                        plan.scene_type,
                        plan.time_of_day,
                        frame.duplicate_group,
                        frame.defect,
                        frame.captured_at.isoformat() if readable else "",
                        f"{frame.lat:.7f}" if readable else "",
                        f"{frame.lng:.7f}" if readable else "",
                    )
                )


def _write_labels(path: Path, image_ids: list[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write("image_id\n")
        handle.writelines(f"{image_id}\n" for image_id in image_ids)


# --------------------------------------------------------------------------------------------
# Public API


def default_sequence_count(n_images: int) -> int:
    """About IMAGES_PER_SEQUENCE frames per sequence (600 images -> 24 sequences)."""
    return max(1, min(round(n_images / IMAGES_PER_SEQUENCE), n_images // MIN_FRAMES_PER_SEQUENCE))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _validate(n_images: int, n_sequences: int | None, seed: int, labelled_fraction: float) -> None:
    if not _is_int(n_images) or n_images < MIN_IMAGES:
        raise ValueError(f"n_images must be an integer >= {MIN_IMAGES}, got {n_images!r}")
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if not 0 <= labelled_fraction <= 0.5:
        raise ValueError(f"labelled_fraction must be in [0, 0.5], got {labelled_fraction!r}")
    if n_sequences is None:
        return
    if not _is_int(n_sequences) or n_sequences < 1:
        raise ValueError(f"n_sequences must be a positive integer, got {n_sequences!r}")
    if n_sequences * MIN_FRAMES_PER_SEQUENCE > n_images:
        raise ValueError(
            f"n_sequences={n_sequences} needs at least {n_sequences * MIN_FRAMES_PER_SEQUENCE} "
            f"images ({MIN_FRAMES_PER_SEQUENCE} per sequence), got n_images={n_images}"
        )


def _check_replaceable(root: Path) -> None:
    """Only an empty folder or an earlier demo collection may be replaced."""
    if root.exists() and not root.is_dir():
        raise ValueError(f"demo root {root} exists and is not a directory")
    if root.is_dir():
        unexpected = sorted(
            entry.name for entry in root.iterdir() if entry.name not in _COLLECTION_ENTRIES
        )
        if unexpected:
            raise ValueError(
                f"demo root {root} holds files that are not part of a demo collection "
                f"({', '.join(unexpected[:5])}); refusing to replace it"
            )


def generate_demo_collection(
    root: Path,
    n_images: int = 600,
    n_sequences: int | None = None,
    seed: int = 0,
    labelled_fraction: float = 0.05,
) -> DemoSummary:
    """Write a demo collection of n_images files under root, replacing an earlier one whole.

    n_images counts every file, the truncated JPEG and the non-image included; n_sequences
    defaults to one per IMAGES_PER_SEQUENCE images; labelled_fraction of the images go into
    labels/labels.csv. The same arguments always write byte-identical files.
    """
    root = Path(root)
    _validate(n_images, n_sequences, seed, labelled_fraction)
    if n_sequences is None:
        n_sequences = default_sequence_count(n_images)
    _check_replaceable(root)
    plan_rng = np.random.default_rng([seed, 0])
    plans = _assign_defects(_plan_sequences(n_images, n_sequences, plan_rng), plan_rng)
    labels = _choose_labels(plans, labelled_fraction, plan_rng)
    noise_rng = np.random.default_rng([seed, 3])
    grain = noise_rng.normal(0, 2.5, (2 * IMAGE_HEIGHT, 2 * IMAGE_WIDTH, 3))
    noise = np.round(grain).astype(np.int16)  # frames take crops of it at random offsets

    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp-", dir=root.parent))
    try:
        for plan in plans:
            _write_sequence(plan, staging / "images" / plan.sequence_id, seed, noise)
        _write_manifest(staging / "manifest.csv", plans)
        (staging / LABELS_DIR).mkdir()
        _write_labels(staging / LABELS_DIR / LABELS_FILE, labels)
        _swap_into_place(staging, root)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    defect_counts = {name: 0 for name in DEFECTS}
    for plan in plans:
        for frame in plan.frames:
            if frame.defect:
                defect_counts[frame.defect] += 1
    return DemoSummary(
        root=root,
        images_dir=root / "images",
        manifest_path=root / "manifest.csv",
        labels_path=root / LABELS_DIR / LABELS_FILE,
        n_images=n_images,
        n_sequences=n_sequences,
        n_labelled=len(labels),
        n_duplicate_groups=len(
            {frame.duplicate_group for plan in plans for frame in plan.frames} - {-1}
        ),
        defect_counts=defect_counts,
    )


def _swap_into_place(staging: Path, root: Path) -> None:
    if not root.exists():
        staging.rename(root)
        return
    retired = root.with_name(f".{root.name}.old-{os.getpid()}")
    root.rename(retired)
    staging.rename(root)
    shutil.rmtree(retired)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to write (replaced whole)")
    parser.add_argument("--images", type=int, default=600, help="number of files (default 600)")
    parser.add_argument("--sequences", type=int, default=None, help="default: images / 25")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        summary = generate_demo_collection(args.root, args.images, args.sequences, args.seed)
    except ValueError as error:
        parser.error(str(error))
    defects = ", ".join(f"{count} {name}" for name, count in summary.defect_counts.items())
    print(
        f"wrote {summary.n_images} images in {summary.n_sequences} sequences to {summary.root} "
        f"({summary.n_labelled} labelled, {summary.n_duplicate_groups} duplicate groups, "
        f"defects: {defects}) in {time.perf_counter() - started:.1f} s"
    )


if __name__ == "__main__":
    main()
