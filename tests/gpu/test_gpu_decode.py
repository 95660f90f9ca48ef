"""GpuDecoder keeps read_frames' contract (exact frames by index, any order, repeats, rotation) and
reports every file the CPU decoded instead of NVDEC, with the reason.

On the CPU (device="cpu") the decoder falls back, reports why, and must hand out exactly the
CPU path's pixels; with stand-ins for the driver and torch.cuda (tests/gpu/cuda_standins.py), the
primary context's flags are set before CUDA is touched and an NVDEC surface is converted between
the right stream waits. On a GPU (`cuda` tests): NVDEC is used even after torch has touched the GPU
first; NVDEC's YUV planes equal the software decoder's bit for bit, and the RGB frames are within
the YUV -> RGB tolerance of tests/gpu/test_gpu_colour.py (mean <= 1.5 levels, max <= 3), odd sizes
included, and show the frame index drawn into them.
"""
import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from cuda_standins import BLOCKING_SYNC, FakeStream, install
from video_assets import frame_index, frame_pixels, marker_corner, write_packed_avi, write_video

from vlrt.errors import VlrtError
from vlrt.gpu import decode as gpu_decode
from vlrt.gpu import device as gpu_device
from vlrt.gpu.decode import GpuDecoder, GpuDecodeStats, rotate_chw, surface_to_rgb
from vlrt.runtime.video import probe, read_frames, rotate

INDICES = [47, 3, 20, 3, 0, 31, 12]  # out of order, a repeat, first and last


def as_hwc(frames):
    return [f.permute(1, 2, 0).cpu().numpy() for f in frames]  # (H, W, 3) uint8


@pytest.mark.parametrize("name", ["h264", "hevc", "h264_rot90", "av1"])
def test_cpu_device_falls_back_and_equals_the_cpu_path(videos, name):
    stats = GpuDecodeStats()
    frames = GpuDecoder(device="cpu").read_frames(videos[name], INDICES, stats=stats)
    assert stats.decoder == "cpu" and stats.fallback == "device is cpu: NVDEC needs a CUDA device"
    assert stats.frames_decoded >= len(set(INDICES))
    expected = read_frames(videos[name], INDICES)
    assert len(frames) == len(INDICES)
    for got, want, i in zip(as_hwc(frames), expected, INDICES):
        assert np.array_equal(got, want) and frame_index(got) == i


def test_repeats_are_copies_and_batches_stack(videos):
    dec = GpuDecoder(device="cpu")
    frames = dec.read_frames(videos["h264"], [5, 5])
    assert torch.equal(frames[0], frames[1]) and frames[0].data_ptr() != frames[1].data_ptr()
    batch = dec.read_batch(videos["h264_rot90"], [1, 2])
    assert batch.shape == (2, 3, 180, 320) and batch.dtype == torch.uint8  # upright; stored 180x320
    assert marker_corner(batch[0].permute(1, 2, 0).numpy()) == "tl"


def test_fallback_error_raises_with_the_reason(videos):
    with pytest.raises(VlrtError, match=r"h264\.mp4: not decoded on the GPU: device is cpu"):
        GpuDecoder(device="cpu", fallback="error").read_frames(videos["h264"], [0])


def test_bad_indices_are_refused_like_the_cpu_path(videos):
    with pytest.raises(VlrtError, match="outside 0..47"):
        GpuDecoder(device="cpu").read_frames(videos["h264"], [48])


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_rotate_chw_turns_like_the_cpu_rotate(rotation):
    hwc = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    got = rotate_chw(torch.from_numpy(hwc).permute(2, 0, 1), rotation).permute(1, 2, 0).numpy()
    assert np.array_equal(got, rotate(hwc, rotation))


