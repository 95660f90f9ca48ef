"""YUV -> RGB on torch tensors (vlrt.gpu.colour) against the CPU path's swscale conversion.

NVDEC hands out the same YUV samples a software decoder computes (H.264/HEVC decoding is exactly
specified), so the GPU-vs-CPU decode difference for 8-bit streams is this conversion alone. It
runs here on CPU tensors, fed with planes PyAV's software decoder produced, in the layouts NVDEC
writes (NV12, and P010 for 10-bit).

Tolerances, from measurements on these videos (2026-11, PyAV 18.1 / FFmpeg 8.1): 8-bit, mean
absolute difference 0.01-0.1 level on the test pattern and up to 1.3 on the synthetic demo clips
(uniform areas whose value swscale's fixed point rounds up where the float floor rounds down), at
most 2 levels anywhere; 10-bit (swscale takes another, dithering path there): mean ~1 level,
99th percentile 2, up to ~30 at chroma edges.

Odd sizes: an odd width's last chroma column is read through `dlpack_planes` (PyAV's DLPack
export leaves it out) and then matches swscale like the rest; an odd height makes swscale
interpolate chroma between rows, which is left to swscale itself (GpuDecoder converts such
frames on the CPU).
"""
import av
import numpy as np
import pytest
import torch
from video_assets import frame_pixels, write_video

from vlrt.bench import synth
from vlrt.gpu.colour import dlpack_planes, matrix_name, nv12_to_rgb, yuv420_to_rgb

MEAN_8BIT, MAX_8BIT = 1.5, 3


def decoded_frame(path, index=5):
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == index:
                return frame
    raise AssertionError(f"{path} has no frame {index}")


def nv_planes(frame, fmt):
    """(Y, interleaved UV) of a frame converted losslessly to NV12 or P010, as NVDEC lays them out."""
    nv = frame.reformat(format=fmt)
    h, w = frame.height, frame.width
    dtype = np.uint8 if fmt == "nv12" else np.uint16
    y = np.frombuffer(nv.planes[0], dtype).reshape(h, -1)[:, :w]
    uv = np.frombuffer(nv.planes[1], dtype).reshape(h // 2, -1)[:, :w].reshape(h // 2, w // 2, 2)
    if dtype == np.uint16:  # torch has few uint16 kernels; the DLPack tensors arrive as uint16
        return (torch.from_numpy(y.copy().view(np.int16)).view(torch.uint16),
                torch.from_numpy(uv.copy().view(np.int16)).view(torch.uint16))
    return torch.from_numpy(y.copy()), torch.from_numpy(uv.copy())


def difference(frame, fmt="nv12", **tags):
    y, uv = nv_planes(frame, fmt)
    tags = {"colorspace": frame.colorspace, "color_range": frame.color_range, **tags}
    rgb = nv12_to_rgb(y, uv, **tags)  # (3, H, W)
    assert rgb.dtype == torch.uint8 and rgb.shape == (3, frame.height, frame.width)
    return np.abs(rgb.permute(1, 2, 0).numpy().astype(int) - frame.to_ndarray(format="rgb24").astype(int))


@pytest.mark.parametrize("codec, suffix", [("libx264", ".mp4"), ("libx265", ".mkv"), ("libvpx-vp9", ".webm")])
def test_8bit_matches_swscale(tmp_path, codec, suffix):
    path = tmp_path / f"v{suffix}"
    write_video(path, codec=codec, width=320, height=180, frames=8)
    d = difference(decoded_frame(path))
    assert d.mean() <= 0.25 and d.max() <= MAX_8BIT, (d.mean(), d.max())


@pytest.mark.parametrize("k", [0, 9, 21])
def test_8bit_matches_swscale_on_demo_clips(tmp_path, k):
    scene = synth.scenes("test")[k]
    path = synth.write_mp4(tmp_path / "clip.mp4", synth.render(scene, seed=k))
    d = difference(decoded_frame(path))
    assert d.mean() <= MEAN_8BIT and d.max() <= MAX_8BIT, (d.mean(), d.max())


def test_10bit_p010_matches_swscale(tmp_path):
    path = tmp_path / "v.mkv"
    write_video(path, codec="libx265", width=320, height=180, frames=8, pix_fmt="yuv420p10le")
    d = difference(decoded_frame(path), "p010le")
    assert d.mean() <= MEAN_8BIT and np.percentile(d, 99) <= MAX_8BIT and d.max() <= 40, (d.mean(), d.max())


@pytest.mark.parametrize("colorspace, color_range", [(1, 1), (1, 2), (6, 2), (9, 1)])
def test_matrix_and_range_follow_the_frame_tags(tmp_path, colorspace, color_range):
    """swscale reads the tags from the frame; so must the GPU conversion (BT.709, full range, ...)."""
    path = tmp_path / "v.mp4"
    write_video(path, codec="libx264", width=320, height=180, frames=8)
    frame = decoded_frame(path)
    frame.colorspace, frame.color_range = colorspace, color_range
    d = difference(frame)
    assert d.mean() <= 0.5 and d.max() <= MAX_8BIT, (matrix_name(colorspace), d.mean(), d.max())
    wrong = difference(frame, colorspace=2, color_range=0 if color_range == 2 else 2)
    assert wrong.mean() > 2 * d.mean() + 0.5  # the tags matter, so the test can fail


def test_planar_and_interleaved_chroma_agree():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 256, (6, 10), dtype=torch.uint8, generator=gen)
    uv = torch.randint(0, 256, (3, 5, 2), dtype=torch.uint8, generator=gen)
    assert torch.equal(nv12_to_rgb(y, uv), yuv420_to_rgb(y, uv[..., 0], uv[..., 1]))


