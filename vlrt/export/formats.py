"""Checkpoint formats: detect which one a file is, and translate it to vlrt's canonical names.

One class per format in a registry, tried in order. Each knows how to recognise its key layout
and where the settings that weights cannot carry (activation, heads) come from.
"""
from __future__ import annotations

import abc
import dataclasses
import re
from typing import Any, ClassVar

import torch

from vlrt.errors import VlrtError
from vlrt.export.read import RawCheckpoint
from vlrt.models import ModelConfig
from vlrt.models.scorers import XClipScorer

OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
OPENAI_TEXT_ROOTS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


@dataclasses.dataclass
class Converted:
    """A state dict in canonical names, plus what the format says about the model."""

    state_dict: dict[str, torch.Tensor]
    family: str
    activation: str | None  # None: the format cannot tell
    activation_source: str  # "format", "signature", "config" or "unknown"
    config: ModelConfig | None = None  # formats that store the whole config
    vision_heads: int | None = None
    text_heads: int | None = None
    layer_norm_eps: float = 1e-5
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    preprocessing: dict[str, Any] = dataclasses.field(default_factory=dict)


class Format(abc.ABC):
    name: ClassVar[str]
    description: ClassVar[str]

    @abc.abstractmethod
    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        """Whether this file (container and unwrapped state dict) is in this format."""

    @abc.abstractmethod
    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        """The state dict in canonical names and what the format says about the model."""


def openai_to_canonical(sd: dict[str, Any], prefix: str = "") -> dict[str, torch.Tensor]:
    """OpenAI CLIP names (optionally under `prefix`) -> `clip.visual.*`, `clip.text.*`, `clip.logit_scale`."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(prefix) or not torch.is_tensor(value):
            continue
        name = key[len(prefix):]
        if name in OPENAI_EXTRA_KEYS:
            continue
        if name.startswith("visual.") or name == "logit_scale":
            out[f"clip.{name}"] = value
        elif name.startswith(OPENAI_TEXT_ROOTS):
            out[f"clip.text.{name}"] = value
        else:
            out[key] = value  # left for the shape check to report as unexpected
    return out


def has_openai_layout(sd: dict[str, Any], prefix: str = "") -> bool:
    return f"{prefix}visual.conv1.weight" in sd and f"{prefix}token_embedding.weight" in sd


# OpenAI's `clip.model.convert_weights` turns Conv/Linear weights and biases, the packed attention
# projections and `proj`/`text_projection` into fp16, and leaves LayerNorms, the embeddings and
# `logit_scale` in fp32. Training in fp32 or AMP saves all fp32, `model.half()` all fp16; only
# that function (or open_clip's `convert_weights_to_lp`, which pure-fp16 training rarely saves)
# leaves this exact split, so a state dict carrying it holds OpenAI weights.
_OPENAI_FP16 = re.compile(r"(^visual\.conv1\.weight|\.attn\.(in_proj_|out_proj\.)\w+|\.mlp\.c_(fc|proj)\.\w+"
                          r"|^visual\.proj|^text_projection)$")
_OPENAI_FP32 = re.compile(r"(\.ln_\w+\.(weight|bias)|ln_final\.\w+|class_embedding|positional_embedding"
                          r"|^token_embedding\.weight|^logit_scale)$")


def has_openai_dtypes(sd: dict[str, Any], prefix: str = "") -> bool:
    """Whether the CLIP tensors under `prefix` carry OpenAI's fp16/fp32 split exactly."""
    seen = {torch.float16: 0, torch.float32: 0}
    for key, value in sd.items():
        if not key.startswith(prefix) or not torch.is_tensor(value):
            continue
        name = key[len(prefix):]
        want = (torch.float16 if _OPENAI_FP16.search(name) else
                torch.float32 if _OPENAI_FP32.search(name) else None)
        if want is None:
            continue
        if value.dtype != want:
            return False
        seen[want] += 1
    return all(seen.values())


