"""GpuDecoder keeps read_frames' contract (exact frames by index, any order, repeats, rotation) and
reports every file the CPU decoded instead of NVDEC, with the reason.

On the CPU (device="cpu") the decoder falls back, reports why, and must hand out exactly the
CPU path's pixels. On a GPU (`cuda` tests): NVDEC's YUV planes equal the software decoder's bit
for bit, and the RGB frames are within the YUV -> RGB tolerance of tests/gpu/test_gpu_colour.py
(mean <= 1.5 levels, max <= 3) and show the frame index drawn into them.
"""
import ast
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from video_assets import frame_index, marker_corner, write_packed_avi

from vlrt.errors import VlrtError
from vlrt.gpu.decode import GpuDecoder, GpuDecodeStats, rotate_chw
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
