"""Exact frame access with PyAV: `probe` a file, then `read_frames` by index.

An index is a position in presentation order. `probe` scans the packets once (demux only, no
decode) and sorts their presentation times, so index -> pts is exact for B-frames, edit lists,
VFR and streams that start late; the container's own frame count is never trusted. It also
decodes the first frame, which proves the file decodes and gives the display rotation.

`read_frames` seeks to the keyframe at or before each wanted frame and decodes forward. It seeks
only when that is cheaper than decoding on from where the decoder is. A decoded frame is placed by
its pts where the container's pts are presentation times. Where they are not -- AVI, whose pts
FFmpeg derives from chunk numbers, rising in decode order although the decoder reorders frames
(DivX/Xvid "packed" B-frames, H.264 with B-frames), so that decoded frames carry pts 1, 3, 2, 5,
4, ... -- frames are placed by decoder output order, which is presentation order: by the dts of
the packet that released each (FFmpeg's best-effort time) less the decoder's lag, and frames
flushed at the end one place on. Frames come out rotated as players show them: PyAV does not
apply the display matrix, so its rotation is read from the frame and applied with `np.rot90`.

`VideoReader` is the seam under `read_frames`: one open file that hands out decoded frames by
index, optionally through a hardware decoder (`hwaccel`), as the GPU decoder uses it.

`frame_indices_at` turns times (seconds since the first frame) into the indices of the frames a
player shows then, from the real pts; `read_frames_at` reads those frames with `read_frames`.

Each video gets one decode thread: callers decode many videos in parallel, and FFmpeg's own
threads would only compete with them.
"""
from __future__ import annotations

import bisect
import operator
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from vlrt.errors import VlrtError
from vlrt.runtime.sampling import TIME_TOLERANCE_S, shown_at

# Larger frames are corrupt or hostile files (a 250 KB PNG can claim 16000x16000): refused before
# FFmpeg allocates them. MAX_PIXELS admits 8K UHD (7680x4320, 33 Mpx), DCI 8K (8192x4320), 8192x4096
# 360-degree video and 50 MP photos; a frame at the limit is 100 MB as YUV 4:2:0, 200 MB as RGB.
MAX_SIDE = 16384
MAX_PIXELS = 8192 * 8192
# FFmpeg's own check, given to the probing decode inside av.open and to each stream's decoder
# (the open option does not reach those). FFmpeg checks sizes padded for alignment (< 64 px a
# side more), hence the margin: the exact limit is vlrt's own check, `_check_size`. In formats
# whose streams are found only by probing (MPEG-PS, MPEG-TS) PyAV passes no options to the
# probe, so there a huge frame is allocated while the file opens; `vlrt serve` decodes in worker
# processes with a memory cap for that reason.
DECODER_LIMITS = {"max_pixels": str(MAX_PIXELS + 192 * MAX_SIDE)}
OPEN_TIMEOUT_S = 30.0  # FFmpeg's I/O interrupt: a stalled (network) read fails instead of hanging
PixelFormat = Literal["rgb24", "bgr24"]
__all__ = ["MAX_PIXELS", "MAX_SIDE", "TIME_TOLERANCE_S", "DecodeStats", "VideoInfo", "VideoReader",
           "check_indices", "ffmpeg_reason", "frame_indices_at", "probe", "read_frames", "read_frames_at",
           "read_frames_av", "rotate", "y4m_size"]


@dataclass(frozen=True)
class VideoInfo:
    """What `probe` learnt about a file's video stream. Times are in seconds."""

    path: str
    width: int  # as displayed, after rotation
    height: int
    rotation: int  # 0/90/180/270: clockwise turn applied to decoded frames to show them upright
    codec: str
    num_frames: int  # frames that decode (packet scan, leading undecodable frames removed)
    fps: float  # the stream's average rate (0.0 when unknown)
    start_time: float  # pts of the first frame
    duration: float  # last pts - first pts + one frame (1 / fps)
    timestamps: tuple[float, ...]  # every frame's pts, in presentation order
    keyframes: tuple[int, ...]  # indices of keyframes, in presentation order
    stream_index: int = field(default=0, repr=False)
    time_base: Fraction = field(default=Fraction(1), repr=False)
    pts: tuple[int, ...] = field(default=(), repr=False)  # exact pts in `time_base` units
    keyframe_dts: tuple[int, ...] = field(default=(), repr=False)  # per keyframe, <= its pts
    timed: bool = field(default=True, repr=False)  # False: no timestamps, frames are counted
    # True: decoded frames are placed by decoder output order, not by their pts (see the module
    # docstring); untimed streams are too.
    by_output_order: bool = field(default=False, repr=False)
    dts_lag: int = field(default=0, repr=False)  # by output order: frames a decoded dts runs ahead