def test_odd_sizes_repeat_the_last_chroma_row_and_column():
    y = torch.full((5, 7), 120, dtype=torch.uint8)
    u = torch.tensor([[100, 140, 160], [110, 120, 130]], dtype=torch.uint8)  # (2, 3): floor(5/2), floor(7/2)
    rgb = yuv420_to_rgb(y, u, u)  # (3, 5, 7)
    assert rgb.shape == (3, 5, 7)
    assert torch.equal(rgb[:, 4], rgb[:, 3]) and torch.equal(rgb[:, :, 6], rgb[:, :, 5])


def test_limited_range_black_and_white():
    y = torch.tensor([[16, 235]], dtype=torch.uint8).repeat(2, 1)  # (2, 2)
    c = torch.full((1, 1), 128, dtype=torch.uint8)
    rgb = yuv420_to_rgb(y, c, c)
    assert rgb[:, 0, 0].tolist() == [0, 0, 0] and rgb[:, 0, 1].tolist() == [255, 255, 255]


# ---- odd sizes ------------------------------------------------------------------------------

def plane_array(plane, dtype):
    return np.frombuffer(plane, dtype).reshape(plane.height, -1)  # (rows, line_size / itemsize)


def nv_frame(yuv):
    """A PyAV NV12 / P010 frame holding a yuv420p / yuv420p10le frame's samples, chroma plane at
    its full ceil(H/2) x ceil(W/2) size (as NVDEC writes it), with the frame's tags."""
    deep = yuv.format.name != "yuv420p"
    dtype, shift = (np.uint16, 6) if deep else (np.uint8, 0)  # P010: 10 bits at the top of 16
    nv = av.VideoFrame(yuv.width, yuv.height, "p010le" if deep else "nv12")
    y, u, v = (plane_array(p, dtype)[:, :p.width] for p in yuv.planes)
    plane_array(nv.planes[0], dtype)[:, :yuv.width] = y << shift
    uv = plane_array(nv.planes[1], dtype)[:, :2 * u.shape[1]].reshape(u.shape[0], u.shape[1], 2)
    uv[..., 0], uv[..., 1] = u << shift, v << shift
    nv.colorspace, nv.color_range = yuv.colorspace, yuv.color_range
    return nv


def picture(width, height, kind):
    if kind == "noise":  # chroma changes between every pair of columns: the worst case at an edge
        return np.random.default_rng(1).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return frame_pixels(5, width, height)


def convert(y, uv, frame):
    rgb = nv12_to_rgb(y, uv, colorspace=frame.colorspace, color_range=frame.color_range)  # (3, H, W)
    return rgb.permute(1, 2, 0).numpy().astype(int)


