"""A corpus that mixes videos that must embed with every kind of bad input, for the pipeline and
`vlrt embed` tests. Each bad file comes with a phrase its error must contain (the reader's own
words, vlrt/runtime/video.py), besides its name.

Also the writers of oversized files (a PNG bomb, raw YUV4MPEG2 frames) and `cost_in_child`, which
measures what reading files costs in a fresh Python."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
from video_assets import write_audio_only, write_image, write_video

_CHUNK = 1 << 20  # bytes of raw rows compressed at a time: writing a bomb stays small in memory


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def write_png_bomb(path: Path, width: int, height: int) -> Path:
    """A valid 8-bit greyscale PNG of zeros: 16000x16000 is 256 MB decoded (768 MB as RGB) in
    250 KB of file. The IDAT is deflated a block of rows at a time, never built whole; run-length
    matching is all zeros need, and twice as fast as level 9."""
    z = zlib.compressobj(9, zlib.DEFLATED, 15, 9, zlib.Z_RLE)
    rows = max(1, _CHUNK // (width + 1))
    idat = []
    for first in range(0, height, rows):
        idat.append(z.compress(bytes((width + 1) * min(rows, height - first))))  # filter byte 0 + row
    idat.append(z.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # depth 8, greyscale, no interlace
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"".join(idat))
                     + _png_chunk(b"IEND", b""))
    return path


def y4m_header(width: int, height: int) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C420jpeg\n".encode()


def write_y4m(path: Path, width: int, height: int) -> Path:
    """One real (sparse: no disk used) 4:2:0 frame of zeros, whatever its size."""
    with open(path, "wb") as f:
        f.write(y4m_header(width, height) + b"FRAME\n")
        f.truncate(f.tell() + width * height * 3 // 2)
    return path


_CHILD = """
import json, resource, sys, time
from vlrt.errors import VlrtError
{setup}
def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
before, start, errors = peak_mb(), time.perf_counter(), []
for path in json.loads(sys.argv[1]):
    try:
        call(path)
    except VlrtError as e:
        errors.append(str(e))
print(json.dumps([time.perf_counter() - start, peak_mb() - before, errors]))
"""


def cost_in_child(setup: str, paths: list[str]) -> tuple[float, float, list[str]]:
    """(seconds, peak RSS growth in MB, VlrtError messages) of `call(path)` for each path, where
    `setup` imports what it needs and defines `call`. Run in a fresh Python and measured after its
    imports, so that neither they nor the test process's own memory count."""
    res = subprocess.run([sys.executable, "-c", _CHILD.format(setup=setup), json.dumps(paths)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    seconds, mb, errors = json.loads(res.stdout.splitlines()[-1])
    return seconds, mb, errors


def write_corpus(root: Path) -> tuple[list[str], dict[str, str]]:
    """(good paths, {bad path: reason}). Good: three clips, a one-frame video, a still image and a
    Matroska file cut at 60% (its first frames still decode); bad: every other kind of damage."""
    good = []
    for i, (frames, fps) in enumerate([(48, 24), (120, 24), (30, 10)]):
        write_video(root / f"good{i}.mp4", frames=frames, fps=fps)
        good.append(root / f"good{i}.mp4")
    write_video(root / "one_frame.mp4", frames=1)
    write_image(root / "still.png")
    write_video(root / "full.mkv", frames=48)
    data = (root / "full.mkv").read_bytes()
    (root / "cut.mkv").write_bytes(data[: len(data) * 6 // 10])
    good += [root / "one_frame.mp4", root / "still.png", root / "cut.mkv"]
    bad = {"empty.mp4": (b"", "file is empty (0 bytes)"),
           "noise.mp4": (np.random.default_rng(0).bytes(5000), "cannot open as a video or image"),
           # MP4 writes its index (moov) last: a cut file has none.
           "truncated.mp4": ((root / "good0.mp4").read_bytes()[:300], "cannot open as a video or image"),
           "short.y4m": (y4m_header(16, 16) + b"FRAME\n" + bytes(10), "no frame of the rawvideo stream decodes"),
           # Claims of frames of 360 MB and 15 GB in 150 bytes, refused from the header.
           "wide.y4m": (y4m_header(60000, 4000) + b"FRAME\n" + bytes(100),
                        "claimed frame size 60000x4000 is outside the limits"),
           "huge.y4m": (y4m_header(100000, 100000) + b"FRAME\n" + bytes(100),
                        "claimed frame size 100000x100000 is outside the limits")}
    for name, (content, _) in bad.items():
        (root / name).write_bytes(content)
    write_audio_only(root / "audio.m4a")
    # Sides within MAX_SIDE, area over MAX_PIXELS: a 250 KB PNG (FFmpeg's own check refuses it
    # inside av.open) and a real 384 MB frame (sparse).
    write_png_bomb(root / "bomb.png", 16000, 16000)
    write_y4m(root / "big.y4m", 16000, 16000)
    reasons = {name: reason for name, (_, reason) in bad.items()}
    reasons.update({"audio.m4a": "no video stream", "missing.mp4": "no such file",
                    "bomb.png": "frame size unknown or over 67108864 pixels",
                    "big.y4m": "claimed frame size 16000x16000 is outside the limits"})
    return [str(p) for p in good], {str(root / name): reason for name, reason in reasons.items()}