class VlrtFormat(Format):
    name = "vlrt"
    description = "vlrt's own checkpoint ({'format': 'vlrt-checkpoint', 'config', 'state_dict'})"

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return raw.data.get("format") == "vlrt-checkpoint"

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        cfg = ModelConfig.from_dict(raw.data.get("config", {}))
        return Converted(dict(sd), family=raw.data.get("family", "clip4clip"), activation=cfg.activation,
                         activation_source="config", config=cfg, settings=dict(raw.data.get("settings", {})))


class Clip4ClipFormat(Format):
    name = "clip4clip"
    description = "CLIP4Clip pytorch_model.bin.N (CLIP under 'clip.', meanP/seqLSTM/seqTransf head)"
    RENAMES = (("frame_position_embeddings.", "head.frame_position_embeddings."),
               ("transformerClip.", "head.transformer."), ("lstm_visual.", "head.lstm."))

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return has_openai_layout(sd, "clip.")

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        if any(k.startswith(("cross.", "similarity_dense.")) for k in sd):
            raise VlrtError(f"{raw.path}: a CLIP4Clip tightTransf checkpoint (cross encoder): its score "
                            "needs every video-text pair, so it cannot be indexed; export a meanP, "
                            "seqLSTM or seqTransf checkpoint")
        if "clip.visual.conv2.weight" in sd:
            raise VlrtError(f"{raw.path}: CLIP4Clip with 3D patch embedding (linear_patch=3d) is not supported yet")
        out = openai_to_canonical(sd, "clip.")
        is_seq = "transformerClip.resblocks.0.ln_1.weight" in sd or "lstm_visual.weight_ih_l0" in sd
        for key, value in sd.items():
            for old, new in self.RENAMES:
                # meanP checkpoints carry no temporal weights; a position table alone is unused.
                if key.startswith(old) and is_seq:
                    out[new + key[len(old):]] = value
        return Converted(out, family="clip4clip", activation="quick_gelu", activation_source="format")


class XClipFormat(Clip4ClipFormat):
    name = "xclip"
    description = ("X-CLIP checkpoint (CLIP4Clip's layout plus its similarity weights: global_mat_weight, "
                   "word_logit_weight, ...)")

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return has_openai_layout(sd, "clip.") and "global_mat_weight" in sd

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        return _with_scorer(super().convert(raw, sd), sd, "xclip", lambda k: k in XCLIP_MATRICES)


class DrlFormat(Clip4ClipFormat):
    name = "drl"
    description = "DRL checkpoint with weighted token-wise interaction (CLIP4Clip's layout plus text/video_weight_fc)"

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return has_openai_layout(sd, "clip.") and any(k.startswith(DRL_WEIGHT_MLPS) for k in sd)

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        return _with_scorer(super().convert(raw, sd), sd, "drl", lambda k: k.startswith(DRL_WEIGHT_MLPS))


XCLIP_MATRICES = frozenset(name for name, _ in XClipScorer.MATRICES)
DRL_WEIGHT_MLPS = ("text_weight_fc.", "video_weight_fc.")


def _with_scorer(conv: Converted, sd: dict[str, Any], family: str, is_scorer) -> Converted:
    """A CLIP4Clip-layout conversion plus the scorer's tensors under `scorer.`."""
    conv.state_dict.update({f"scorer.{k}": v for k, v in sd.items() if is_scorer(k) and torch.is_tensor(v)})
    conv.family = family
    return conv