@pytest.mark.parametrize("width, height", [(7, 6), (321, 180), (161, 96)])
@pytest.mark.parametrize("kind", ["noise", "pattern"])
def test_odd_widths_use_the_whole_chroma_plane_like_swscale(width, height, kind):
    """PyAV exports an odd width's chroma plane one column short over DLPack; dlpack_planes reads
    the whole plane, and the last column then matches swscale (the CPU path) like the rest."""
    yuv = av.VideoFrame.from_ndarray(picture(width, height, kind), format="rgb24").reformat(format="yuv420p")
    nv = nv_frame(yuv)
    want = yuv.to_ndarray(format="rgb24").astype(int)
    y, uv = dlpack_planes(nv)
    assert y.shape == (height, width) and uv.shape == (height // 2, (width + 1) // 2, 2)
    d = np.abs(convert(y, uv, yuv) - want)
    assert d.max() <= 2 and d[:, -1].max() <= 2, (d.max(), d[:, -1].max())
    short = torch.from_dlpack(nv.planes[1].__dlpack__())  # PyAV's own shape: the edge repeated instead
    assert short.shape == (height // 2, width // 2, 2)
    if kind == "noise":
        assert np.abs(convert(y, short, yuv) - want)[:, -1].max() > 3 * MAX_8BIT  # so the test can fail


def test_odd_width_p010_uses_the_whole_chroma_plane():
    yuv = av.VideoFrame.from_ndarray(picture(161, 96, "pattern"), format="rgb24").reformat(format="yuv420p10le")
    y, uv = dlpack_planes(nv_frame(yuv))
    assert uv.shape == (48, 81, 2) and uv.dtype == torch.uint16
    d = np.abs(convert(y, uv, yuv) - yuv.to_ndarray(format="rgb24").astype(int))
    assert d.mean() <= MEAN_8BIT and np.percentile(d, 99) <= MAX_8BIT and d[:, -1].max() <= MAX_8BIT


def test_the_widened_plane_keeps_the_frame_alive():
    yuv = av.VideoFrame.from_ndarray(picture(7, 6, "noise"), format="rgb24").reformat(format="yuv420p")
    nv = nv_frame(yuv)
    y, uv = dlpack_planes(nv)
    expected = uv.clone()
    del nv
    assert torch.equal(uv, expected) and uv[..., 0][:, -1].tolist() == plane_array(yuv.planes[1], np.uint8)[:3, 3].tolist()


def test_a_chroma_line_too_short_to_widen_is_refused():
    from vlrt.errors import VlrtError
    from vlrt.gpu.colour import _widen

    with pytest.raises(VlrtError, match=r"cannot view the full 3x4 chroma plane"):
        _widen(torch.zeros((2, 3, 2), dtype=torch.uint8), 3, 4)  # lines of 6 bytes; 4 pairs need 8


@pytest.mark.parametrize("width, height", [(7, 5), (161, 97), (320, 181)])
def test_odd_heights_are_left_to_swscale(width, height):
    """swscale converts yuv420p with an odd height by its general path, which interpolates chroma
    between rows (its yuv420p -> RGB shortcut needs an even height); vlrt.gpu.colour does not
    reproduce that, so GpuDecoder has swscale convert such NVDEC frames (`cpu_converted`). What it
    relies on: swscale gives NV12 the same RGB as the CPU path's yuv420p."""
    yuv = av.VideoFrame.from_ndarray(picture(width, height, "noise"), format="rgb24").reformat(format="yuv420p")
    nv = nv_frame(yuv)
    want = yuv.to_ndarray(format="rgb24")
    assert np.array_equal(nv.to_ndarray(format="rgb24"), want)
    assert np.abs(convert(*dlpack_planes(nv), yuv) - want.astype(int)).max() > 3 * MAX_8BIT


@pytest.mark.parametrize("codec, suffix", [("mpeg4", ".avi"), ("libvpx-vp9", ".webm")])
def test_odd_heights_of_decoded_frames_convert_alike_from_nv12(tmp_path, codec, suffix):
    """The same with decoded frames, whose tags (MPEG-4's chroma siting among them) swscale reads:
    PyAV's reformat to NV12 keeps them, as NVDEC's frames carry the decoder's."""
    path = tmp_path / f"odd{suffix}"
    write_video(path, codec=codec, width=161, height=97, frames=4)
    frame = decoded_frame(path, 1)
    want = frame.to_ndarray(format="rgb24")
    assert np.array_equal(frame.reformat(format="nv12").to_ndarray(format="rgb24"), want)
