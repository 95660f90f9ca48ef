"""GPU preprocessing (vlrt.gpu.preprocess) against the CPU path's exact mode (PIL, CLIP's own
arithmetic). The sizes and crops are the CPU path's own functions; what is compared is the
resize and normalisation. Tolerance: at most 2 levels (of 255) on any value and 0.5% of values
differing at all; measured on the CPU: 0-0.05% of values off by 1-2 levels."""
import numpy as np
import pytest
import torch
from video_assets import frame_pixels

from vlrt.errors import VlrtError
from vlrt.gpu.preprocess import GpuPreprocess
from vlrt.runtime.preprocess import Preprocess

CLIP = Preprocess(size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711))
SIZES = [(1920, 1080), (1280, 720), (640, 480), (320, 180), (100, 300), (224, 224), (227, 301), (225, 224)]


def image(width, height, *, noisy, seed=0):
    img = frame_pixels(5, width, height)  # hard edges: where bicubic overshoots and PIL clips
    if noisy:
        rng = np.random.default_rng(seed)
        img = np.clip(img.astype(int) + rng.integers(-40, 40, img.shape), 0, 255).astype(np.uint8)
    return img


def levels(gpu_out, cpu_out, pre=CLIP):
    """|difference| in levels of 255, undoing the normalisation."""
    std = np.asarray(pre.std, np.float32)[:, None, None]
    return np.abs(np.asarray(gpu_out, np.float32) - cpu_out) * std * 255.0


def assert_close(d):
    assert d.max() <= 2.0 + 1e-3 and (d > 0.5).mean() <= 0.005, (d.max(), (d > 0.5).mean())


@pytest.mark.parametrize("width, height", SIZES)
@pytest.mark.parametrize("noisy", [False, True])
def test_matches_exact_mode_on_cpu(width, height, noisy):
    img = image(width, height, noisy=noisy)
    out = GpuPreprocess(CLIP, dtype=torch.float32)(torch.from_numpy(img).permute(2, 0, 1)[None])  # (1, 3, S, S)
    assert out.shape == (1, 3, 224, 224) and out.dtype == torch.float32
    assert_close(levels(out[0].numpy(), CLIP.exact(img)))


def test_one_float_pass_would_not_match():
    """Why the resize runs as two rounded passes: one float pass misses PIL's clipping."""
    img = image(1280, 720, noisy=False)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    rw, rh = CLIP.resized_size(1280, 720)
    one = torch.nn.functional.interpolate(x, size=(rh, rw), mode="bicubic", antialias=True).round().clamp(0, 255)
    left, top, right, bottom = CLIP.crop_box(1280, 720)
    one = GpuPreprocess(CLIP, dtype=torch.float32)._normalize(one[:, :, top:bottom, left:right])
    assert levels(one[0].numpy(), CLIP.exact(img)).max() >= 4


def test_fp16_output_and_lists_of_mixed_sizes():
    frames = [torch.from_numpy(image(w, h, noisy=True)).permute(2, 0, 1) for w, h in [(320, 180), (180, 320)]]
    out = GpuPreprocess(CLIP).frames_list(frames)  # default dtype: fp16
    assert out.shape == (2, 3, 224, 224) and out.dtype == torch.float16
    for f, o in zip(frames, out):
        assert_close(levels(o.float().numpy(), CLIP.exact(f.permute(1, 2, 0).numpy())))  # fp16: < 0.1 level


def test_rejects_what_is_not_uint8_chw():
    with pytest.raises(VlrtError, match=r"\(N, 3, H, W\) uint8"):
        GpuPreprocess(CLIP)(torch.zeros((1, 224, 224, 3), dtype=torch.uint8))
    with pytest.raises(VlrtError, match="uint8"):
        GpuPreprocess(CLIP)(torch.zeros((1, 3, 224, 224)))


def test_from_manifest_refuses_rules_it_cannot_follow():
    pre = {"size": 224, "resize": "shorter-side", "crop": "center", "interpolation": "bilinear",
           "mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(VlrtError, match="interpolation 'bilinear'"):
        GpuPreprocess.from_manifest(pre)


def test_fused_kernel_seam_gets_the_cpu_paths_geometry():
    calls = []

    def kernel(frames, *, size, box, mean, std, dtype):
        calls.append((tuple(frames.shape), size, box, mean, std, dtype))
        return torch.zeros((frames.shape[0], 3, box[3] - box[1], box[2] - box[0]), dtype=dtype)

    out = GpuPreprocess(CLIP, kernel=kernel)(torch.zeros((2, 3, 180, 320), dtype=torch.uint8))
    assert out.shape == (2, 3, 224, 224)
    (shape, size, box, mean, std, dtype), = calls
    assert size == (224, 398) and box == CLIP.crop_box(320, 180) == (87, 0, 311, 224)
    assert (mean, std, dtype) == (CLIP.mean, CLIP.std, torch.float16)


@pytest.mark.cuda
@pytest.mark.parametrize("width, height", SIZES)
def test_matches_exact_mode_on_cuda(width, height):
    img = image(width, height, noisy=True)
    frames = torch.from_numpy(img).permute(2, 0, 1)[None].cuda()
    out32 = GpuPreprocess(CLIP, dtype=torch.float32)(frames)
    assert out32.is_cuda
    assert_close(levels(out32[0].cpu().numpy(), CLIP.exact(img)))
    out16 = GpuPreprocess(CLIP)(frames)
    assert out16.dtype == torch.float16
    assert (out16.float() - out32).abs().max().item() <= 4e-3  # fp16 spacing at |x| <= 2.2
