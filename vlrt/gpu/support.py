"""What NVDEC decodes, by GPU generation: the refusals known before decoding a single packet.

From NVIDIA's "NVDEC Application Note" (Video Codec SDK 12.2 and 13.0), table "NVDEC Hardware
Capabilities". Generations by CUDA compute capability:
  Turing 7.5, GA100 8.0 and Hopper 9.0 share one column; GA10x 8.6/8.7 and Ada 8.9 the next;
  Blackwell (10.x, 11.x Thor, 12.x) the last. Older GPUs (< 7.5) are not a vlrt target; only the
  rules below are applied to them.
What the table says, for the codecs vlrt meets:
  - H.264: Baseline/Main/High (8-bit 4:2:0) everywhere; High10 and High 4:2:2 on Blackwell only;
    4:4:4 never; up to 4096x4096 before Blackwell.
  - HEVC: Main and Main10 everywhere; 4:4:4 from Turing on; 4:2:2 on Blackwell only; 8192x8192.
  - VP9 profile 0 everywhere (10/12-bit profile 2: not in the table; left to the decoder).
  - AV1 Main: GA10x, Ada and Blackwell only -- NOT A100 or H100.
This is a first filter that gives a precise reason; anything it lets through can still be refused
by FFmpeg's NVDEC hwaccel at run time, which `vlrt.gpu.decode` detects and reports the same way.
The table is data read from NVIDIA's documentation, unverified on a GPU by vlrt (docs/gpu.md).
"""
from __future__ import annotations

from typing import Any

NVDEC_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mpeg1video", "mpeg2video", "mpeg4", "vc1",
                          "mjpeg"})
Capability = tuple[int, int]


def _generation(cap: Capability) -> str:
    if cap >= (10, 0):
        return "blackwell"
    if cap in ((8, 6), (8, 7), (8, 9)):
        return "ampere-ga10x/ada"
    return "turing/ga100/hopper" if cap >= (7, 5) else "older"


def chroma_and_depth(pix_fmt: str) -> tuple[str, int]:
    """('420' | '422' | '444' | '400', bits per sample) of an FFmpeg pixel format name."""
    import av.video.format

    fmt = av.video.format.VideoFormat(pix_fmt, 64, 64)
    comps = fmt.components
    bits = max(c.bits for c in comps)
    if len(comps) < 3 or not fmt.name.startswith(("yuv", "nv", "p0", "p2", "p4")):
        return ("400" if len(comps) == 1 else "444"), bits
    w, h = comps[1].width, comps[1].height
    return ("444" if w == 64 else "422" if h == 64 else "420"), bits


def nvdec_refusal(codec: str, pix_fmt: str | None, capability: Capability, *, width: int = 0,
                  height: int = 0) -> str | None:
    """Why NVDEC on a GPU of this compute capability cannot decode the stream, or None if the
    documented table allows it. `pix_fmt` is the software decoder's format (None: unknown)."""
    cap = tuple(capability)
    gen = _generation(cap)
    where = f"NVDEC on this GPU (compute capability {cap[0]}.{cap[1]}, {gen})"
    if codec not in NVDEC_CODECS:
        return f"{codec} has no NVDEC decoder"
    chroma, bits = chroma_and_depth(pix_fmt) if pix_fmt else ("420", 8)
    if codec == "av1" and gen in ("turing/ga100/hopper", "older"):
        return f"av1 is not supported by {where}; NVDEC decodes AV1 on GA10x, Ada and Blackwell GPUs"
    if codec == "h264":
        return _h264_refusal(chroma, bits, gen, where, width, height)
    if codec == "hevc":
        if chroma == "422" and gen != "blackwell":
            return f"hevc 4:2:2 is not supported by {where}; only Blackwell decodes it"
        if chroma == "444" and gen == "older":
            return f"hevc 4:4:4 is not supported by {where}"
    return None


def _h264_refusal(chroma: str, bits: int, gen: str, where: str, width: int, height: int) -> str | None:
    if chroma == "444":
        return f"h264 4:4:4 is not supported by NVDEC on any GPU ({where})"
    if gen != "blackwell":
        if chroma == "422":
            return f"h264 4:2:2 (High 4:2:2) is not supported by {where}; only Blackwell decodes it"
        if bits > 8:
            return f"h264 {bits}-bit (High10) is not supported by {where}; only Blackwell decodes it"
        if max(width, height) > 4096:
            return f"h264 {width}x{height} exceeds {where}'s 4096x4096 limit"
    return None


def describe_stream(codec_context: Any) -> str:
    """'h264 High yuv420p 1920x1080': how a refused stream is named in a report."""
    profile = getattr(codec_context, "profile", None) or ""
    fmt = codec_context.format.name if getattr(codec_context, "format", None) else "?"
    codec = getattr(getattr(codec_context, "codec", None), "canonical_name", None) or codec_context.name
    return " ".join(p for p in (codec, profile, fmt,
                                f"{codec_context.width}x{codec_context.height}") if p)