def test_gpu_modules_use_only_public_runtime_names():
    """vlrt.gpu reaches the CPU decoder through its public seam (VideoReader, check_indices ...),
    never through underscore names that may change under it."""
    imported = {}
    for module in sorted((Path(__file__).parents[2] / "vlrt" / "gpu").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("vlrt.runtime"):
                imported.setdefault(module.name, []).extend(alias.name for alias in node.names)
    assert "VideoReader" in imported["decode.py"] and "encode_stream" in imported["pipeline.py"]
    private = {m: [n for n in names if n.startswith("_")] for m, names in imported.items()}
    assert not any(private.values()), private


@pytest.fixture(scope="module")
def packed_avi(tmp_path_factory):
    path = tmp_path_factory.mktemp("packed") / "packed.avi"
    write_packed_avi(path, width=320, height=180)  # MPEG-4 Part 2, packed B-frames: pts 1, 3, 2, ...
    return str(path)


def test_cpu_device_reads_packed_b_frames_like_the_cpu_path(packed_avi):
    stats = GpuDecodeStats()
    frames = GpuDecoder(device="cpu").read_frames(packed_avi, INDICES, stats=stats)
    assert stats.decoder == "cpu"
    for got, want, i in zip(as_hwc(frames), read_frames(packed_avi, INDICES), INDICES):
        assert np.array_equal(got, want) and frame_index(got) == i


def test_the_decoder_sets_the_context_flags_before_cuda_is_touched(monkeypatch):
    log = []
    install(monkeypatch, log, flags=0)
    dec = GpuDecoder()  # None -> the current device, which initialises CUDA
    assert dec.device == torch.device("cuda", 0)
    assert log.index(f"set flags {BLOCKING_SYNC:#x}") < log.index("cuda init"), log


def test_a_context_ffmpeg_cannot_share_is_the_files_fallback_reason(monkeypatch, videos):
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        pytest.skip("this PyAV's FFmpeg has no CUDA hwaccel")
    install(monkeypatch, [], flags=0, active=True, set_rc=708)
    reason = GpuDecoder(device="cuda:0")._refusal_before_decoding(videos["h264"], probe(videos["h264"]))
    assert reason.startswith("FFmpeg cannot decode into torch's CUDA context: the CUDA primary context of "
                             "device 0 is active with flags 0x0"), reason


def test_the_context_is_checked_once_per_decoder_not_per_file(monkeypatch, videos):
    if "cuda" not in av.codec.hwaccel.hwdevices_available():
        pytest.skip("this PyAV's FFmpeg has no CUDA hwaccel")
    install(monkeypatch, [], flags=0, active=True, set_rc=708)
    dec = GpuDecoder(device="cuda:0")
    monkeypatch.setattr(gpu_device, "_driver", lambda: pytest.fail("the driver was called for a file"))
    info = probe(videos["h264"])
    reasons = [dec._refusal_before_decoding(videos["h264"], info) for _ in range(2)]
    assert reasons[0] == reasons[1] and "active with flags 0x0" in reasons[0], reasons


def nv12_frame(width, height):
    """(an NV12 PyAV frame, the CPU path's RGB of the same samples): what NVDEC hands out, on the CPU."""
    yuv = av.VideoFrame.from_ndarray(frame_pixels(9, width, height), format="rgb24").reformat(format="yuv420p")
    return yuv.reformat(format="nv12"), yuv.to_ndarray(format="rgb24")


def test_a_surface_is_converted_between_the_legacy_streams_waits(monkeypatch):
    """The decode stream waits for NVDEC's copy (legacy stream) before the conversion reads the
    surface, and the legacy stream waits for the conversion before FFmpeg can reuse it."""
    log = []
    cuda, _ = install(monkeypatch, log)
    real = gpu_decode.nv12_to_rgb

    def converting(y, uv, **tags):
        log.append(f"convert on {cuda.current_stream().name}")
        return real(y, uv, **tags)

    monkeypatch.setattr(gpu_decode, "nv12_to_rgb", converting)
    frame, want = nv12_frame(161, 96)  # an odd width: the whole chroma plane is read
    rgb = surface_to_rgb(frame, FakeStream(log, "decode"))
    assert log == ["decode waits for legacy", "convert on decode", "decode records event1@decode",
                   "legacy waits for event1@decode"]
    assert np.abs(rgb.permute(1, 2, 0).numpy().astype(int) - want).max() <= 2


# ---- on a GPU -------------------------------------------------------------------------------

def nvdec_nv12(path, count):
    """The first `count` frames' (Y, UV) planes as NVDEC wrote them, in decode output order."""
    accel = av.codec.hwaccel.HWAccel("cuda", device="0", allow_software_fallback=False, is_hw_owned=True)
    out = []
    with av.open(path, hwaccel=accel) as container:
        for frame in container.decode(video=0):
            assert frame.format.name == "cuda" and frame.sw_format.name == "nv12"
            y = torch.from_dlpack(frame.planes[0].__dlpack__()).cpu().numpy()  # (H, W)
            uv = torch.from_dlpack(frame.planes[1].__dlpack__()).cpu().numpy()  # (H/2, W/2, 2)
            out.append((frame.pts, y, uv))
            if len(out) == count:
                break
    return out


def software_nv12(path, count):
    out = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            nv, (h, w) = frame.reformat(format="nv12"), (frame.height, frame.width)
            y = np.frombuffer(nv.planes[0], np.uint8).reshape(h, -1)[:, :w]
            uv = np.frombuffer(nv.planes[1], np.uint8).reshape(h // 2, -1)[:, :w].reshape(h // 2, w // 2, 2)
            out.append((frame.pts, y, uv))
            if len(out) == count:
                break
    return out


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["h264", "hevc"])
def test_nvdec_planes_equal_the_software_decoder_bit_for_bit(videos, name):
    gpu, cpu = nvdec_nv12(videos[name], 24), software_nv12(videos[name], 24)
    assert len(gpu) == len(cpu) == 24
    for (gp, gy, guv), (cp, cy, cuv) in zip(gpu, cpu):
        assert gp == cp and np.array_equal(gy, cy) and np.array_equal(guv, cuv)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["h264", "hevc", "h264_rot90", "vp9"])
