"""Exact frame access: every read equals the same frame of a plain sequential PyAV decode.

Test videos come from tests/video_assets.py (PyAV's own encoders); each frame draws its index,
so a frame that is wrong, shifted or turned is caught by content as well as by pixels.
"""
from fractions import Fraction

import av
import numpy as np
import pytest
from bad_corpus import cost_in_child, write_png_bomb, write_y4m
from video_assets import (
    frame_index,
    frame_pixels,
    marker_corner,
    write_audio_only,
    write_image,
    write_not_coded_frame_avi,
    write_packed_avi,
    write_two_video_streams,
    write_video,
)

from vlrt.errors import VlrtError
from vlrt.runtime.video import (
    MAX_PIXELS,
    MAX_SIDE,
    DecodeStats,
    VideoReader,
    frame_indices_at,
    probe,
    read_frames,
    read_frames_at,
    read_frames_av,
)

CODECS = [  # (codec, suffix)
    ("libx264", ".mp4"), ("libx265", ".mp4"), ("libvpx-vp9", ".webm"), ("mpeg4", ".avi"),
    ("mpeg4", ".mp4"), ("libx264", ".ts"), ("libx264", ".mkv"),
    ("libx265", ".ts"), ("libx265", ".mkv"),  # open GOP (CRA + RASL frames) under dts/pts seeking
]
SCATTERED = [0, 5, 17, 23, 40, 47]
SHUFFLED = [47, 3, 3, 40, 0, 17, 47, 12, 11]
SEEKING = [40, 5, 5, 47, 17, 0, 30, 23, 13, 12]  # keyframes 12 and 36 must be sought, once each


def sequential(path) -> list[np.ndarray]:
    """The reference: decode every frame in order, no seeking (upright: rotation applied)."""
    with av.open(str(path)) as c:
        return [np.rot90(f.to_ndarray(format="rgb24"), k=(f.rotation or 0) // 90)
                for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    out = {}
    for codec, suffix in CODECS:
        path = root / f"{codec}{suffix}"
        write_video(path, codec=codec)
        out[codec, suffix] = path
    return out


@pytest.mark.parametrize("codec,suffix", CODECS)
def test_scattered_reads_equal_a_sequential_decode(videos, codec, suffix):
    path = videos[codec, suffix]
    ref = sequential(path)
    assert [frame_index(f) for f in ref] == list(range(48))  # the reference itself is right
    info = probe(path)
    assert info.num_frames == 48 and (info.width, info.height, info.rotation) == (160, 96, 0)
    assert {0, 12, 24, 36} <= set(info.keyframes)
    assert not info.by_output_order  # the container's pts are presentation times: frames go by pts
    for indices in (SCATTERED, SHUFFLED):
        frames = read_frames(path, indices, info=info)
        assert len(frames) == len(indices)
        for i, f in zip(indices, frames):
            assert f.dtype == np.uint8 and f.shape == (96, 160, 3)
            np.testing.assert_array_equal(f, ref[i], err_msg=f"{path.name} frame {i}")


@pytest.mark.parametrize("codec,suffix", CODECS)
def test_every_frame_alone(videos, codec, suffix):
    """Each frame read on its own (a fresh seek every time) and all frames backwards."""
    path = videos[codec, suffix]
    ref, info = sequential(path), probe(path)
    for i in range(48):
        np.testing.assert_array_equal(read_frames(path, [i], info=info)[0], ref[i],
                                      err_msg=f"{path.name} frame {i}")
    backwards = list(range(47, -1, -1))
    assert [frame_index(f) for f in read_frames(path, backwards, info=info)] == backwards


def test_repeated_indices_are_separate_arrays(videos):
    a, b = read_frames(videos["libx264", ".mp4"], [3, 3])
    np.testing.assert_array_equal(a, b)
    a[:] = 0
    assert b.any()


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".ts"])
def test_probe_counts_frames_the_container_does_not(videos, suffix):
    path = next(p for (_, s), p in videos.items() if s == suffix)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # the container does not say
    info = probe(path)
    assert info.num_frames == len(info.timestamps) == 48
    assert info.fps == 24.0 and info.duration == pytest.approx(2.0, abs=1e-3)


