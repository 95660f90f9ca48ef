"""Test videos written with PyAV's own encoders: every frame says which frame it is.

Each frame shows its index as 8 bit blocks (white = 1, black = 0, least significant bit on the
left) across the bottom third, a band of stripes that scrolls with the index (so P and B frames
really reference other frames), and a red square in the top-left corner only: a frame that comes
out mirrored or turned has the square somewhere else. The content is a pure function of the index
and the size, so files are deterministic up to the encoder.

`frame_index(rgb)` reads the index back from a decoded, upright frame.

`write_packed_avi` writes what PyAV's muxers never write: an MPEG-4 Part 2 AVI with DivX/Xvid
"packed" B-frames, whose decoded frames carry their pts out of order.
"""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 8
_MARKER = (220, 30, 30)
_CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".ts": "mpegts",
               ".avi": "avi", ".h264": "h264"}  # .h264: an elementary stream, no timestamps


def frame_pixels(index: int, width: int, height: int) -> np.ndarray:
    """The upright picture of frame `index`: (height, width, 3) uint8."""
    img = np.full((height, width, 3), 128, np.uint8)
    x = np.arange(width)
    stripes = ((x + 4 * index) // 8 % 2 * 160 + 40).astype(np.uint8)  # (W,)
    img[height // 3: 2 * height // 3] = stripes[None, :, None]
    block = width // BITS
    for b in range(BITS):
        img[2 * height // 3:, b * block:(b + 1) * block] = 255 if index >> b & 1 else 0
    side = min(width, height) // 4
    img[:side, :side] = _MARKER
    return img


def frame_index(rgb: np.ndarray) -> int:
    """The index `frame_pixels` drew into an upright decoded frame (exact despite lossy coding)."""
    h, w = rgb.shape[:2]
    block = w // BITS
    row = rgb[(5 * h) // 6, :, :].astype(np.int32).mean(axis=1)  # (W,)
    return sum(1 << b for b in range(BITS) if row[b * block + block // 2] > 128)


def marker_corner(rgb: np.ndarray) -> str:
    """Which corner holds the red square: 'tl', 'tr', 'bl' or 'br'."""
    h, w = rgb.shape[:2]
    m = min(h, w) // 8
    corners = {"tl": rgb[:m, :m], "tr": rgb[:m, -m:], "bl": rgb[-m:, :m], "br": rgb[-m:, -m:]}
    red = {k: float(v[..., 0].mean() - v[..., 1].mean()) for k, v in corners.items()}
    return max(red, key=red.get)


def _pts_list(frames: int, start_pts: int, vfr: bool) -> list[int]:
    """Presentation times in 1/fps/... ticks: regular, or irregular steps of 1-3 ticks for VFR."""
    if not vfr:
        return [start_pts + i for i in range(frames)]
    steps = [1, 3, 2, 1, 1, 2]  # irregular, deterministic
    pts, t = [], start_pts
    for i in range(frames):
        pts.append(t)
        t += steps[i % len(steps)]
    return pts


def write_video(path, *, codec: str = "libx264", width: int = 160, height: int = 96, frames: int = 48,
                fps: int | Fraction = 24, gop: int = 12, bframes: bool = True, pix_fmt: str = "yuv420p",
                start_pts: int = 0, vfr: bool = False, rotation: int = 0) -> list[int]:
    """Write a test video; return the pts written (in ticks of 1/fps s; VFR: 1/(2*fps) s steps).
    `fps` may be a fraction: Fraction(30000, 1001) writes NTSC's 29.97 fps exactly.

    `rotation` is the clockwise turn a player applies to show the picture upright (the legacy
    `rotate` tag): the stored frames are the upright picture turned the other way, and the
    display matrix says how to undo it. The container follows the suffix.
    """
    path = Path(path)
    tick = Fraction(1, fps * 2) if vfr else Fraction(1, fps)
    pts = _pts_list(frames, start_pts, vfr)
    with av.open(str(path), "w", format=_CONTAINERS[path.suffix.lower()]) as out:
        stream = out.add_stream(codec, rate=fps)
        stored_w, stored_h = (height, width) if rotation % 180 else (width, height)
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        stream.time_base = tick
        stream.codec_context.time_base = tick
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 2 if bframes else 0
        stream.codec_context.options = _codec_options(codec, gop, bframes)
        if rotation:
            stream.set_display_rotation(-rotation)  # PyAV's angle is counter-clockwise
        for i, p in enumerate(pts):
            upright = frame_pixels(i, width, height)
            stored = np.rot90(upright, k=rotation // 90)  # a player turns it back clockwise
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
            frame.pts, frame.time_base = p, tick
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return pts


def _codec_options(codec: str, gop: int, bframes: bool) -> dict[str, str]:
    if codec == "libx264":
        return {"preset": "veryfast", "crf": "23", "keyint_min": str(gop), "sc_threshold": "0",
                "threads": "1"}
    if codec == "libx265":
        return {"preset": "ultrafast", "crf": "28", "x265-params":
                f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes={2 if bframes else 0}:"
                "pools=1:frame-threads=1:log-level=error"}
    if codec == "libvpx-vp9":
        return {"deadline": "realtime", "cpu-used": "8", "crf": "35", "b": "0", "threads": "1"}
    return {}


def write_audio_only(path, *, seconds: float = 0.5, rate: int = 16000) -> None:
    """A file with one AAC audio stream and no video."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate)
        n = int(seconds * rate)
        t = np.arange(n) / rate
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]  # (1, N)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate, frame.pts = rate, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_two_video_streams(path, *, frames: int = 24, fps: int = 24) -> None:
    """Two H.264 streams (use .mkv: the MP4 muxer marks its first stream default): a small one
    first (64x48, every frame shows index 200) without the default disposition, then the test
    pattern at 160x96 marked default, the one FFmpeg's best-stream rule picks."""
    from av.stream import Disposition

    with av.open(str(path), "w", format=_CONTAINERS[Path(path).suffix.lower()]) as out:
        small = out.add_stream("libx264", rate=fps)
        big = out.add_stream("libx264", rate=fps)
        for s, (w, h) in ((small, (64, 48)), (big, (160, 96))):
            s.width, s.height, s.pix_fmt = w, h, "yuv420p"
            s.codec_context.options = {"preset": "ultrafast", "threads": "1"}
        small.disposition, big.disposition = Disposition(0), Disposition.default
        for i in range(frames):
            for s, img in ((small, frame_pixels(200, 64, 48)), (big, frame_pixels(i, 160, 96))):
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                out.mux(s.encode(frame))
        out.mux(small.encode(None))
        out.mux(big.encode(None))


def write_image(path, *, index: int = 7, width: int = 160, height: int = 96) -> np.ndarray:
    """A still image (format by suffix, via PIL) showing frame `index`; returns its pixels."""
    from PIL import Image

    img = frame_pixels(index, width, height)
    Image.fromarray(img).save(str(path))
    return img


_VOP = b"\0\0\1\xb6"  # MPEG-4 Part 2 start codes: a video object plane (a picture), user data
_USER_DATA = b"\0\0\1\xb2"
PACKED_USER_DATA = b"DivX503b1393p"  # what DivX 5 and Xvid's packed mode write; the "p" says packed


def _not_coded_vop(time_increment_bits: int) -> bytes:
    """An N-VOP: the placeholder packet a packed stream puts after each packed pair. Bits after
    the start code: P type, modulo_time_base 0, marker, time increment 0, marker, vop_coded 0, then
    stuffing (a 0 and 1s) to the byte."""
    bits = "01" + "0" + "1" + "0" * time_increment_bits + "1" + "0"
    bits += "0" + "1" * (-(len(bits) + 1) % 8)
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def _mpeg4_packets(frames: int, width: int, height: int, fps: int, gop: int, closed_gop: bool,
                   b_frames: int = 1) -> list:
    """PyAV's mpeg4 encoder (one B-frame between anchors by default): packets in decode order."""
    cc = av.CodecContext.create("mpeg4", "w")
    cc.width, cc.height, cc.pix_fmt = width, height, "yuv420p"
    cc.time_base, cc.framerate = Fraction(1, fps), fps
    cc.gop_size, cc.max_b_frames = gop, b_frames
    # A closed GOP needs scene-change detection off (FFmpeg refuses the two together).
    cc.options = {"flags": "+cgop", "sc_threshold": "1000000000"} if closed_gop else {}
    packets = []
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(frame_pixels(i, width, height), format="rgb24")
        frame.pts = i
        packets += cc.encode(frame)
    return packets + cc.encode(None)


def _pack(packets: list, fps: int) -> list[tuple[bytes, bool]]:
    """(data, keyframe) per AVI chunk, packed as DivX does: an anchor and the B-frame after it in
    decode order share a chunk, and an N-VOP takes the B-frame's slot, so chunks follow display
    order and a decoder must reorder frames whose pts the container gives in chunk order."""
    chunks = []
    i = 0
    while i < len(packets):
        data, key = bytes(packets[i]), packets[i].is_keyframe
        if key:  # the user data goes with each sequence header, before the first picture
            at = data.find(_VOP)
            data = data[:at] + _USER_DATA + PACKED_USER_DATA + data[at:]
        if i + 1 < len(packets) and packets[i + 1].pts < packets[i].pts:  # a B-frame follows
            chunks += [(data + bytes(packets[i + 1]), key), (_not_coded_vop((fps - 1).bit_length()), False)]
            i += 2
        else:
            chunks.append((data, key))
            i += 1
    return chunks


def write_packed_avi(path, *, frames: int = 48, width: int = 160, height: int = 96, fps: int = 24,
                     gop: int = 12, closed_gop: bool = True) -> None:
    """An MPEG-4 Part 2 AVI with packed B-frames (one between anchors). Decoded in sequence, its
    frames carry pts 1, 3, 2, 5, 4, ... (the chunks' numbers, +1 as FFmpeg's AVI demuxer gives
    them) while their pictures are frames 0, 1, 2, ... A closed GOP (Xvid's default) starts its
    keyframes at 0, 11, 22, 33, 44 here; an open one packs each keyframe with the B-frame before it."""
    chunks = _pack(_mpeg4_packets(frames, width, height, fps, gop, closed_gop), fps)
    _mux_avi(path, chunks, width, height, fps)


def write_not_coded_frame_avi(path, *, frames: int = 24, at: int = 6, fps: int = 24) -> None:
    """An MPEG-4 Part 2 AVI (no B-frames) with an N-VOP as chunk `at`: a packet that decodes to
    no frame and no error (an encoder's dropped frame). Frame k >= at shows picture k - 1."""
    chunks = [(bytes(p), p.is_keyframe) for p in _mpeg4_packets(frames, 160, 96, fps, 12, False, b_frames=0)]
    chunks.insert(at, (_not_coded_vop((fps - 1).bit_length()), False))
    _mux_avi(path, chunks, 160, 96, fps)


def _mux_avi(path, chunks: list[tuple[bytes, bool]], width: int, height: int, fps: int) -> None:
    """Chunks as they are, numbered in order: AVI stores no pts, only the chunk's place."""
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for n, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, n, n
            packet.time_base, packet.is_keyframe = Fraction(1, fps), key
            out.mux(packet)


def write_big_frame(path, side: int):
    """One black side x side H.264 frame in an MPEG-PS file (.mpg): the container states no frame
    size, so FFmpeg decodes the frame while opening the file."""
    with av.open(str(path), "w", format="mpeg") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "threads": "1"}
        frame = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        frame.pts = 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
