"""The NVDEC capability table (vlrt.gpu.support) gives the refusals NVIDIA documents, per GPU
generation, and lets through what NVDEC decodes. CPU-only."""
import pytest

from vlrt.gpu.support import chroma_and_depth, nvdec_refusal

HOPPER, A100, TURING, ADA, GA102, BLACKWELL = (9, 0), (8, 0), (7, 5), (8, 9), (8, 6), (12, 0)


@pytest.mark.parametrize("pix_fmt, expected", [
    ("yuv420p", ("420", 8)), ("yuvj420p", ("420", 8)), ("nv12", ("420", 8)), ("yuv420p10le", ("420", 10)),
    ("p010le", ("420", 10)), ("yuv422p", ("422", 8)), ("yuv422p10le", ("422", 10)), ("yuv444p", ("444", 8)),
    ("gray", ("400", 8)),
])
def test_chroma_and_depth(pix_fmt, expected):
    assert chroma_and_depth(pix_fmt) == expected


@pytest.mark.parametrize("cap", [HOPPER, A100, TURING])
def test_av1_is_refused_on_hopper_ga100_and_turing(cap):
    reason = nvdec_refusal("av1", "yuv420p", cap)
    assert reason is not None and "av1 is not supported by NVDEC" in reason and f"{cap[0]}.{cap[1]}" in reason


@pytest.mark.parametrize("cap", [ADA, GA102, BLACKWELL])
def test_av1_is_allowed_from_ga10x_on(cap):
    assert nvdec_refusal("av1", "yuv420p", cap) is None


@pytest.mark.parametrize("cap", [HOPPER, BLACKWELL])
def test_h264_444_is_refused_everywhere(cap):
    assert "h264 4:4:4" in nvdec_refusal("h264", "yuv444p", cap)


@pytest.mark.parametrize("pix_fmt, words", [("yuv420p10le", "10-bit"), ("yuv422p", "4:2:2")])
def test_h264_high10_and_422_only_on_blackwell(pix_fmt, words):
    assert words in nvdec_refusal("h264", pix_fmt, HOPPER)
    assert nvdec_refusal("h264", pix_fmt, BLACKWELL) is None


def test_h264_size_limit_before_blackwell():
    assert "4096x4096" in nvdec_refusal("h264", "yuv420p", HOPPER, width=5120, height=2880)
    assert nvdec_refusal("h264", "yuv420p", HOPPER, width=3840, height=2160) is None
    assert nvdec_refusal("h264", "yuv420p", BLACKWELL, width=5120, height=2880) is None


@pytest.mark.parametrize("codec, pix_fmt", [("h264", "yuv420p"), ("h264", "yuvj420p"), ("hevc", "yuv420p"),
                                            ("hevc", "yuv420p10le"), ("hevc", "yuv444p"), ("vp9", "yuv420p"),
                                            ("vp8", "yuv420p"), ("mpeg4", "yuv420p"), ("h264", None)])
def test_what_hopper_decodes(codec, pix_fmt):
    assert nvdec_refusal(codec, pix_fmt, HOPPER) is None


def test_hevc_422_only_on_blackwell():
    assert "hevc 4:2:2" in nvdec_refusal("hevc", "yuv422p10le", HOPPER)
    assert nvdec_refusal("hevc", "yuv422p10le", BLACKWELL) is None


def test_codec_without_nvdec_decoder():
    assert nvdec_refusal("prores", "yuv422p10le", HOPPER) == "prores has no NVDEC decoder"