def test_sparse_reads_seek_and_near_reads_decode_on(videos):
    path = videos["libx264", ".mp4"]
    info = probe(path)
    far = DecodeStats()
    read_frames(path, [0, 47], info=info, stats=far)
    # Frame 0, then a seek to keyframe 36 and 12 frames on (+ B-frame reordering).
    assert far.seeks == 1 and far.frames_decoded <= 16
    near = DecodeStats()
    read_frames(path, [11, 0, 13], info=info, stats=near)  # 13 is 2 past 11: no seek to 12
    assert near.seeks == 0 and near.frames_decoded <= 16
    every = DecodeStats()
    read_frames(path, range(48), info=info, stats=every)
    assert every.seeks == 0 and every.frames_decoded == 48


def test_ts_seeks_land_on_the_keyframe(videos):
    """MPEG-TS seeks by dts, roughly: a seek that overshoots is seen and redone earlier."""
    path = videos["libx264", ".ts"]
    stats = DecodeStats()
    frames = read_frames(path, [0, 47, 30], stats=stats)
    assert [frame_index(f) for f in frames] == [0, 47, 30]
    assert stats.frames_decoded < 48


def test_vfr_timestamps_are_the_written_pts(tmp_path):
    path = tmp_path / "vfr.mp4"
    pts = write_video(path, vfr=True)
    info = probe(path)
    assert len(set(np.diff(pts))) > 1  # really variable
    assert info.timestamps == pytest.approx([float(p * Fraction(1, 48)) for p in pts], abs=1e-9)
    picks = [46, 2, 31, 7]
    assert [frame_index(f) for f in read_frames(path, picks, info=info)] == picks


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_late_start(tmp_path, suffix):
    path = tmp_path / f"late{suffix}"
    write_video(path, start_pts=30)
    info = probe(path)
    assert info.start_time == pytest.approx(30 / 24, abs=1e-3)
    assert info.duration == pytest.approx(2.0, abs=1e-3) and info.num_frames == 48
    assert [frame_index(f) for f in read_frames(path, [0, 47], info=info)] == [0, 47]


def _assert_read_at(path, info, times, expected):
    assert frame_indices_at(info, times) == expected
    frames = read_frames_at(path, times, info=info)
    assert [frame_index(f) for f in frames] == expected
    for i, a, b in zip(expected, frames, read_frames(path, expected, info=info)):
        np.testing.assert_array_equal(a, b, err_msg=f"{path.name} frame {i}")


def test_times_on_a_vfr_file_pick_the_frame_on_screen(tmp_path):
    path = tmp_path / "vfr.mp4"
    write_video(path, vfr=True)  # frames at 0, 1, 4, 6, 7, 8, 10, ... 78 / 48 s (exact in MP4)
    info = probe(path)
    t = [0.0, 1 / 48, 3 / 48, 4 / 48 - 1e-6, 4 / 48, 10 / 48, 11.5 / 48, 78 / 48, info.duration]
    _assert_read_at(path, info, t, [0, 1, 1, 1, 2, 6, 7, 47, 47])
    shown = [ts - info.start_time for ts in info.timestamps]
    assert frame_indices_at(info, shown) == list(range(48))
    assert frame_indices_at(info, np.diff(shown) / 2 + shown[:-1]) == list(range(47))
    for bad in (-1e-6, float("nan"), info.duration + 1e-6, float("inf")):
        with pytest.raises(VlrtError, match=r"vfr\.mp4: time .* is outside the video"):
            frame_indices_at(info, [0.5, bad])
    for bad in (["1s"], 0.5, [[0.5]]):
        with pytest.raises(VlrtError, match="times must be"):
            read_frames_at(path, bad, info=info)
    assert read_frames_at(path, [], info=info) == []


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_times_count_from_the_first_frame_of_a_late_file(tmp_path, suffix):
    path = tmp_path / f"late{suffix}"
    write_video(path, start_pts=30)  # MKV rounds pts to ms
    info = probe(path)
    assert info.start_time == pytest.approx(1.25, abs=1e-3)
    # 0.5 s is half a second into the video (frame 12), not a time before the stream starts.
    t = [0.5, 0.0, 0.5 - 1e-6, 30.5 / 24, info.duration, info.timestamps[47] - info.start_time, 0.5]
    _assert_read_at(path, info, t, [12, 0, 11, 30, 47, 47, 12])
    assert [frame_index(f) for f in read_frames_at(path, [1.0])] == [24]  # probes itself


