"""Captioned synthetic videos: coloured shapes that move, for vlrt's own embedded model.

No pretrained weights can be downloaded where vlrt is developed, so the default model is trained
on videos this module renders. Captions name the count, size, colour and shape of the objects,
the direction and speed they move and the background, e.g. "two small red circles move slowly to
the left on a white background". Direction and speed need more than one frame: a single frame
cannot tell "left" from "right" or "slowly" from "quickly", which is what makes these videos a
test of a model's temporal head.

Everything is deterministic by seed. Train and test captions are disjoint: a caption (one
combination of attributes) belongs to exactly one split, chosen by a hash of the caption, so test
retrieval measures composition of attributes the model has seen, never a memorised caption.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

COUNTS = {1: "a", 2: "two"}
SIZES = {"small": 0.11, "large": 0.2}  # radius as a fraction of the frame side
COLOURS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 90, 235), "yellow": (235, 205, 40)}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
BACKGROUNDS = {"black": (15, 15, 15), "gray": (128, 128, 128), "white": (240, 240, 240)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up", "still": "left"}
SPEEDS = {"slowly": 0.25, "quickly": 0.6}  # fraction of the frame crossed from first to last frame
OTHER_SPEED = {"slowly": "quickly", "quickly": "slowly"}
MOTION_PHRASE = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
TEST_FRACTION = 0.2
# Part of every written clip's cache name: bump it whenever the same (scene, seed) renders
# differently, so that no cache serves clips of an older generator.
RENDER_VERSION = 2

Split = Literal["train", "test"]


@dataclasses.dataclass(frozen=True)
class Scene:
    count: int
    size: str
    colour: str
    shape: str
    motion: str
    background: str
    speed: str = ""  # "slowly" or "quickly" for moving objects, "" for still ones

    def __post_init__(self) -> None:
        if (self.motion == "still") != (self.speed == ""):
            raise ValueError(f"motion {self.motion!r} with speed {self.speed!r}")

    @property
    def caption(self) -> str:
        plural = "s" if self.count > 1 else ""
        noun = f"{COUNTS[self.count]} {self.size} {self.colour} {self.shape}{plural}"
        if self.motion == "still":
            verb = "stay still" if self.count > 1 else "stays still"
        else:
            verb = f"{'move' if self.count > 1 else 'moves'} {self.speed} {MOTION_PHRASE[self.motion]}"
        return f"{noun} {verb} on a {self.background} background"

    @property
    def split(self) -> Split:
        digest = hashlib.sha256(self.caption.encode()).digest()
        return "test" if int.from_bytes(digest[:4], "big") / 2**32 < TEST_FRACTION else "train"

    def with_motion(self, motion: str, speed: str | None = None) -> "Scene":
        """The same scene moving another way (at its own speed, or "slowly" if it was still)."""
        speed = "" if motion == "still" else speed or self.speed or "slowly"
        return dataclasses.replace(self, motion=motion, speed=speed)


def all_scenes() -> list[Scene]:
    """Every attribute combination, in a fixed order (each is one caption)."""
    return [Scene(*combo, speed=speed)
            for combo in itertools.product(COUNTS, SIZES, COLOURS, SHAPES, MOTIONS, BACKGROUNDS)
            for speed in ([""] if combo[4] == "still" else SPEEDS)]


def scenes(split: Split) -> list[Scene]:
    return [s for s in all_scenes() if s.split == split]


def probes(scenes: list[Scene]) -> dict[str, list[str]]:
    """For moving scenes, the captions that only time tells apart from their own: the opposite
    direction and the other speed (same objects, same background)."""
    return {"direction": [s.with_motion(OPPOSITE[s.motion]).caption for s in scenes],
            "speed": [dataclasses.replace(s, speed=OTHER_SPEED[s.speed]).caption for s in scenes]}


def _mask(shape: str, yy: np.ndarray, xx: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    if shape == "circle":
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
    if shape == "square":
        return (np.abs(xx - cx) <= r * 0.85) & (np.abs(yy - cy) <= r * 0.85)
    # An upward triangle: inside the band below the apex and within the widening sides.
    top, bottom = cy - r, cy + r
    half = (yy - top) / (2 * r) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half)


def _tracks(scene: Scene, rng: np.random.Generator, frames: int) -> list[np.ndarray]:
    """(frames, 2) centre positions in [0, 1] per object: a straight path across the frame."""
    dx, dy = MOTIONS[scene.motion]
    r = SIZES[scene.size]
    travel = SPEEDS.get(scene.speed, 0.0)
    lanes = [0.5] if scene.count == 1 else [0.3, 0.7]
    tracks = []
    for lane in rng.permutation(lanes):
        along = np.linspace(-travel / 2, travel / 2, frames) + rng.uniform(-0.04, 0.04)
        across = lane + rng.uniform(-0.05, 0.05)
        if dx:  # horizontal motion: objects in horizontal lanes
            xy = np.stack([0.5 + dx * along, np.full(frames, across)], axis=1)
        elif dy:
            xy = np.stack([np.full(frames, across), 0.5 + dy * along], axis=1)
        else:
            still = rng.uniform(0.5 - 0.15, 0.5 + 0.15)
            xy = np.tile([across, still], (frames, 1)) if scene.count > 1 else np.tile(rng.uniform(0.3, 0.7, 2), (frames, 1))
        tracks.append(np.clip(xy, r, 1 - r))
    return tracks


def render(scene: Scene, *, seed: int, frames: int = 16, size: int = 64,
           only: Sequence[int] | None = None) -> np.ndarray:
    """(frames, size, size, 3) uint8 RGB frames of one scene; deterministic by seed.
    `only` draws just those frames of the same clip (what a sampler would keep), in that order."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    bg = np.array(BACKGROUNDS[scene.background], np.float32) + rng.uniform(-8, 8, 3)
    colour = np.array(COLOURS[scene.colour], np.float32) + rng.uniform(-12, 12, 3)
    tracks = _tracks(scene, rng, frames)
    r = SIZES[scene.size] * size * rng.uniform(0.92, 1.08)
    drawn = list(range(frames)) if only is None else list(only)
    video = np.empty((len(drawn), size, size, 3), np.uint8)
    for i, t in enumerate(drawn):
        img = np.broadcast_to(bg, (size, size, 3)).copy()
        for track in tracks:
            cx, cy = track[t] * size
            img[_mask(scene.shape, yy, xx, cx, cy, r)] = colour
        video[i] = np.clip(img, 0, 255).astype(np.uint8)
    return video


def write_mp4(path: str | Path, video: np.ndarray, *, fps: int = 8, crf: int = 18) -> Path:
    """H.264 (yuv420p) MP4 of (T, H, W, 3) uint8 frames."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = video.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        stream.codec_context.thread_count = 1  # bit-identical output whatever the machine
        for frame in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode(None))
    return path


def clip_name(scene: Scene, seed: int) -> str:
    """A file name that changes whenever the clip would: caption, seed and RENDER_VERSION."""
    digest = hashlib.sha256(f"{RENDER_VERSION}|{scene.caption}|{seed}".encode()).hexdigest()[:12]
    return f"clip-{digest}.mp4"


def gallery(split: Split, *, per_caption: int = 1, seed: int = 0) -> Iterator[tuple[Scene, int]]:
    """(scene, render seed) pairs: `per_caption` clips of every caption in the split."""
    for i, scene in enumerate(scenes(split)):
        for j in range(per_caption):
            yield scene, seed * 1_000_003 + i * 101 + j