def test_nvdec_frames_match_cpu_decode(videos, name):
    stats = GpuDecodeStats()
    frames = GpuDecoder(fallback="error").read_frames(videos[name], INDICES, stats=stats)
    assert stats.decoder == "nvdec" and stats.fallback is None and stats.cpu_converted == 0
    assert all(f.is_cuda and f.dtype == torch.uint8 for f in frames)
    for got, want, i in zip(as_hwc(frames), read_frames(videos[name], INDICES), INDICES):
        assert got.shape == want.shape and frame_index(got) == i and marker_corner(got) == "tl"
        d = np.abs(got.astype(int) - want.astype(int))
        assert d.mean() <= 1.5 and d.max() <= 3, (name, i, d.mean(), d.max())


@pytest.mark.cuda
def test_nvdec_10bit_hevc_within_the_10bit_tolerance(videos):
    stats = GpuDecodeStats()
    frames = GpuDecoder().read_frames(videos["hevc_10bit"], [0, 17, 40], stats=stats)
    assert stats.decoder == "nvdec", stats.fallback
    for got, want in zip(as_hwc(frames), read_frames(videos["hevc_10bit"], [0, 17, 40])):
        d = np.abs(got.astype(int) - want.astype(int))
        assert d.mean() <= 1.5 and np.percentile(d, 99) <= 3, (d.mean(), np.percentile(d, 99))


@pytest.mark.cuda
@pytest.mark.parametrize("name, reason", [("av1", "av1"), ("h264_444", "4:4:4")])
def test_what_nvdec_cannot_decode_falls_back_with_the_reason(videos, name, reason):
    stats = GpuDecodeStats()
    frames = GpuDecoder().read_frames(videos[name], INDICES, stats=stats)
    assert stats.decoder == "cpu" and reason in stats.fallback, stats.fallback
    assert all(f.is_cuda for f in frames)
    for got, want in zip(as_hwc(frames), read_frames(videos[name], INDICES)):
        assert np.array_equal(got, want)  # decoded on the CPU: the CPU path's own bits
    with pytest.raises(VlrtError, match=reason):
        GpuDecoder(fallback="error").read_frames(videos[name], [0])