@dataclass
class DecodeStats:
    """Counters a caller may pass to `read_frames` to see what a request cost."""

    frames_decoded: int = 0  # frames the decoder produced, wanted or not
    packets_skipped: int = 0  # non-reference packets not decoded because no wanted frame is in them
    seeks: int = 0


def _av() -> Any:
    try:
        import av
    except ImportError:
        raise VlrtError("reading video files needs PyAV: pip install 'av>=14'") from None
    return av


def ffmpeg_reason(err: BaseException) -> str:
    """An FFmpeg or OS error in plain words: its description without the errno, the C function or
    the path (e.g. "invalid data found when processing input")."""
    av = _av()
    if isinstance(err, av.error.ExitError):  # FFmpeg's interrupt: OPEN_TIMEOUT_S without data
        return f"no data arrived for {OPEN_TIMEOUT_S:g} s"
    text = getattr(err, "strerror", None) or str(err) or type(err).__name__
    return text[:1].lower() + text[1:]


def _decode_trouble(err: BaseException, codec: str) -> str:
    """What a decode error says about the frames it took. Only FFmpeg's invalid-data error means
    damaged input; the size limit shows as an invalid argument."""
    av = _av()
    if isinstance(err, av.error.InvalidDataError):
        return f"FFmpeg reports corrupt data ({ffmpeg_reason(err)})"
    if isinstance(err, av.error.ArgumentError):
        return (f"the {codec} decoder refused it ({ffmpeg_reason(err)}; it refuses frames over "
                f"{MAX_PIXELS} pixels so)")
    return f"the {codec} decoder failed ({ffmpeg_reason(err)})"


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise VlrtError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise VlrtError(f"{path}: not a regular file")
    if os.path.getsize(path) == 0:
        raise VlrtError(f"{path}: file is empty (0 bytes)")


def _check_size(path: str, what: str, width: int, height: int) -> None:
    if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE and width * height <= MAX_PIXELS):
        raise VlrtError(f"{path}: {what} frame size {width}x{height} is outside the limits: "
                        f"1..{MAX_SIDE} px a side, {MAX_PIXELS} px in all")


def y4m_size(path: str) -> tuple[int, int] | None:
    """The frame size a YUV4MPEG2 file's header claims; None for another file, an unreadable one
    or a broken header (av.open reports those)."""
    try:
        with open(path, "rb") as f:
            line = f.read(256).split(b"\n", 1)[0]
    except OSError:
        return None
    if not line.startswith(b"YUV4MPEG2"):
        return None
    tags = {token[:1]: token[1:] for token in line.split()[1:]}  # the last W / H wins, as in FFmpeg
    try:
        return int(tags[b"W"]), int(tags[b"H"])
    except (KeyError, ValueError):
        return None


def _check_y4m_header(path: str) -> None:
    """Refuse a YUV4MPEG2 file whose header claims too large a frame. FFmpeg reads a raw frame
    whole, as one packet, while opening the file: before any size check (360 MB for 60000x4000)."""
    size = y4m_size(path)
    if size is not None:
        _check_size(path, "claimed", *size)


def _open(path: str, hwaccel: Any = None) -> Any:
    av = _av()
    _check_y4m_header(path)
    try:
        return av.open(path, timeout=OPEN_TIMEOUT_S, options=DECODER_LIMITS, hwaccel=hwaccel)
    except av.error.InvalidDataError as e:
        raise VlrtError(f"{path}: cannot open as a video or image: FFmpeg found none it can read in it "
                        f"({ffmpeg_reason(e)})") from None
    except (av.FFmpegError, OSError) as e:
        raise VlrtError(f"{path}: cannot open as a video or image ({ffmpeg_reason(e)})") from None
    except UnicodeDecodeError:
        raise VlrtError(f"{path}: cannot open as a video or image (its metadata is not UTF-8 text)") from None


