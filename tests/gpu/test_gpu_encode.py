"""GpuEncoder: the reference model from a checkpoint, on a device, in a precision.

On the CPU (fp32) it must equal the reference model and the CPU runtime (ONNX Runtime) to export
precision, and refuse a mask row that selects no frame. On a GPU, fp16 (autocast) embeddings must stay within cos >= 0.999 of the fp32 CPU
runtime's, for a tiny random model, the embedded default model and ViT-B/32 geometry.
"""
import numpy as np
import pytest
import torch

import vlrt.assets
from vlrt import Runtime
from vlrt.errors import VlrtError
from vlrt.export import export_checkpoint, load_checkpoint
from vlrt.gpu.encode import GpuEncoder
from vlrt.models import HeadConfig, ModelConfig, TextConfig, VideoTextModel, VisionConfig, get_config, random_init
from vlrt.models.checkpoint import save_checkpoint

TINY = ModelConfig(embed_dim=48, vision=VisionConfig(32, 8, 128, 2, 2), text=TextConfig(77, 49408, 64, 2, 1),
                   head=HeadConfig(type="seqTransf", layers=1, heads=2, max_positions=8))
TEXTS = ["a red circle moves to the left", "two small blue squares stay still on a black background"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-encode")
    ckpt = save_checkpoint(random_init(VideoTextModel(TINY), seed=4), root / "tiny.pt",
                           settings={"max_frames": 4, "max_words": 20})
    bundle = export_checkpoint(ckpt, root / "bundle").bundle
    return ckpt, Runtime.load(bundle, backend="ort-cpu")


def frames_and_mask(batch, frames, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn((batch, frames, 3, size, size), generator=gen)  # (B, T, 3, S, S)
    mask = torch.ones((batch, frames))
    mask[0, 2:] = 0  # one padded video: the head's key mask is exercised
    return pixels, mask


def cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_fp32_on_cpu_equals_the_reference_and_the_runtime(tiny):
    ckpt, rt = tiny
    enc = GpuEncoder.from_checkpoint(ckpt, device="cpu", precision="fp32")
    assert enc.settings["max_frames"] == 4 and enc.settings["max_words"] == 20
    pixels, mask = frames_and_mask(3, 4, 32)
    video, frames = enc.encode_frames(pixels, mask, return_frames=True)
    assert video.shape == (3, 48) and frames.shape == (3, 4, 48) and video.dtype == torch.float32
    with torch.no_grad():
        ref_video, _ = load_checkpoint(ckpt).model.encode_video(pixels, mask)
    assert torch.allclose(video, ref_video, atol=1e-6)
    assert frames[0, 2:].abs().max() == 0  # padded frames stay zero
    assert cosines(video.numpy(), rt.encode_frames(pixels.numpy(), mask.numpy())).min() >= 0.99999
    assert cosines(enc.encode_text(TEXTS).numpy(), rt.encode_text(TEXTS)).min() >= 0.99999


def test_bad_inputs_are_refused(tiny):
    enc = GpuEncoder.from_checkpoint(tiny[0], device="cpu", precision="fp32")
    with pytest.raises(VlrtError, match=r"pixels must have shape \(B, T, 3, 32, 32\)"):
        enc.encode_frames(torch.zeros((1, 2, 3, 64, 64)))
    with pytest.raises(VlrtError, match="8 positions"):
        enc.encode_frames(torch.zeros((1, 9, 3, 32, 32)))
    with pytest.raises(VlrtError, match="mask must have shape"):
        enc.encode_frames(torch.zeros((1, 2, 3, 32, 32)), torch.ones((1, 3)))
    with pytest.raises(VlrtError, match="fp16 autocast is for CUDA"):
        GpuEncoder.from_checkpoint(tiny[0], device="cpu")
    with pytest.raises(VlrtError, match="unknown precision 'int4'"):
        GpuEncoder.from_checkpoint(tiny[0], device="cpu", precision="int4")
    with pytest.raises(VlrtError, match="xclip model scores with its scorer.*vlrt.Runtime"):
        GpuEncoder.from_checkpoint(vlrt.assets.default_checkpoint("xclip"), device="cpu", precision="fp32")


@pytest.mark.parametrize("where", ["float32", "float64"])
def test_a_mask_row_without_frames_is_refused(tiny, where):
    """A video with no frame has nothing to attend to or average: NaN under fp16, so refused."""
    enc = GpuEncoder.from_checkpoint(tiny[0], device="cpu", precision="fp32")
    pixels, mask = frames_and_mask(3, 4, 32)
    mask[1] = 0
    if where == "float64":
        mask = torch.from_numpy(mask.numpy().astype(np.float64))
    with pytest.raises(VlrtError, match=r"mask rows \[1\] select no frame"):
        enc.encode_frames(pixels, mask)
    mask[1, 0] = 1  # one frame is enough
    assert torch.isfinite(enc.encode_frames(pixels, mask)).all()


def test_bf16_on_cpu_runs_and_stays_close(tiny):
    enc = GpuEncoder.from_checkpoint(tiny[0], device="cpu", precision="bf16")
    pixels, mask = frames_and_mask(2, 4, 32)
    ort = tiny[1].encode_frames(pixels.numpy(), mask.numpy())
    assert cosines(enc.encode_frames(pixels, mask).numpy(), ort).min() >= 0.99


# ---- on a GPU -------------------------------------------------------------------------------

@pytest.mark.cuda
def test_fp16_on_cuda_matches_fp32_onnx_runtime_on_cpu(tiny):
    ckpt, rt = tiny
    enc = GpuEncoder.from_checkpoint(ckpt)  # cuda, fp16
    pixels, mask = frames_and_mask(4, 4, 32)
    video = enc.encode_frames(pixels.cuda().half(), mask.cuda())
    assert video.is_cuda and video.dtype == torch.float32
    assert cosines(video.cpu().numpy(), rt.encode_frames(pixels.numpy(), mask.numpy())).min() >= 0.999
    assert cosines(enc.encode_text(TEXTS).cpu().numpy(), rt.encode_text(TEXTS)).min() >= 0.999


@pytest.mark.cuda
def test_fp16_default_model_matches_onnx_runtime(tmp_path):
    from vlrt.assets import default_checkpoint as shipped_model

    rt = Runtime.load(export_checkpoint(shipped_model(), tmp_path / "bundle").bundle, backend="ort-cpu")
    enc = GpuEncoder.from_checkpoint(shipped_model())
    pixels, mask = frames_and_mask(4, 8, 64, seed=1)
    video = enc.encode_frames(pixels.cuda(), mask.cuda()).cpu().numpy()
    assert cosines(video, rt.encode_frames(pixels.numpy(), mask.numpy())).min() >= 0.999


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16"])
def test_fp16_full_size_geometry_matches_fp32_reference(name):
    """Random weights in the real geometry (12 layers): fp16 error accumulates over depth."""
    cfg = get_config(name).replace(head=HeadConfig(type="seqTransf", layers=4, heads=8, max_positions=32))
    model = random_init(VideoTextModel(cfg), seed=0)
    pixels, mask = frames_and_mask(2, 4, 224)
    with torch.no_grad():
        ref, _ = model.encode_video(pixels, mask)  # fp32 on the CPU
    enc = GpuEncoder(model, precision="fp16")
    assert cosines(enc.encode_frames(pixels.cuda(), mask.cuda()).cpu().numpy(), ref.numpy()).min() >= 0.999


@pytest.mark.cuda
def test_cuda_mask_row_without_frames_is_refused(tiny):
    enc = GpuEncoder.from_checkpoint(tiny[0])
    pixels, mask = frames_and_mask(2, 4, 32)
    mask[0] = 0
    with pytest.raises(VlrtError, match=r"mask rows \[0\] select no frame"):
        enc.encode_frames(pixels.cuda().half(), mask.cuda())


@pytest.mark.cuda
def test_encoder_stream_is_handed_back_to_the_callers_stream(tiny):
    """Outputs read on the caller's stream right away (no explicit sync) are the finished ones."""
    enc = GpuEncoder.from_checkpoint(tiny[0])
    assert enc.stream is not None and enc.stream != torch.cuda.current_stream()
    pixels, mask = frames_and_mask(4, 4, 32)
    ref = enc.encode_frames(pixels.cuda().half(), mask.cuda()).cpu()
    for _ in range(3):
        x = pixels.cuda().half()  # made on the caller's stream just before the call
        out = enc.encode_frames(x, mask.cuda())
        assert torch.equal(out.cpu(), ref)