@pytest.mark.parametrize("rotation,suffix", [(90, ".mp4"), (180, ".mp4"), (270, ".mp4"), (90, ".mkv")])
def test_rotated_frames_come_out_upright(tmp_path, rotation, suffix):
    path = tmp_path / f"rot{rotation}{suffix}"
    write_video(path, rotation=rotation, frames=24)
    with av.open(str(path)) as c:  # stored turned: the marker is not top-left before rotating
        raw = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert marker_corner(raw) != "tl"
    assert raw.shape[:2] == ((160, 96) if rotation % 180 else (96, 160))
    info = probe(path)
    assert (info.rotation, info.width, info.height) == (rotation, 160, 96)
    frames = read_frames(path, [0, 13, 23], info=info)
    assert all(f.shape == (96, 160, 3) and f.flags.c_contiguous for f in frames)
    assert [marker_corner(f) for f in frames] == ["tl"] * 3
    assert [frame_index(f) for f in frames] == [0, 13, 23]


VFR, LATE = {"vfr": True}, {"start_pts": 30}
SEEK_CASES = [  # (codec, suffix, write_video options): what the unrotated CFR matrix misses
    ("libx264", ".mp4", {"rotation": 90}), ("libx264", ".mp4", {"rotation": 180}),
    ("libx264", ".mp4", {"rotation": 270}), ("libx264", ".mkv", {"rotation": 90}),
    ("libx265", ".mp4", {"rotation": 270}), ("libvpx-vp9", ".webm", {"rotation": 90}),
    ("mpeg4", ".mp4", {"rotation": 180}),
    ("libx264", ".mp4", VFR), ("libx264", ".mkv", VFR), ("libx265", ".mp4", VFR),
    ("libvpx-vp9", ".webm", VFR), ("mpeg4", ".mp4", VFR),
    ("libx264", ".mp4", LATE), ("libx264", ".mkv", LATE), ("libx264", ".ts", LATE),
    ("libx265", ".mkv", LATE), ("libvpx-vp9", ".webm", LATE), ("mpeg4", ".avi", LATE),
    ("libx264", ".mp4", {"rotation": 90, "vfr": True, "start_pts": 7}),
]


@pytest.mark.parametrize("codec,suffix,options", SEEK_CASES, ids=lambda v: str(v).replace(" ", ""))
def test_seeking_on_rotated_vfr_and_late_files_equals_a_sequential_decode(tmp_path, codec, suffix,
                                                                          options):
    path = tmp_path / f"{codec}{suffix}"
    write_video(path, codec=codec, **options)
    ref = sequential(path)
    assert [frame_index(f) for f in ref] == list(range(48))  # the reference is complete and upright
    assert {marker_corner(f) for f in ref} == {"tl"}
    info = probe(path)
    assert info.rotation == options.get("rotation", 0) and info.keyframes[:4] == (0, 12, 24, 36)
    stats = DecodeStats()
    for i, f in zip(SEEKING, read_frames(path, SEEKING, info=info, stats=stats)):
        np.testing.assert_array_equal(f, ref[i], err_msg=f"{path.name} frame {i}")
    # 0..5, 12..30, 36..47 plus reordering: a seek that lands a GOP early decodes 12 more.
    assert stats.seeks >= 2 and stats.frames_decoded <= 40, stats


