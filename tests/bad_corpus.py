"""A corpus that mixes videos that must embed with every kind of bad input, for the pipeline and
`vlrt embed` tests. Each bad file comes with a phrase its error must contain (the reader's own
words, vlrt/runtime/video.py), besides its name."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from video_assets import write_audio_only, write_image, write_video


def _y4m(width: int, height: int, frame_bytes: int = 100) -> bytes:
    return f"YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C420jpeg\nFRAME\n".encode() + bytes(frame_bytes)


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
           "short.y4m": (_y4m(16, 16, frame_bytes=10), "no frame of the rawvideo stream decodes"),
           # Claims of frames of 720 MB (refused by vlrt) and 30 GB (refused by FFmpeg) in 150 bytes.
           "wide.y4m": (_y4m(60000, 4000), "claimed frame size 60000x4000 is outside 1..16384"),
           "huge.y4m": (_y4m(100000, 100000), "cannot open as a video or image")}
    for name, (content, _) in bad.items():
        (root / name).write_bytes(content)
    write_audio_only(root / "audio.m4a")
    reasons = {name: reason for name, (_, reason) in bad.items()}
    reasons.update({"audio.m4a": "no video stream", "missing.mp4": "no such file"})
    return [str(p) for p in good], {str(root / name): reason for name, reason in reasons.items()}