# Video codecs FFmpeg makes out of text: a .txt file read by the tty demuxer "decodes" as ANSI art.
# Such a file is not a video or an image, whatever it decodes to. codec -> the demuxer that makes it.
NOT_MEDIA_CODECS = {"ansi": "tty", "bintext": "bin", "xbin": "xbin", "idf": "idf"}


def _video_stream(container: Any, path: str) -> Any:
    """The stream FFmpeg picks by default (av_find_best_stream), skipping cover art."""
    av = _av()
    streams = [s for s in container.streams.video
               if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        raise VlrtError(f"{path}: no video stream")
    best = container.streams.best("video")
    if best is None or best not in streams:
        best = max(streams, key=lambda s: s.codec_context.width * s.codec_context.height)
    cc = best.codec_context
    if cc.name in NOT_MEDIA_CODECS:
        raise VlrtError(f"{path}: not a video or image: FFmpeg reads it as text "
                        f"(the {NOT_MEDIA_CODECS[cc.name]} demuxer, {cc.name} codec)")
    if not (cc.width and cc.height):  # FFmpeg's probing decode refused the size, or found none
        raise VlrtError(f"{path}: frame size unknown or over {MAX_PIXELS} pixels "
                        f"(FFmpeg read none from the {cc.name} stream)")
    _check_size(path, "claimed", cc.width, cc.height)
    _limit_decoder(best)
    return best


def _limit_decoder(stream: Any) -> None:
    """Before a stream's first decode: one thread (see the module docstring) and the size limit."""
    cc = stream.codec_context
    cc.thread_count = 1
    cc.options = {**cc.options, **DECODER_LIMITS}


class _Trouble:
    """FFmpeg's complaints while a file is read, kept in plain words for the error that may follow
    (a frame that never decoded is blamed on them, and called corrupt only when FFmpeg said so)."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self.last: str | None = None

    def decode(self, stream: Any, packet: Any) -> list[Any]:
        """Decode one packet (None flushes); a packet FFmpeg refuses gives no frames."""
        av = _av()
        try:
            return stream.codec_context.decode(packet)
        except av.FFmpegError as err:
            self.last = _decode_trouble(err, self.codec)
            return []

    def packets(self, container: Any, stream: Any) -> Iterator[Any]:
        """The stream's packets with data; a read error (a truncated file) ends the stream."""
        av = _av()
        try:
            for packet in container.demux(stream):
                if packet.size:
                    yield packet
        except av.FFmpegError as err:
            self.last = f"reading stopped early ({ffmpeg_reason(err)})"


def _rotation(frame: Any, stream: Any) -> int:
    """Clockwise degrees a player turns this frame, to the nearest quarter turn.

    The display matrix (PyAV: counter-clockwise degrees) wins; the legacy `rotate` tag (clockwise)
    is a fallback. Mirroring in the matrix is not applied.
    """
    ccw = frame.rotation or 0
    if not ccw:
        try:
            return round(float(stream.metadata.get("rotate", 0)) / 90) * 90 % 360
        except ValueError:
            return 0
    return -round(ccw / 90) * 90 % 360


def _packet_time(packet: Any) -> int | None:
    return packet.pts if packet.pts is not None else packet.dts


def _scan(container: Any, stream: Any, trouble: _Trouble) -> tuple[list[int], dict[int, int], Any]:
    """One demux pass: every packet's pts in decode order, keyframes' pts -> dts, and the first
    decoded frame."""
    pts: list[int] = []
    key: dict[int, int] = {}
    first = None
    for packet in trouble.packets(container, stream):
        if first is None:  # discarded packets too: later frames may reference them
            first = next(iter(trouble.decode(stream, packet)), None)
        t = _packet_time(packet)
        if t is None or packet.is_discard:  # unplaceable, or outside the edit list
            continue
        pts.append(t)
        if packet.is_keyframe:
            key[t] = min(t, packet.dts if packet.dts is not None else t)
    if first is None:
        first = next(iter(trouble.decode(stream, None)), None)
    return pts, key, first


def _count_decoded(path: str, stream_index: int) -> int:
    """Frames a full decode gives: the only count an untimed (elementary) stream has."""
    with _open(path) as container:
        stream = container.streams[stream_index]
        _limit_decoder(stream)
        trouble = _Trouble(stream.codec_context.name)
        n = sum(len(trouble.decode(stream, p)) for p in trouble.packets(container, stream))
        return n + len(trouble.decode(stream, None))


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read a video's (or still image's) timing, size and rotation. Raises VlrtError naming the
    file when it is missing, empty, unreadable, has no video stream or no decodable frame.

    Costs one demux pass and one decoded frame; a stream without timestamps (a raw .h264 file)
    is decoded in full to count its frames, and is then read without seeking.
    """
    path = os.fspath(path)
    _check_file(path)
    with _open(path) as container:
        stream = _video_stream(container, path)
        trouble = _Trouble(stream.codec_context.name)
        pts, key_pts, first = _scan(container, stream, trouble)
        if first is None:
            why = f": {trouble.last}" if trouble.last else ""
            raise VlrtError(f"{path}: no frame of the {stream.codec_context.name} stream decodes{why}")
        rate = stream.average_rate or stream.guessed_rate
        if pts:
            timing = _timing(pts, key_pts, first, stream.time_base or Fraction(1))
            if _shuffled_pts(container, stream, pts):
                timing.update(by_output_order=True, dts_lag=_dts_lag(first, timing["pts"]))
        else:
            n = _count_decoded(path, stream.index)
            timing = {"pts": tuple(range(n)), "keyframes": (0,), "keyframe_dts": (0,), "timed": False,
                      "time_base": 1 / Fraction(rate) if rate else Fraction(1), "by_output_order": True}
        return _info(path, stream, first, float(rate or 0), timing)


def _shuffled_pts(container: Any, stream: Any, decode_order_pts: list[int]) -> bool:
    """Whether decoded frames will carry their pts out of order, so must be placed by output order.

    AVI stores no presentation times: FFmpeg numbers the chunks (dts) and derives pts from them.
    Where those pts rise in decode order although the decoder reorders frames, the stream hides
    its B-frames from FFmpeg's parser (DivX/Xvid packed B-frames: a P- and a B-frame in one chunk;
    H.264 with B-frames), and decoded frames carry the pts shuffled; the dts FFmpeg hands each
    frame still follow output order. Elsewhere stored pts are presentation times.
    """
    return (container.format.name == "avi" and bool(stream.codec_context.has_b_frames)
            and all(a < b for a, b in zip(decode_order_pts, decode_order_pts[1:])))


def _dts_lag(first: Any, pts: tuple[int, ...]) -> int:
    """How many frames a decoded frame's dts runs ahead of its place (the decoder's delay less
    the one FFmpeg built into the derived pts), from the first frame, whose pts is its own."""
    if first.dts not in pts or first.pts not in pts:  # a lone frame, flushed out (no dts)
        return 0
    return pts.index(first.dts) - pts.index(first.pts)


def _timing(pts: list[int], key_pts: dict[int, int], first: Any, time_base: Fraction) -> dict[str, Any]:
    """VideoInfo's timing fields from the packet scan."""
    # Frames before the first one that decodes (a stream cut mid-GOP, open-GOP leading frames)
    # are not part of the video.
    start = first.pts if first.pts is not None else min(pts)
    pts = sorted({t for t in pts if t >= start})
    keyframes = tuple(i for i, t in enumerate(pts) if t in key_pts) or (0,)
    return {"pts": tuple(pts), "keyframes": keyframes, "time_base": time_base,
            "keyframe_dts": tuple(key_pts.get(pts[k], pts[k]) for k in keyframes)}