def test_vfr_mp4_seeks_land_on_the_keyframe(tmp_path):
    """MP4 seeks by dts + the first frame's pts - dts; this file's later keyframes have a smaller
    pts - dts, so aiming at their own pts landed on the keyframe before (13 frames decoded)."""
    path = tmp_path / "vfr.mp4"
    write_video(path, vfr=True)
    info = probe(path)
    delays = [info.pts[k] - d for k, d in zip(info.keyframes, info.keyframe_dts)]  # pts - dts
    assert min(delays[1:]) < delays[0]
    for k in info.keyframes[1:]:
        stats = DecodeStats()
        assert [frame_index(f) for f in read_frames(path, [k], info=info, stats=stats)] == [k]
        assert (stats.seeks, stats.frames_decoded) == (1, 1), k


def test_jpeg_exif_orientation_is_applied(tmp_path):
    from PIL import Image

    path = tmp_path / "exif6.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    Image.fromarray(np.ascontiguousarray(np.rot90(frame_pixels(9, 160, 96)))).save(path, exif=exif)
    info = probe(path)
    assert (info.rotation, info.width, info.height, info.num_frames) == (90, 160, 96, 1)
    (f,) = read_frames(path, [0], info=info)
    assert marker_corner(f) == "tl" and frame_index(f) == 9


def test_two_video_streams_pick_ffmpegs_best(tmp_path):
    path = tmp_path / "two.mkv"
    write_two_video_streams(path)
    info = probe(path)
    assert (info.stream_index, info.width, info.height, info.num_frames) == (1, 160, 96, 24)
    assert [frame_index(f) for f in read_frames(path, [20, 1], info=info)] == [20, 1]


def test_stream_without_timestamps_is_counted_and_read_in_order(tmp_path):
    path = tmp_path / "raw.h264"
    write_video(path)
    with av.open(str(path)) as c:
        assert next(c.demux(video=0)).pts is None
    info = probe(path)
    assert info.num_frames == 48 and info.keyframes == (0,)
    picks = [47, 0, 20, 21]
    assert [frame_index(f) for f in read_frames(path, picks, info=info)] == picks


def test_one_frame_video_and_images(tmp_path):
    one = tmp_path / "one.mp4"
    write_video(one, frames=1)
    info = probe(one)
    assert info.num_frames == 1 and info.keyframes == (0,)
    assert [frame_index(f) for f in read_frames(one, [0, 0], info=info)] == [0, 0]
    png = tmp_path / "still.png"
    pixels = write_image(png, index=7)
    info = probe(png)
    assert (info.num_frames, info.width, info.height, info.codec) == (1, 160, 96, "png")
    np.testing.assert_array_equal(read_frames(png, [0])[0], pixels)  # PNG is lossless
    jpg = tmp_path / "still.jpg"
    write_image(jpg, index=7)
    assert frame_index(read_frames(jpg, [0])[0]) == 7


def test_truncated_stream_decodes_what_is_there(videos, tmp_path):
    full = videos["libx264", ".mkv"]
    ref = dict(zip(probe(full).pts, sequential(full)))  # by pts: a cut can drop B-frames mid-way
    cut = tmp_path / "cut.mkv"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    info = probe(cut)
    assert 10 < info.num_frames < 48
    picks = [info.num_frames - 1, 0, 7]
    for i, f in zip(picks, read_frames(cut, picks, info=info)):
        np.testing.assert_array_equal(f, ref[info.pts[i]])