class OpenAIFormat(Format):
    name = "openai"
    description = ("OpenAI CLIP: TorchScript archive, its state dict (extra keys), or a saved "
                   "model.state_dict() (OpenAI's fp16/fp32 split)")

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        if not has_openai_layout(sd):
            return False
        # An open_clip_config.json beside the weights states the model; it outranks the dtypes.
        return self._is_release(raw, sd) or (raw.open_clip_config is None and has_openai_dtypes(sd))

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        source = "format" if self._is_release(raw, sd) else "signature"
        return Converted(openai_to_canonical(sd), family="clip", activation="quick_gelu",
                         activation_source=source)

    @staticmethod
    def _is_release(raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return raw.container == "torchscript" or any(k in sd for k in OPENAI_EXTRA_KEYS)


class OpenClipFormat(Format):
    name = "open_clip"
    description = "open_clip state dict ('state_dict' wrapper, 'module.' prefix or .safetensors)"

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return has_openai_layout(sd)

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        sd = openai_to_canonical(sd)
        if raw.open_clip_config is None:
            # GELU vs QuickGELU leaves no trace in the weights.
            return Converted(sd, family="clip", activation=None, activation_source="unknown")
        # open_clip builds nn.GELU unless the model config sets quick_gelu (the "-quickgelu" models).
        model_cfg = raw.open_clip_config.get("model_cfg", {})
        pre = raw.open_clip_config.get("preprocess_cfg", {})
        vision_heads, text_heads = self._heads(raw, model_cfg, sd)
        return Converted(sd, family="clip", activation="quick_gelu" if model_cfg.get("quick_gelu") else "gelu",
                         activation_source="config", vision_heads=vision_heads, text_heads=text_heads,
                         preprocessing={k: pre[k] for k in ("mean", "std") if k in pre})

    @staticmethod
    def _heads(raw: RawCheckpoint, model_cfg: dict[str, Any], sd: dict[str, Any]) -> tuple[int | None, int | None]:
        """Attention heads as open_clip builds them: vision width // vision_cfg.head_width (default
        64), text_cfg.heads (default 8). ViT-H-14, ViT-g-14 and ViT-bigG-14 use 80-104-wide heads."""
        vision_cfg, text_cfg = model_cfg.get("vision_cfg", {}), model_cfg.get("text_cfg", {})
        head_width, text_heads = vision_cfg.get("head_width", 64), text_cfg.get("heads", 8)
        for name, value in (("vision_cfg.head_width", head_width), ("text_cfg.heads", text_heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise VlrtError(f"{raw.path}: open_clip_config.json: {name} is {value!r}, not a positive integer")
        conv = sd.get("clip.visual.conv1.weight")
        width = int(conv.shape[0]) if conv is not None else None
        if width is not None and width % head_width:
            raise VlrtError(f"{raw.path}: open_clip_config.json: vision_cfg.head_width {head_width} "
                            f"does not divide the vision width {width}")
        return (width // head_width if width else None), text_heads


class HuggingFaceFormat(Format):
    name = "hf"
    description = "Hugging Face CLIPModel directory (config.json + weights)"
    RENAMES = (
        (r"^vision_model\.embeddings\.class_embedding$", "clip.visual.class_embedding"),
        (r"^vision_model\.embeddings\.patch_embedding\.", "clip.visual.conv1."),
        (r"^vision_model\.embeddings\.position_embedding\.weight$", "clip.visual.positional_embedding"),
        (r"^vision_model\.pre_layrnorm\.", "clip.visual.ln_pre."),
        (r"^vision_model\.post_layernorm\.", "clip.visual.ln_post."),
        (r"^vision_model\.encoder\.layers\.", "clip.visual.transformer.resblocks."),
        (r"^text_model\.embeddings\.token_embedding\.", "clip.text.token_embedding."),
        (r"^text_model\.embeddings\.position_embedding\.weight$", "clip.text.positional_embedding"),
        (r"^text_model\.final_layer_norm\.", "clip.text.ln_final."),
        (r"^text_model\.encoder\.layers\.", "clip.text.transformer.resblocks."),
        (r"\.self_attn\.out_proj\.", ".attn.out_proj."),
        (r"\.layer_norm1\.", ".ln_1."),
        (r"\.layer_norm2\.", ".ln_2."),
        (r"\.mlp\.fc1\.", ".mlp.c_fc."),
        (r"\.mlp\.fc2\.", ".mlp.c_proj."),
        (r"^logit_scale$", "clip.logit_scale"),
    )

    def matches(self, raw: RawCheckpoint, sd: dict[str, Any]) -> bool:
        return raw.container == "hf-dir" or "vision_model.embeddings.patch_embedding.weight" in sd

    def convert(self, raw: RawCheckpoint, sd: dict[str, Any]) -> Converted:
        if raw.hf_config is None:
            raise VlrtError(f"{raw.path}: Hugging Face CLIP weights without their config.json; "
                            "export the model directory instead")
        vision, text = raw.hf_config.get("vision_config", {}), raw.hf_config.get("text_config", {})
        acts = {vision.get("hidden_act", "quick_gelu"), text.get("hidden_act", "quick_gelu")}
        if len(acts) != 1 or not acts <= {"quick_gelu", "gelu"}:
            raise VlrtError(f"{raw.path}: unsupported activation(s) {sorted(acts)} in config.json")
        eps = {vision.get("layer_norm_eps", 1e-5), text.get("layer_norm_eps", 1e-5)}
        if len(eps) != 1:
            raise VlrtError(f"{raw.path}: different LayerNorm eps in the two towers: {sorted(eps)}")
        return Converted(
            self._rename(sd), family="clip", activation=acts.pop(), activation_source="config",
            vision_heads=vision.get("num_attention_heads"), text_heads=text.get("num_attention_heads"),
            layer_norm_eps=float(eps.pop()), preprocessing=self._preprocessing(raw.hf_preprocessor),
        )

    def _rename(self, sd: dict[str, Any]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for key, value in sd.items():
            if key.endswith("position_ids"):
                continue  # an index buffer some versions save, not a weight
            if key in ("visual_projection.weight", "text_projection.weight"):
                name = "clip.visual.proj" if key.startswith("visual") else "clip.text.text_projection"
                out[name] = value.t()  # Linear stores (E, W); CLIP multiplies by (W, E)
                continue
            for pattern, repl in self.RENAMES:
                key = re.sub(pattern, repl, key)
            out[key] = value
        return self._pack_qkv(out)

    @staticmethod
    def _pack_qkv(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Separate q/k/v projections -> one packed in_proj, q first, as CLIP stores them."""
        out = {k: v for k, v in sd.items() if ".self_attn." not in k}
        blocks = {k.split(".self_attn.")[0] for k in sd if ".self_attn." in k}
        for block in blocks:
            for kind in ("weight", "bias"):
                parts = [sd.get(f"{block}.self_attn.{p}_proj.{kind}") for p in "qkv"]
                if any(p is None for p in parts):
                    raise VlrtError(f"inconsistent shapes: {block} lacks one of its q/k/v {kind}s")
                out[f"{block}.attn.in_proj_{kind}"] = torch.cat(parts, dim=0)
        return out

    @staticmethod
    def _preprocessing(pre: dict[str, Any] | None) -> dict[str, Any]:
        if not pre:
            return {}
        return {k: pre[key] for k, key in (("mean", "image_mean"), ("std", "image_std")) if key in pre}


FORMATS: tuple[Format, ...] = (VlrtFormat(), XClipFormat(), DrlFormat(), Clip4ClipFormat(), HuggingFaceFormat(),
                               OpenAIFormat(), OpenClipFormat())


def detect_format(raw: RawCheckpoint, sd: dict[str, Any]) -> Format:
    for fmt in FORMATS:
        if fmt.matches(raw, sd):
            return fmt
    sample = ", ".join(list(sd)[:4]) or "no keys"
    supported = "; ".join(f"{f.name}: {f.description}" for f in FORMATS)
    raise VlrtError(f"{raw.path}: unknown checkpoint layout (keys: {sample}); supported formats: {supported}")


def get_format(name: str) -> Format:
    for fmt in FORMATS:
        if fmt.name == name:
            return fmt
    raise VlrtError(f"unknown format {name!r}; known: {', '.join(f.name for f in FORMATS)}")