def _info(path: str, stream: Any, first: Any, fps: float, timing: dict[str, Any]) -> VideoInfo:
    rotation = _rotation(first, stream)
    w, h = (first.height, first.width) if rotation % 180 else (first.width, first.height)
    _check_size(path, "decoded", w, h)
    seconds = tuple(float(t * timing["time_base"]) for t in timing["pts"])
    return VideoInfo(
        path=path, width=w, height=h, rotation=rotation, codec=stream.codec_context.name,
        num_frames=len(seconds), fps=fps, start_time=seconds[0],
        duration=seconds[-1] - seconds[0] + (1 / fps if fps > 0 else 0.0), timestamps=seconds,
        stream_index=stream.index, **timing)


class _Cursor:
    """A decoder positioned in one file: hands out wanted frames in increasing index order."""

    def __init__(self, container: Any, stream: Any, info: VideoInfo, wanted: list[int], stats: DecodeStats):
        self.container, self.stream, self.info, self.stats = container, stream, info, stats
        self.trouble = _Trouble(info.codec)
        self.index_of = {t: i for i, t in enumerate(info.pts)}
        self.wanted_pts = {info.pts[i] for i in wanted}
        self.pos = -1  # index of the last frame placed (-1: before the first, or just after a seek)
        self.seek_floor: int | None = None  # after a seek: the keyframe the decoder must start at
        self.key_dts = dict(zip(info.keyframes, info.keyframe_dts))
        # Seek to keyframes' dts: set once seeking by pts overshoots, and from the start where
        # frames go by output order (AVI, whose index holds the chunks' numbers, the dts).
        self.by_dts = info.by_output_order
        first = info.keyframes[0]
        self.dts_shift = info.pts[first] - self.key_dts.get(first, info.pts[first])  # see _seek
        self.frames = self._decode()

    def _decode(self) -> Iterator[Any]:
        for packet in self.trouble.packets(self.container, self.stream):
            # A non-reference frame nobody wants needs no decoding: no other frame depends on it.
            # Only where pts place frames: by output order, every frame must come out to be counted.
            if (not self.info.by_output_order and packet.is_disposable
                    and _packet_time(packet) not in self.wanted_pts):
                self.stats.packets_skipped += 1
                continue
            yield from self.trouble.decode(self.stream, packet)
        yield from self.trouble.decode(self.stream, None)

    def _place(self, frame: Any) -> int | None:
        """The decoded frame's index in presentation order; None when it cannot be placed."""
        if not self.info.timed:  # never seeked: the decoder's output order is the index
            return self.pos + 1
        if not self.info.by_output_order:
            return self.index_of.get(frame.pts)
        # FFmpeg's best-effort time where pts are shuffled: the dts of the packet whose decoding
        # released the frame, which rises in output order, less the decoder's lag.
        i = self.index_of.get(frame.dts) if frame.dts is not None else None
        if i is None:
            # Flushed out at the end: the next in output order, or a lone frame whose pts is its own.
            return self.pos + 1 if self.pos >= 0 else self.index_of.get(frame.pts)
        i -= self.info.dts_lag
        if self.pos >= 0 and i <= self.pos:  # two frames released by one packet share its dts
            return self.pos + 1
        return i if i >= 0 else None

    def _late_start_ok(self, frame: Any, i: int, index: int) -> bool:
        """Whether decoding that began at frame `i`, after the keyframe the seek aimed at, still
        reaches frame `index`. Only in AVI placed by output order, where seeks land on the chunk
        exactly: an open-GOP packed chunk holds a keyframe and the B-frame shown before it, which
        needs the GOP before and never comes out, so the keyframe itself is the first frame."""
        return self.info.by_output_order and frame.key_frame and i <= index

    def _keyframe_at_or_before(self, index: int) -> int:
        k = bisect.bisect_right(self.info.keyframes, index) - 1
        return self.info.keyframes[k] if k >= 0 else 0

    def _seek(self, key: int, index: int) -> None:
        """Seek so that decoding starts at keyframe `key` (or earlier) to reach frame `index`.

        Demuxers turn a pts into a keyframe differently: MP4 searches dts + a constant shift (the
        first frame's pts - dts), Matroska keyframe pts, MPEG-TS dts, roughly. Aiming at the
        wanted frame's own pts, but no earlier than the keyframe's dts + that shift, lands on its
        keyframe for the first two. (Aiming at the pts alone landed a GOP early in VFR MP4, where
        a keyframe's pts - dts can be less than the first frame's: right frames, but up to a GOP
        more decoding per seek, and nothing to notice it by.) Where it lands later, `_next` sees
        it and the cursor seeks to keyframes' dts from then on.
        """
        dts = self.key_dts.get(key, self.info.pts[key])
        target = dts if self.by_dts else max(self.info.pts[index], dts + self.dts_shift)
        try:
            self.container.seek(target, backward=True, stream=self.stream)  # also flushes the decoder
        except _av().FFmpegError as err:
            raise VlrtError(f"{self.info.path}: seeking to frame {key} failed ({ffmpeg_reason(err)})") from None
        self.stats.seeks += 1
        self.frames, self.pos, self.seek_floor = self._decode(), -1, key

    def _seek_earlier(self, index: int) -> None:
        """The last seek landed after its keyframe: seek by dts, then to earlier keyframes."""
        key = self.seek_floor
        if not self.by_dts:
            self.by_dts = True
        else:
            k = bisect.bisect_left(self.info.keyframes, key) - 1
            if k < 0:
                raise VlrtError(f"{self.info.path}: seeking cannot reach keyframe {key}")
            key = self.info.keyframes[k]
        self._seek(key, index)

    def get(self, index: int) -> Any:
        key = self._keyframe_at_or_before(index)
        if self.pos < key - 1:  # decoding on from pos costs more than starting at the keyframe
            self._seek(key, index)
        while (frame := self._next(index)) is None:
            self._seek_earlier(index)
        return frame

    def _next(self, index: int) -> Any:
        """Decode on to frame `index`; None when a seek overshot the keyframe it aimed at."""
        for frame in self.frames:
            self.stats.frames_decoded += 1
            i = self._place(frame)
            if i is None:
                continue
            if self.seek_floor is not None:
                if i > self.seek_floor and not self._late_start_ok(frame, i, index):
                    return None
                self.seek_floor = None
            self.pos = i
            if i == index:
                return frame
            if i > index:
                break
        else:
            if self.seek_floor is not None:  # nothing decoded after the seek: it overshot too
                return None
        why = self.trouble.last or "the decoder gave no frame for it"
        raise VlrtError(f"{self.info.path}: frame {index} of {self.info.num_frames} did not decode: {why}")


