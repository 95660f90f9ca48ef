"""Load any supported checkpoint into the reference model, with every decision recorded.

`load_checkpoint` reads the file safely, detects format, family and head, infers the geometry from
tensor shapes, checks every tensor against the model, and resolves the settings that weights do
not store (activation, max frames, max words) from flags, the format or the family's defaults.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from vlrt.errors import VlrtError
from vlrt.export.formats import Converted, detect_format, get_format
from vlrt.export.infer import check_shapes, infer_config, infer_scorer, shape_of
from vlrt.export.read import read_checkpoint
from vlrt.families import Family, get_family, get_head
from vlrt.models import ModelConfig, VideoTextModel

log = logging.getLogger("vlrt.export")

# With no config, flag or dtype signature, GELU and QuickGELU weights look alike. QuickGELU is the
# guess because the checkpoints this tool exists for (CLIP4Clip, X-CLIP, DRL and most other
# video-text retrieval work) fine-tune OpenAI's CLIP, and keep its activation.
ACTIVATION_GUESS = "quick_gelu"


@dataclasses.dataclass
class LoadedCheckpoint:
    model: VideoTextModel  # fp32, eval mode
    format: str
    family: Family
    activation_source: str  # "format" | "signature" | "config" | "flag" | "guess"
    max_frames: int
    max_words: int
    sampling: dict[str, Any]
    preprocessing: dict[str, Any]
    source: Path
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def config(self) -> ModelConfig:
        return self.model.config


def unwrap(data: dict[str, Any]) -> dict[str, Any]:
    """The state dict inside a training checkpoint, without a DataParallel 'module.' prefix."""
    inner = next((data[k] for k in ("state_dict", "model") if isinstance(data.get(k), dict)), data)
    tensors = [k for k, v in inner.items() if torch.is_tensor(v)]
    if tensors and all(k.startswith("module.") for k in tensors):
        inner = {k[len("module."):]: v for k, v in inner.items()}
    return inner


def load_checkpoint(
    path: str | Path,
    *,
    format: str | None = None,
    family: str | None = None,
    activation: str | None = None,
    max_frames: int | None = None,
    max_words: int | None = None,
    trust_pickle: bool = False,
) -> LoadedCheckpoint:
    raw = read_checkpoint(path, trust_pickle=trust_pickle)
    sd = unwrap(raw.data)
    fmt = get_format(format) if format else detect_format(raw, sd)
    warnings: list[str] = []
    try:
        conv = fmt.convert(raw, sd)
        act, act_source = _resolve_activation(conv, activation, warnings, raw.path)
        cfg = _model_config(conv, act)
        fam = get_family(family or conv.family)
        if fam.embedding == "multi-vector" and cfg.scorer is None:
            cfg = cfg.replace(scorer=infer_scorer(fam.name, conv.state_dict))
        elif fam.embedding == "vector" and cfg.scorer is not None:
            raise VlrtError(f"the {fam.name} family scores by a dot product; this checkpoint has a "
                            f"{cfg.scorer.type} scorer (family {conv.family})")
        if cfg.head.type not in fam.heads:
            raise VlrtError(f"family {fam.name!r} has no {cfg.head.type} head; pick one of its heads "
                            f"{fam.heads} or another --family")
        model = _build(fam, cfg, conv.state_dict)
    except VlrtError as exc:  # name the file, as every other loading error does
        if str(exc).startswith(str(raw.path)):
            raise
        raise VlrtError(f"{raw.path}: {exc}") from None
    words = _resolve_words(_fixed("max_words", max_words, cfg.scorer.words if cfg.scorer else 0)
                           or conv.settings.get("max_words") or fam.max_words, cfg)
    frames = (_fixed("max_frames", max_frames, cfg.scorer.frames if cfg.scorer else 0)
              or conv.settings.get("max_frames") or fam.max_frames)
    _check_frames(frames, cfg)
    pre = fam.preprocessing(cfg.vision.image_size, **conv.preprocessing)
    pre.update(conv.settings.get("preprocessing", {}))
    sampling = dict(conv.settings.get("sampling", fam.sampling))
    return LoadedCheckpoint(model, fmt.name, fam, act_source, frames, words, sampling, pre, raw.path, warnings)


def _resolve_activation(conv: Converted, flag: str | None, warnings: list[str], path: Path) -> tuple[str, str]:
    if flag:
        if conv.activation and flag != conv.activation:
            warnings.append(f"--activation {flag} overrides {conv.activation}, which the {conv.activation_source} states")
        return flag, "flag"
    if conv.activation:
        return conv.activation, conv.activation_source
    message = (f"{path}: the activation (GELU or QuickGELU) cannot be read from the weights; GUESSING "
               f"'{ACTIVATION_GUESS}' (OpenAI CLIP's, which most video-retrieval checkpoints start from). "
               "A wrong guess silently changes every embedding: pass --activation gelu for weights "
               "trained from scratch with open_clip (e.g. its LAION models), or --activation "
               "quick_gelu to silence this")
    log.warning(message)
    warnings.append(message)
    return ACTIVATION_GUESS, "guess"


def _model_config(conv: Converted, activation: str) -> ModelConfig:
    if conv.config is not None:
        return conv.config.replace(activation=activation)
    cfg = infer_config(conv.state_dict, activation=activation, vision_heads=conv.vision_heads,
                       text_heads=conv.text_heads, layer_norm_eps=conv.layer_norm_eps)
    return with_mlp_widths(cfg, conv.state_dict)


def with_mlp_widths(cfg: ModelConfig, shapes: dict[str, Any]) -> ModelConfig:
    """`cfg` with each tower's MLP width read from its first block's `c_fc` rows.

    Not every CLIP uses 4 x width (open_clip's ViT-g-14: mlp_ratio 4.3637, ViT-bigG-14: 4.9231);
    `check_shapes` then holds every other block to the same width.
    """
    towers = {}
    for name, prefix in (("vision", "clip.visual"), ("text", "clip.text")):
        c_fc = shapes.get(f"{prefix}.transformer.resblocks.0.mlp.c_fc.weight")
        if c_fc is not None:
            towers[name] = dataclasses.replace(getattr(cfg, name), mlp_width=int(shape_of(c_fc)[0]))
    return cfg.replace(**towers)


def _build(family: Family, cfg: ModelConfig, state_dict: dict[str, torch.Tensor]) -> VideoTextModel:
    check_shapes(cfg, state_dict)
    model = family.reference_model()(cfg)
    # Mixed fp16/fp32 checkpoints (OpenAI's release) become fp32: the reference is fp32.
    model.load_state_dict({k: v.float() for k, v in state_dict.items()}, strict=True)
    return model.eval()


def _fixed(name: str, asked: int | None, fixed: int) -> int | None:
    """A count the scorer's shapes fix (X-CLIP's word and frame slots) wins; a flag may only repeat it."""
    if fixed and asked and asked != fixed:
        raise VlrtError(f"--{name.split('_')[1]} {asked}: this checkpoint's scorer takes exactly {fixed} {name[4:]}")
    return fixed or asked


def _resolve_words(words: int | None, cfg: ModelConfig) -> int:
    words = words or cfg.text.context_length
    if not 3 <= words <= cfg.text.context_length:
        raise VlrtError(f"--words {words} is outside 3..{cfg.text.context_length} (the text tower's context length)")
    return words


def _check_frames(frames: int, cfg: ModelConfig) -> None:
    limit = cfg.head.max_positions if get_head(cfg.head.type).positional else None
    if frames < 1 or (limit is not None and frames > limit):
        raise VlrtError(f"--frames {frames} is outside 1..{limit or 'any'} (the head's frame positions)")