@pytest.mark.cuda
def test_nvdec_decodes_only_near_the_wanted_frames(videos):
    """The keyframe-seeking logic is the CPU path's: the same cost counters on both paths."""
    gpu, cpu = GpuDecodeStats(), GpuDecodeStats()
    GpuDecoder(fallback="error").read_frames(videos["h264"], [40, 5], stats=gpu)
    read_frames(videos["h264"], [40, 5], stats=cpu)
    assert (gpu.frames_decoded, gpu.seeks) == (cpu.frames_decoded, cpu.seeks)
    assert gpu.frames_decoded < probe(videos["h264"]).num_frames


@pytest.mark.cuda
def test_nvdec_places_packed_b_frames_like_the_cpu_path(packed_avi):
    """Frames whose pts arrive shuffled are placed by output order on the GPU too (or, where NVDEC
    refuses MPEG-4 Part 2, decoded by the CPU path: reported, and then bit-exact)."""
    stats = GpuDecodeStats()
    frames = GpuDecoder().read_frames(packed_avi, INDICES, stats=stats)
    assert [frame_index(f) for f in as_hwc(frames)] == INDICES, (stats.decoder, stats.fallback)
    for got, want in zip(as_hwc(frames), read_frames(packed_avi, INDICES)):
        d = np.abs(got.astype(int) - want.astype(int))
        assert d.mean() <= (1.5 if stats.decoder == "nvdec" else 0) and d.max() <= 3, (stats.decoder, d.max())


@pytest.mark.cuda
def test_nvdec_is_used_after_torch_allocated_on_the_gpu_first(videos):
    """torch activates the primary context with its default flags; the decoder still gets NVDEC."""
    torch.ones(1, device="cuda").add_(1)
    torch.cuda.synchronize()
    stats = GpuDecodeStats()
    GpuDecoder(fallback="error").read_frames(videos["h264"], [0, 30], stats=stats)
    assert stats.decoder == "nvdec" and stats.fallback is None


@pytest.mark.cuda
def test_nvdec_is_used_when_torch_initialised_cuda_first_in_a_fresh_process(videos):
    """The same in a process where nothing of vlrt.gpu ran before torch made the context active."""
    code = textwrap.dedent(f"""
        import torch
        x = torch.randn(64, 64, device="cuda") @ torch.randn(64, 64, device="cuda")
        torch.cuda.synchronize()
        from vlrt.gpu.decode import GpuDecoder, GpuDecodeStats
        stats = GpuDecodeStats()
        frames = GpuDecoder(fallback="cpu").read_frames({videos["h264"]!r}, [0, 30], stats=stats)
        assert frames[0].is_cuda
        print(stats.decoder, stats.fallback)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parents[2])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "nvdec None", proc.stdout


@pytest.fixture(scope="module")
def odd_videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    out = {}
    for name, (width, height) in {"odd_width": (321, 180), "odd_height": (320, 181)}.items():
        out[name] = str(root / f"{name}.webm")
        write_video(out[name], codec="libvpx-vp9", width=width, height=height, frames=24, fps=24, gop=12)
    return out


@pytest.mark.cuda
def test_nvdec_odd_width_reads_the_last_chroma_column(odd_videos):
    stats, indices = GpuDecodeStats(), [0, 7, 23]
    frames = GpuDecoder(fallback="error").read_frames(odd_videos["odd_width"], indices, stats=stats)
    assert stats.decoder == "nvdec" and stats.cpu_converted == 0
    for got, want in zip(as_hwc(frames), read_frames(odd_videos["odd_width"], indices)):
        d = np.abs(got.astype(int) - want.astype(int))
        assert got.shape == (180, 321, 3) and d.mean() <= 1.5 and d.max() <= 3 and d[:, -1].max() <= 3, d.max()


@pytest.mark.cuda
def test_nvdec_odd_height_is_converted_by_swscale(odd_videos):
    stats, indices = GpuDecodeStats(), [0, 7, 23]
    frames = GpuDecoder(fallback="error").read_frames(odd_videos["odd_height"], indices, stats=stats)
    assert stats.decoder == "nvdec" and stats.cpu_converted == len(indices)
    for got, want in zip(as_hwc(frames), read_frames(odd_videos["odd_height"], indices)):
        d = np.abs(got.astype(int) - want.astype(int))
        assert got.shape == (181, 320, 3) and d.max() <= 3 and d[-1].max() <= 3, (d.max(), d[-1].max())
