"""GPU tests: `cuda`-marked tests skip where PyTorch sees no CUDA device; with VLRT_REQUIRE_GPU=1
(set by tests/gpu/session.sh, which a GPU session runs) they fail instead, so a broken CUDA
set-up cannot pass as a run of skips. tests/kernels follows the same rule. The unmarked tests
here run on the CPU.

Test videos are made by tests/video_assets.py (PyAV's own encoders), once per session.
"""
from __future__ import annotations

import os

import pytest
from video_assets import write_video


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_runtest_setup(item):
    if item.get_closest_marker("cuda") and not cuda_available():
        if os.environ.get("VLRT_REQUIRE_GPU") == "1":
            pytest.fail("VLRT_REQUIRE_GPU=1, but PyTorch sees no CUDA device")
        pytest.skip("needs an NVIDIA GPU (CUDA)")


# name -> (file name, write_video options). 320x180 at 24 fps, GOP 12 with B-frames unless said.
VIDEOS = {
    "h264": ("h264.mp4", {"codec": "libx264"}),
    "hevc": ("hevc.mkv", {"codec": "libx265"}),
    "vp9": ("vp9.webm", {"codec": "libvpx-vp9"}),
    "h264_rot90": ("h264_rot90.mp4", {"codec": "libx264", "rotation": 90}),
    "hevc_10bit": ("hevc10.mkv", {"codec": "libx265", "pix_fmt": "yuv420p10le"}),
    "h264_444": ("h264_444.mp4", {"codec": "libx264", "pix_fmt": "yuv444p"}),
    "av1": ("av1.mp4", {"codec": "libsvtav1"}),
}


@pytest.fixture(scope="session")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-videos")
    out = {}
    for name, (file, options) in VIDEOS.items():
        path = root / file
        write_video(path, width=320, height=180, frames=48, fps=24, gop=12, **options)
        out[name] = str(path)
    return out