def _bad_inputs(root, videos):
    cases = {"missing.mp4": None, "empty.mp4": b""}
    cases["random.mp4"] = np.random.default_rng(0).bytes(4096)
    data = videos["libx264", ".mp4"].read_bytes()
    cases["cut.mp4"] = data[: len(data) // 2]  # the index (moov) is at the end: nothing to read
    cases["wide.y4m"] = b"YUV4MPEG2 W20000 H16 F24:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(100)
    cases["zero.y4m"] = b"YUV4MPEG2 W0 H16 F24:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(100)
    cases["short.y4m"] = b"YUV4MPEG2 W16 H16 F24:1 Ip A1:1 C420jpeg\nFRAME\n" + bytes(10)
    for name, content in cases.items():
        if content is not None:
            (root / name).write_bytes(content)
    write_audio_only(root / "audio.m4a")
    return [*cases, "audio.m4a"]


def test_bad_inputs_raise_vlrt_errors_naming_the_file(videos, tmp_path):
    unreadable = ("cannot open as a video or image: FFmpeg found none it can read in it "
                  "(invalid data found when processing input)")
    reasons = {"missing.mp4": "no such file", "empty.mp4": "empty", "wide.y4m": "20000x16",
               "short.y4m": "no frame", "audio.m4a": "no video stream", "random.mp4": unreadable,
               "cut.mp4": unreadable}
    for name in _bad_inputs(tmp_path, videos):
        with pytest.raises(VlrtError) as e:
            read_frames(tmp_path / name, [0])
        message = str(e.value)
        assert message.startswith(f"{tmp_path / name}: ") and reasons.get(name, "") in message, message
        assert "Errno" not in message and "corrupt" not in message, message  # no decode reported damage


def test_a_frame_ffmpeg_finds_damaged_is_called_corrupt(tmp_path):
    """Only a decode error FFmpeg reports as invalid data says "corrupt"; a frame that is merely
    missing does not (test_a_frame_that_decodes_to_nothing_is_not_called_corrupt)."""
    small = write_png_bomb(tmp_path / "small.png", 16, 16).read_bytes()
    _write_png_mov(tmp_path / "damaged.mov", [small, b"\x89PNG\r\n\x1a\n" + bytes(200), small])
    info = probe(tmp_path / "damaged.mov")
    assert info.num_frames == 3
    assert len(read_frames(tmp_path / "damaged.mov", [0, 2], info=info)) == 2  # the others decode
    with pytest.raises(VlrtError) as e:
        read_frames(tmp_path / "damaged.mov", [1], info=info)
    assert str(e.value) == (f"{tmp_path / 'damaged.mov'}: frame 1 of 3 did not decode: FFmpeg reports "
                            "corrupt data (invalid data found when processing input)")


def _write_png_mov(path, frames: list[bytes]) -> None:
    """A MOV of PNG frames muxed as they are: the container says 16x16, whatever they hold."""
    with av.open(str(path), "w", format="mov") as out:
        stream = out.add_stream("png", rate=24)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "gray"
        for i, data in enumerate(frames):
            packet = av.Packet(data)
            packet.stream, packet.pts, packet.dts = stream, i, i
            packet.time_base, packet.is_keyframe = Fraction(1, 24), True
            out.mux(packet)


def test_oversized_frames_cost_nothing_to_refuse(tmp_path):
    """A 250 KB PNG of 16000x16000 zeros, a real (sparse) 16000x16000 raw frame, and the PNG as the
    second frame of a video whose first frame and container say 16x16: refused by their sizes, at
    a few MB and ms (unlimited, reading each cost about 1 GB and 2 to 6 s)."""
    bomb = write_png_bomb(tmp_path / "bomb.png", 16000, 16000)
    raw = write_y4m(tmp_path / "raw.y4m", 16000, 16000)
    small = write_png_bomb(tmp_path / "small.png", 16, 16)
    _write_png_mov(tmp_path / "mixed.mov", [small.read_bytes(), bomb.read_bytes()])
    assert probe(tmp_path / "mixed.mov").num_frames == 2  # frame 1 is only found out by decoding it
    setup = ("from vlrt.runtime.video import probe, read_frames\n"
             "def call(path):\n"
             "    read_frames(path, [probe(path).num_frames - 1])")
    seconds, mb, errors = cost_in_child(setup, [str(bomb), str(raw), str(tmp_path / "mixed.mov")])
    assert errors == [
        f"{bomb}: frame size unknown or over {MAX_PIXELS} pixels (FFmpeg read none from the png stream)",
        (f"{raw}: claimed frame size 16000x16000 is outside the limits: 1..{MAX_SIDE} px a side, "
         f"{MAX_PIXELS} px in all"),
        (f"{tmp_path / 'mixed.mov'}: frame 1 of 2 did not decode: the png decoder refused it "
         f"(invalid argument; it refuses frames over {MAX_PIXELS} pixels so)")]
    assert mb < 100 and seconds < 3, (mb, seconds)


def test_8k_uhd_decodes(tmp_path):
    path = write_y4m(tmp_path / "8k.y4m", 7680, 4320)
    info = probe(path)
    assert (info.width, info.height, info.num_frames) == (7680, 4320, 1)
    (frame,) = read_frames(path, [0], info=info)
    assert frame.shape == (4320, 7680, 3) and (frame == frame[0, 0]).all()  # one solid colour


def test_the_pixel_limit_is_exact(tmp_path):
    """FFmpeg checks a frame padded to an aligned width: a frame within MAX_PIXELS whose padded
    size is over it still decodes, and one row more is refused by vlrt, naming its size."""
    width = 7681
    height = MAX_PIXELS // width  # 7681x8736: width * height <= MAX_PIXELS < 7744 * height
    assert (width + 63) // 64 * 64 * height > MAX_PIXELS
    info = probe(write_png_bomb(tmp_path / "limit.png", width, height))
    assert (info.width, info.height, info.num_frames) == (width, height, 1)
    with pytest.raises(VlrtError, match=f"claimed frame size {width}x{height + 1} is outside the limits"):
        probe(write_png_bomb(tmp_path / "over.png", width, height + 1))


def test_bad_requests(videos):
    path = videos["libx264", ".mp4"]
    for indices in ([48], [-1], [1.5]):
        with pytest.raises(VlrtError, match="libx264.mp4"):
            read_frames(path, indices)
    with pytest.raises(VlrtError, match="'yuv'"):
        read_frames(path, [0], format="yuv")
    assert read_frames(path, []) == []


def test_bgr_and_av_frames(videos):
    path = videos["libvpx-vp9", ".webm"]
    info = probe(path)
    rgb = read_frames(path, [30, 2], info=info)
    bgr = read_frames(path, [30, 2], info=info, format="bgr24")
    for a, b in zip(rgb, bgr):
        np.testing.assert_array_equal(a, b[..., ::-1])
    frames = read_frames_av(path, [30, 2], info=info)
    assert [f.pts for f in frames] == [info.pts[30], info.pts[2]]
    np.testing.assert_array_equal(frames[0].to_ndarray(format="rgb24"), rgb[0])


SHUFFLED_PTS = ["packed-closed-gop", "packed-open-gop", "h264-avi"]


@pytest.fixture(scope="module")
def shuffled(tmp_path_factory):
    """AVIs whose decoded frames carry their pts out of order (DivX/Xvid packed B-frames, in
    closed and open GOPs; H.264 with B-frames), with a check that they really do."""
    root = tmp_path_factory.mktemp("shuffled")
    out = {name: root / f"{name}.avi" for name in SHUFFLED_PTS}
    write_packed_avi(out["packed-closed-gop"], closed_gop=True)
    write_packed_avi(out["packed-open-gop"], closed_gop=False)
    write_video(out["h264-avi"], codec="libx264")
    for path in out.values():
        with av.open(str(path)) as c:
            pts = [f.pts for f in c.decode(video=0)]
        assert pts[:5] == [1, 3, 2, 5, 4], pts  # matching frames by pts would lose frame 1
    return out


@pytest.mark.parametrize("name", SHUFFLED_PTS)
def test_frames_with_shuffled_pts_are_placed_by_output_order(shuffled, name):
    """Sequential reads and seeks give the frames of a sequential decode at the same presentation
    positions, pixel for pixel, though the decoded frames' pts arrive 1, 3, 2, 5, 4, ..."""
    path = shuffled[name]
    ref = sequential(path)
    assert [frame_index(f) for f in ref] == list(range(48))
    info = probe(path)
    assert info.by_output_order and info.num_frames == 48
    assert info.dts_lag == (1 if name == "h264-avi" else 0)  # frames a decoded dts runs ahead
    everything = DecodeStats()
    for i, f in enumerate(read_frames(path, range(48), info=info, stats=everything)):
        np.testing.assert_array_equal(f, ref[i], err_msg=f"{path.name} frame {i} (sequential)")
    assert (everything.seeks, everything.frames_decoded) == (0, 48)
    sought = DecodeStats()
    for i, f in zip(SEEKING, read_frames(path, SEEKING, info=info, stats=sought)):
        np.testing.assert_array_equal(f, ref[i], err_msg=f"{path.name} frame {i} (seeking)")
    assert sought.seeks >= 2
    for i in range(48):
        np.testing.assert_array_equal(read_frames(path, [i], info=info)[0], ref[i], err_msg=f"{path.name} frame {i}")


def test_packed_closed_gop_seeks_land_on_the_keyframe(shuffled):
    """Keyframes 0, 11, 22, 33, 44: a frame after one is reached by one seek and decoding on."""
    path = shuffled["packed-closed-gop"]
    info = probe(path)
    assert info.keyframes == (0, 11, 22, 33, 44)
    for index, decoded in ((11, 1), (13, 3), (24, 3), (47, 4)):
        stats = DecodeStats()
        assert [frame_index(f) for f in read_frames(path, [index], info=info, stats=stats)] == [index]
        assert (stats.seeks, stats.frames_decoded) == (1, decoded), index


def test_packed_open_gop_seeks_start_at_the_keyframe_after_its_chunk(shuffled):
    """Open GOP: chunk 11 holds keyframe 12 and B-frame 11, which needs the GOP before. A seek
    there starts at frame 12 (one frame decoded); frame 11 itself comes from keyframe 0."""
    path = shuffled["packed-open-gop"]
    info = probe(path)
    assert info.keyframes == (0, 11, 23, 35, 47)  # the chunks flagged as keyframes
    for index, cost in ((12, (1, 1)), (13, (1, 2)), (11, (2, 13)), (24, (1, 1))):
        stats = DecodeStats()
        assert [frame_index(f) for f in read_frames(path, [index], info=info, stats=stats)] == [index]
        assert (stats.seeks, stats.frames_decoded) == cost, index


def test_a_frame_that_decodes_to_nothing_is_not_called_corrupt(tmp_path):
    path = tmp_path / "nvop.avi"
    write_not_coded_frame_avi(path, at=6)
    info = probe(path)
    assert (info.num_frames, info.by_output_order) == (25, False)
    assert [frame_index(f) for f in read_frames(path, [5, 7, 24], info=info)] == [5, 6, 23]
    with pytest.raises(VlrtError) as e:
        read_frames(path, [6], info=info)
    assert str(e.value) == f"{path}: frame 6 of 25 did not decode: the decoder gave no frame for it"


def test_video_reader_is_the_seam_under_read_frames(videos):
    path = videos["libx264", ".mp4"]
    info = probe(path)
    stats = DecodeStats()
    with VideoReader(path, info, stats=stats) as reader:
        assert reader.codec_context.name == "h264" and not reader.codec_context.is_hwaccel
        got = list(reader.frames([30, 2, 2]))
        with pytest.raises(VlrtError, match="libx264.mp4: a VideoReader hands out frames once"):
            list(reader.frames([1]))
    assert [i for i, _ in got] == [2, 30] and stats.seeks == 1
    for (_, frame), want in zip(got, read_frames(path, [2, 30], info=info)):
        np.testing.assert_array_equal(frame.to_ndarray(format="rgb24"), want)
    with pytest.raises(VlrtError, match="outside 0..47"):
        list(VideoReader(path, info).frames([48]))