def check_indices(info: VideoInfo, indices: Sequence[int]) -> list[int]:
    """`indices` as ints, each checked to be a frame of `info`'s video (VlrtError naming the file)."""
    out = []
    for i in indices:
        try:
            i = operator.index(i)
        except TypeError:
            raise VlrtError(f"{info.path}: frame index {i!r} is not an integer") from None
        if not 0 <= i < info.num_frames:
            raise VlrtError(f"{info.path}: frame index {i} is outside 0..{info.num_frames - 1}")
        out.append(i)
    return out


class VideoReader:
    """One open video file that hands out decoded frames by index, exactly as `read_frames` does
    (it runs on this): the seam for other decoders. `hwaccel` (a PyAV `HWAccel`, e.g. CUDA) makes
    FFmpeg decode on that device; its frames are then the device's. Frames are `av.VideoFrame`s as
    decoded, NOT rotated (`rotate(array, info.rotation)`). Use it as a context manager.
    """

    def __init__(self, path: str | os.PathLike, info: VideoInfo | None = None, *, hwaccel: Any = None,
                 stats: DecodeStats | None = None) -> None:
        self.path = os.fspath(path)
        self.info = info if info is not None else probe(self.path)
        self.stats = stats if stats is not None else DecodeStats()
        _check_file(self.path)
        self._container = _open(self.path, hwaccel)
        self.stream = self._container.streams[self.info.stream_index]
        _limit_decoder(self.stream)
        self._read = False

    @property
    def codec_context(self) -> Any:
        """The stream's decoder (PyAV `CodecContext`): its format, and whether `hwaccel` took."""
        return self.stream.codec_context

    def frames(self, indices: Sequence[int]) -> Iterator[tuple[int, Any]]:
        """(index, av.VideoFrame) for each distinct index, in increasing order. Once per reader:
        the decoder is left wherever the last frame was."""
        wanted = sorted(set(check_indices(self.info, indices)))
        if self._read:
            raise VlrtError(f"{self.path}: a VideoReader hands out frames once; open another")
        self._read = True
        if not wanted:
            return
        cursor = _Cursor(self._container, self.stream, self.info, wanted, self.stats)
        for i in wanted:
            yield i, cursor.get(i)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iter_frames(path: str, indices: Sequence[int], info: VideoInfo | None,
                 stats: DecodeStats | None) -> Iterator[tuple[int, Any]]:
    """(index, av.VideoFrame) for each distinct requested index, in increasing index order."""
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    wanted = check_indices(info, indices)
    if not wanted:
        return
    with VideoReader(path, info, stats=stats) as reader:
        yield from reader.frames(wanted)


def rotate(array: np.ndarray, rotation: int) -> np.ndarray:
    """Turn an (H, W, ...) frame clockwise by `rotation` degrees (a VideoInfo's), contiguous."""
    if rotation % 360 == 0:
        return array
    return np.ascontiguousarray(np.rot90(array, k=-(rotation // 90)))


def read_frames(path: str | os.PathLike, indices: Sequence[int], *, info: VideoInfo | None = None,
                format: PixelFormat = "rgb24", stats: DecodeStats | None = None) -> list[np.ndarray]:
    """The frames at `indices` (presentation order; any order, repeats allowed) as (H, W, 3) uint8
    arrays, upright as players show them, exactly as a sequential decode gives them.

    Pass the `probe` result as `info` to skip probing again; `stats` counts the decoding done.
    """
    if format not in ("rgb24", "bgr24"):
        raise VlrtError(f"format must be 'rgb24' or 'bgr24', got {format!r}")
    path, indices = os.fspath(path), list(indices)
    info = info if info is not None else probe(path)
    arrays = {i: rotate(f.to_ndarray(format=format), info.rotation)  # (H, W, 3)
              for i, f in _iter_frames(path, indices, info, stats)}
    out, seen = [], set()
    for i in indices:
        i = int(i)
        out.append(arrays[i] if i not in seen else arrays[i].copy())
        seen.add(i)
    return out


def read_frames_av(path: str | os.PathLike, indices: Sequence[int], *, info: VideoInfo | None = None,
                   stats: DecodeStats | None = None) -> list[Any]:
    """Like `read_frames`, but the decoded `av.VideoFrame`s, NOT rotated: convert them yourself
    (e.g. `frame.reformat(width=w, height=h, format="rgb24", interpolation="BICUBIC")`, letting
    FFmpeg scale during colour conversion), then `rotate(array, info.rotation)`. At 90/270 the
    stored frame is info.height wide and info.width high: scale to the turned size, then turn.
    """
    path, indices = os.fspath(path), list(indices)
    info = info if info is not None else probe(path)
    frames = dict(_iter_frames(path, indices, info, stats))
    return [frames[int(i)] for i in indices]


def frame_indices_at(info: VideoInfo, times: Sequence[float]) -> list[int]:
    """The index of the frame a player shows at each time: the last frame whose pts <= t.

    Times are seconds since the first frame (its pts, `info.start_time`, is time 0), as players
    count them, so a file that starts late needs no offset; add `start_time` to get stream time.
    Any t in [0, info.duration] is valid, the last frame staying on screen to the end. Negative,
    NaN or later times raise VlrtError: a time outside the video is a caller's bug that clamping
    would hide. From the real pts, so VFR files map exactly; a stream without timestamps has
    nominal ones (index / fps).
    """
    try:
        t = np.asarray(times, dtype=np.float64)  # (N,)
    except (TypeError, ValueError):
        raise VlrtError(f"{info.path}: times must be numbers of seconds, got {times!r:.80}") from None
    if t.ndim != 1:
        raise VlrtError(f"{info.path}: times must be a sequence of seconds, got {times!r:.80}")
    outside = np.flatnonzero(~((t >= 0) & (t <= info.duration + TIME_TOLERANCE_S)))  # NaN too
    if outside.size:
        k = outside[0]
        raise VlrtError(f"{info.path}: time {float(t[k])} s (times[{k}]) is outside the video, "
                        f"0..{info.duration:.9g} s from its first frame")
    shown = np.asarray(info.timestamps) - info.start_time  # (num_frames,) from 0, increasing
    return [int(i) for i in shown_at(shown, t)]


def read_frames_at(path: str | os.PathLike, times: Sequence[float], *, info: VideoInfo | None = None,
                   format: PixelFormat = "rgb24", stats: DecodeStats | None = None) -> list[np.ndarray]:
    """The frames a player shows at `times` (seconds since the first frame; see
    `frame_indices_at`), read exactly as `read_frames` reads them: same options, same arrays.
    """
    path = os.fspath(path)
    info = info if info is not None else probe(path)
    return read_frames(path, frame_indices_at(info, times), info=info, format=format, stats=stats)
