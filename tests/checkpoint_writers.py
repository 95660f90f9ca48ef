"""Tiny random-weight checkpoints in the key layouts that real users' files have.

vlrt's loaders (``vlrt/export``) have to read checkpoints produced by other people's code. These
writers reproduce those files' *layouts* -- key names, key order, shapes, dtypes, container
format and non-weight extras -- with small random weights, so loaders can be tested without
downloading anything. Nothing here imports ``vlrt``: the writers are an independent description
of the formats, written from the upstream sources, not from vlrt's own model code.

Layouts and the sources they were checked against (read, not copied):

* **OpenAI CLIP** (``openai_shapes``, ``openai_state_dict``, ``write_openai_torchscript``,
  ``write_openai_state_dict``): ``openai/CLIP`` ``clip/model.py`` -- ``VisionTransformer``
  (``conv1`` without bias, ``class_embedding``, ``positional_embedding``, ``ln_pre``,
  ``transformer.resblocks``, ``ln_post``, ``proj``), ``ResidualAttentionBlock``
  (``nn.MultiheadAttention`` -> ``in_proj_weight``/``in_proj_bias``/``out_proj.{weight,bias}``,
  ``ln_1``, ``mlp.c_fc``, ``mlp.c_proj``, ``ln_2``), ``CLIP`` (``token_embedding``,
  ``positional_embedding``, ``ln_final``, ``text_projection``, ``logit_scale``), heads =
  width // 64, and ``convert_weights``: Conv/Linear weights+biases (``attn.out_proj`` is a
  Linear subclass), ``in_proj_weight``/``in_proj_bias``, and the ``proj``/``text_projection``
  parameters become fp16; LayerNorms, ``class_embedding``, both ``positional_embedding``\\s,
  ``token_embedding`` (an ``nn.Embedding``, not converted) and ``logit_scale`` stay fp32.
  ``build_model`` deletes ``input_resolution``/``context_length``/``vocab_size`` from the
  released archives' state dicts, so those are written as int64 scalars. The archive is a real
  TorchScript zip: ``torch.load(..., weights_only=True)`` refuses it (``weights_only=False``
  dispatches to ``torch.jit.load``), as with the released ``ViT-B-32.pt``. Key order is
  PyTorch's state-dict order for that module tree (module's own parameters, then its buffers,
  then children in registration order).
* **open_clip** (``write_open_clip``): ``mlfoundations/open_clip`` -- same key names and
  shapes as OpenAI for the standard ViT CLIP (the causal ``attn_mask`` is a non-persistent
  buffer, so not saved), fp32, but each resblock lists ``ln_1, attn, ln_2, mlp`` (its
  registration order). Cross-checked against open_clip_torch 3.3.0 itself (installed outside
  the repo): ``create_model("ViT-B-32-quickgelu" / "ViT-B-16" / "ViT-L-14" / "ViT-L-14-336")``
  state-dict keys, order and shapes equal ``open_clip_state_dict``/``openai_shapes``, and
  ``build_model_from_openai_state_dict`` / ``load_openai_model`` load our OpenAI dict and
  TorchScript archive strictly; training checkpoints (``open_clip_train`` ``main.py``) are
  ``{"epoch", "name", "state_dict", "optimizer"}`` (+ ``"scaler"`` under AMP), with a
  ``module.`` prefix when the model was DDP-wrapped (its resume code strips it).
* **Hugging Face** (``write_hf_dir``, ``hf_reference_features``): made by ``transformers``
  itself. The text config's token ids mirror the real ``openai/clip-vit-base-patch32``
  ``config.json`` (``bos_token_id=0, eos_token_id=2, pad_token_id=1``) -- the legacy values
  that make ``CLIPTextTransformer`` pool at ``input_ids.argmax(-1)`` exactly as OpenAI does;
  ``legacy_token_ids=False`` gives today's CLIPTextConfig defaults (49406/49407/1), which pool
  at the first ``49407`` instead. HF's own key names differ from OpenAI's: ``q_proj``/``k_proj``/
  ``v_proj`` instead of a fused ``in_proj``, ``vision_model.pre_layrnorm`` (sic),
  ``layer_norm1``/``layer_norm2``, ``mlp.fc1``/``fc2``, and ``visual_projection.weight`` /
  ``text_projection.weight`` are ``nn.Linear`` weights, i.e. (embed, width), the transpose of
  OpenAI's ``proj``/``text_projection``. As a one-off check (not part of the test suite),
  ``hf_reference_features`` on an HF dir built from ``openai_state_dict`` weights mapped by
  hand agreed with open_clip's ``encode_image``/``encode_text`` to 1e-6.
* **CLIP4Clip** (``clip4clip_state_dict``, ``write_clip4clip``): ``ArrowLuo/CLIP4Clip``
  ``modules/modeling.py``, ``modules/module_clip.py``, ``modules/module_cross.py``,
  ``main_task_retrieval.py``. ``save_model`` writes ``torch.save(model.state_dict())`` to
  ``pytorch_model.bin.<epoch>``. ``CLIP4Clip.__init__`` builds ``self.clip`` and then calls
  ``convert_weights(self.clip)`` (its copy also converts ``nn.Conv3d``), and nothing converts it
  back before training/saving, so the ``clip.*`` tensors of a real checkpoint are *mixed*
  fp16/fp32 exactly like OpenAI's (``fp16=False`` gives an all-fp32 variant). The heads are
  fp32: ``frame_position_embeddings`` (``nn.Embedding``; note the code sets
  ``cross_config.max_position_embeddings = context_length`` *before* creating it, so its real
  row count is the CLIP context length, 77), ``transformerClip.resblocks.{i}`` (module_cross's
  ``ResidualAttentionBlock``; its ``ln_1``/``ln_2`` are until_module's TF-style LayerNorm with
  eps=1e-12, same key names), ``lstm_visual`` (``nn.LSTM``, 1 layer, unidirectional). The
  ``--loose_type`` heads carry no ``cross.*``/``similarity_dense`` keys and no OpenAI extras.

* **X-CLIP** (``xclip_state_dict``, ``write_xclip``): ``xuguohai/X-CLIP``
  ``modules/modeling_xclip.py``. A ``--loose_type`` run (its released scripts) builds
  CLIP4Clip's ``clip`` and temporal head and eight square ``nn.Parameter`` matrices on the model
  itself: ``global_mat_weight`` and ``local_mat_weight`` (embed x embed), ``word_logit_weight``,
  ``word_mat_weight``, ``word_mat_weight2`` (max_words x max_words), ``frame_logit_weight``,
  ``frame_mat_weight``, ``frame_mat_weight2`` (max_frames x max_frames), all initialised to the
  identity and kept fp32. A module's own parameters come first in its state dict, so these
  eight keys precede ``clip.*``; ``convert_weights(self.clip)`` makes ``clip.*`` mixed fp16/fp32
  as in CLIP4Clip. Checkpoints are ``torch.save(model.state_dict())`` as ``pytorch_model.bin.<epoch>``.
* **DRL** (``drl_state_dict``, ``write_drl``): ``foolwood/DRL`` ``tvr/models/modeling.py``. With
  ``--interaction wti`` the model registers ``clip``, then ``text_weight_fc`` and
  ``video_weight_fc`` (``--wti_arch 1``: one ``nn.Linear(width, 1)``; ``2``: ``Linear(width,
  width), ReLU, Linear(width, 1)`` in an ``nn.Sequential``, keys ``.0.`` and ``.2.``; ``3``: one
  more Linear/ReLU pair, ``.4.``), then ``frame_position_embeddings`` (context length rows) and
  ``transformerClip`` (``cross_config.num_hidden_layers``, 4 by default) for ``--agg_module
  seqTransf``. ``convert_weights(self.clip)`` runs only when CUDA is available, which it is for
  every trained checkpoint (``fp16=False`` gives the CPU variant).

Weights are random but deterministic in ``seed``: LayerNorm weights are 1 +/- 0.1 and biases are
small non-zero values, so a dropped or swapped LayerNorm/bias mapping changes the outputs.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

__all__ = [
    "OPENAI_EXTRA_KEYS",
    "TINY",
    "TINY_C4C",
    "VIT_B_16",
    "VIT_B_32",
    "VIT_L_14",
    "VIT_L_14_336",
    "Geometry",
    "clip4clip_state_dict",
    "count_parameters",
    "hf_config_kwargs",
    "hf_model_features",
    "hf_reference_features",
    "open_clip_state_dict",
    "openai_shapes",
    "openai_state_dict",
    "write_clip4clip",
    "write_drl",
    "write_xclip",
    "drl_state_dict",
    "xclip_state_dict",
    "write_hf_dir",
    "write_open_clip",
    "write_open_clip_dir",
    "write_openai_state_dict",
    "write_openai_torchscript",
]


# --------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    embed_dim: int = 32
    image_size: int = 32
    patch_size: int = 8
    vision_width: int = 128
    vision_layers: int = 2
    text_width: int = 128
    text_layers: int = 2
    context_length: int = 77
    vocab_size: int = 49408
    # MLP hidden widths; 0 means CLIP's 4 x width. open_clip's ViT-g-14 / ViT-bigG-14 differ.
    vision_mlp: int = 0
    text_mlp: int = 0
    # OpenAI derives heads as width // 64; open_clip configs state vision_cfg.head_width and
    # text_cfg.heads, Hugging Face configs num_attention_heads.
    vision_head_width: int = 64
    text_head_width: int = 64

    @property
    def vision_heads(self) -> int:
        return self.vision_width // self.vision_head_width

    @property
    def text_heads(self) -> int:
        return self.text_width // self.text_head_width

    @property
    def vision_hidden(self) -> int:
        return self.vision_mlp or 4 * self.vision_width

    @property
    def text_hidden(self) -> int:
        return self.text_mlp or 4 * self.text_width

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Vision tokens: one per patch plus the class token."""
        return self.grid**2 + 1


TINY = Geometry()
# The published OpenAI ViT geometries (clip/model.py build_model derives these from the archives).
VIT_B_32 = Geometry(
    embed_dim=512, image_size=224, patch_size=32, vision_width=768, vision_layers=12,
    text_width=512, text_layers=12,
)
VIT_B_16 = Geometry(
    embed_dim=512, image_size=224, patch_size=16, vision_width=768, vision_layers=12,
    text_width=512, text_layers=12,
)
VIT_L_14 = Geometry(
    embed_dim=768, image_size=224, patch_size=14, vision_width=1024, vision_layers=24,
    text_width=768, text_layers=12,
)
VIT_L_14_336 = Geometry(
    embed_dim=768, image_size=336, patch_size=14, vision_width=1024, vision_layers=24,
    text_width=768, text_layers=12,
)

# CLIP4Clip's seqTransf/seqLSTM heads run on the *projected* frame features (embed_dim wide) but
# are built text_width wide (transformerClip) / cross_config.hidden_size wide (=512 in
# cross-base/cross_config.json: frame_position_embeddings, lstm_visual). The real models only
# work because ViT-B has embed_dim == text_width == 512. TINY (embed 32, text width 128) has the
# right *layout* but a real CLIP4Clip forward on it would fail; use this geometry wherever a
# seq head must actually run.
TINY_C4C = Geometry(embed_dim=128)

# Non-weight keys the released OpenAI archives' state dicts carry (int64 scalars).
OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


# --------------------------------------------------------------------------------------------
# Layout specs: ordered (key, shape, kind) rows. `kind` picks the init and the fp16 rule.
# --------------------------------------------------------------------------------------------

_Spec = list[tuple[str, tuple[int, ...], str]]

# Kinds that OpenAI's convert_weights() turns into fp16.
_FP16_KINDS = frozenset({"linear_w", "linear_b", "conv_w", "proj"})


def _resblock_spec(prefix: str, width: int, hidden: int | None = None) -> _Spec:
    """OpenAI ResidualAttentionBlock (also CLIP4Clip's module_cross copy); `hidden` is the MLP
    width (open_clip's mlp_ratio), 4 x width unless given."""
    hidden = hidden or 4 * width
    return [
        (f"{prefix}attn.in_proj_weight", (3 * width, width), "linear_w"),
        (f"{prefix}attn.in_proj_bias", (3 * width,), "linear_b"),
        (f"{prefix}attn.out_proj.weight", (width, width), "linear_w"),
        (f"{prefix}attn.out_proj.bias", (width,), "linear_b"),
        (f"{prefix}ln_1.weight", (width,), "ln_w"),
        (f"{prefix}ln_1.bias", (width,), "ln_b"),
        (f"{prefix}mlp.c_fc.weight", (hidden, width), "linear_w"),
        (f"{prefix}mlp.c_fc.bias", (hidden,), "linear_b"),
        (f"{prefix}mlp.c_proj.weight", (width, hidden), "linear_w"),
        (f"{prefix}mlp.c_proj.bias", (width,), "linear_b"),
        (f"{prefix}ln_2.weight", (width,), "ln_w"),
        (f"{prefix}ln_2.bias", (width,), "ln_b"),
    ]


def _openai_spec(geom: Geometry) -> _Spec:
    vw, tw = geom.vision_width, geom.text_width
    spec: _Spec = [
        # CLIP's own parameters, in registration order.
        ("positional_embedding", (geom.context_length, tw), "text_pos"),
        ("text_projection", (tw, geom.embed_dim), "proj"),
        ("logit_scale", (), "logit_scale"),
        # visual: VisionTransformer's own parameters, then conv1, ln_pre, transformer, ln_post.
        ("visual.class_embedding", (vw,), "vis_embed"),
        ("visual.positional_embedding", (geom.num_positions, vw), "vis_embed"),
        ("visual.proj", (vw, geom.embed_dim), "proj"),
        ("visual.conv1.weight", (vw, 3, geom.patch_size, geom.patch_size), "conv_w"),
        ("visual.ln_pre.weight", (vw,), "ln_w"),
        ("visual.ln_pre.bias", (vw,), "ln_b"),
    ]
    for i in range(geom.vision_layers):
        spec += _resblock_spec(f"visual.transformer.resblocks.{i}.", vw, geom.vision_hidden)
    spec += [
        ("visual.ln_post.weight", (vw,), "ln_w"),
        ("visual.ln_post.bias", (vw,), "ln_b"),
    ]
    for i in range(geom.text_layers):
        spec += _resblock_spec(f"transformer.resblocks.{i}.", tw, geom.text_hidden)
    spec += [
        ("token_embedding.weight", (geom.vocab_size, tw), "token_embed"),
        ("ln_final.weight", (tw,), "ln_w"),
        ("ln_final.bias", (tw,), "ln_b"),
    ]
    return spec


def _init_tensor(shape: tuple[int, ...], kind: str, gen: torch.Generator) -> Tensor:
    def randn() -> Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32)

    if kind == "ln_w":
        return 1.0 + 0.1 * (2.0 * torch.rand(shape, generator=gen) - 1.0)
    if kind in ("ln_b", "linear_b", "linear_w", "conv_w", "token_embed", "frame_pos"):
        return 0.02 * randn()
    if kind == "text_pos":
        return 0.01 * randn()
    if kind == "vis_embed":
        # OpenAI: class/positional embeddings ~ width ** -0.5 * randn; width is the last dim.
        return shape[-1] ** -0.5 * randn()
    if kind == "proj":
        # visual.proj (width, embed) and text_projection (width, embed): width ** -0.5 * randn.
        return shape[0] ** -0.5 * randn()
    if kind == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07), dtype=torch.float32)
    if kind == "lstm":
        # nn.LSTM's default: U(-1/sqrt(hidden), 1/sqrt(hidden)); every LSTM tensor has 4*hidden rows.
        hidden = shape[0] // 4
        k = hidden**-0.5
        return k * (2.0 * torch.rand(shape, generator=gen) - 1.0)
    raise ValueError(f"unknown kind {kind!r}")


def _materialize(spec: _Spec, gen: torch.Generator, *, fp16: bool) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for key, shape, kind in spec:
        t = _init_tensor(shape, kind, gen)
        if fp16 and kind in _FP16_KINDS:
            t = t.half()
        out[key] = t.contiguous()
    return out


def _extras(geom: Geometry) -> dict[str, Tensor]:
    return {
        "input_resolution": torch.tensor(geom.image_size, dtype=torch.int64),
        "context_length": torch.tensor(geom.context_length, dtype=torch.int64),
        "vocab_size": torch.tensor(geom.vocab_size, dtype=torch.int64),
    }


def _with_extras(sd: dict[str, Tensor], geom: Geometry) -> dict[str, Tensor]:
    """Insert the extras where a module tree puts root buffers: after the root parameters."""
    root_params = [k for k in sd if "." not in k]
    out = {k: sd[k] for k in root_params}
    out.update(_extras(geom))
    out.update({k: v for k, v in sd.items() if "." in k})
    return out


# --------------------------------------------------------------------------------------------
# OpenAI CLIP
# --------------------------------------------------------------------------------------------


def openai_shapes(geom: Geometry = TINY) -> dict[str, tuple[int, ...]]:
    """Exact key names and shapes of an OpenAI CLIP ViT state dict (weights only, no extras)."""
    return {key: shape for key, shape, _ in _openai_spec(geom)}


def count_parameters(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes.values())


def openai_state_dict(
    geom: Geometry = TINY, seed: int = 0, *, fp16: bool = True, extra_keys: bool = True
) -> dict[str, Tensor]:
    """Random OpenAI-layout state dict.

    ``fp16=True`` applies OpenAI's ``convert_weights`` dtype split (what the released archives
    hold); ``fp16=False`` keeps everything fp32 with the *same underlying values* before
    rounding. ``extra_keys`` adds ``input_resolution``/``context_length``/``vocab_size``.
    """
    gen = torch.Generator().manual_seed(seed)
    sd = _materialize(_openai_spec(geom), gen, fp16=fp16)
    return _with_extras(sd, geom) if extra_keys else sd


class _Node(nn.Module):
    """A bare container; only the root needs a forward for TorchScript."""


class _Root(nn.Module):
    def forward(self) -> Tensor:
        return self.logit_scale  # type: ignore[return-value]


def _module_tree(sd: dict[str, Tensor], buffer_keys: frozenset[str]) -> nn.Module:
    """Build a module tree whose state_dict() reproduces ``sd`` (keys, order, dtypes, values)."""
    root = _Root()
    for key, value in sd.items():
        *path, leaf = key.split(".")
        mod: nn.Module = root
        for part in path:
            child = mod._modules.get(part)
            if child is None:
                child = _Node()
                mod.add_module(part, child)
            mod = child
        if key in buffer_keys:
            mod.register_buffer(leaf, value.clone())
        else:
            mod.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
    return root


def write_openai_torchscript(path: str | Path, geom: Geometry = TINY, seed: int = 0) -> Path:
    """A real TorchScript archive (like ``ViT-B-32.pt``) whose ``torch.jit.load(path).state_dict()``
    equals ``openai_state_dict(geom, seed)`` (fp16/fp32 split and the three int64 extras)."""
    path = Path(path)
    sd = openai_state_dict(geom, seed)
    root = _module_tree(sd, frozenset(OPENAI_EXTRA_KEYS))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.* is deprecated in 2.x
        scripted = torch.jit.script(root)
        torch.jit.save(scripted, str(path))
    return path


def write_openai_state_dict(path: str | Path, geom: Geometry = TINY, seed: int = 0, *,
                            extra_keys: bool = True) -> Path:
    """``torch.save`` of the plain OpenAI state dict (mixed fp16/fp32). ``extra_keys=True``: the
    released archive's state dict (extras included); ``extra_keys=False``: what
    ``torch.save(model.state_dict())`` writes for a model from ``clip.load`` (``build_model``
    deleted the extras), the form fine-tuning code saves."""
    path = Path(path)
    torch.save(openai_state_dict(geom, seed, extra_keys=extra_keys), path)
    return path


# --------------------------------------------------------------------------------------------
# open_clip
# --------------------------------------------------------------------------------------------


_OPEN_CLIP_BLOCK_RANK = {"ln_1": 0, "attn": 1, "ln_2": 2, "mlp": 3}


def _open_clip_order(keys: list[str]) -> list[str]:
    """open_clip's ResidualAttentionBlock registers ln_1, attn, ln_2, mlp (OpenAI: attn, ln_1,
    mlp, ln_2), so its state dicts list each block's keys in that order."""
    out: list[str] = []
    done: set[str] = set()
    for key in keys:
        if ".resblocks." not in key:
            out.append(key)
            continue
        head, rest = key.split(".resblocks.", 1)
        block = f"{head}.resblocks.{rest.split('.', 1)[0]}."
        if block in done:
            continue
        done.add(block)
        members = [k for k in keys if k.startswith(block)]
        members.sort(key=lambda k: _OPEN_CLIP_BLOCK_RANK[k[len(block):].split(".", 1)[0]])
        out.extend(members)
    return out


def open_clip_state_dict(geom: Geometry = TINY, seed: int = 0) -> dict[str, Tensor]:
    """open_clip's ViT CLIP state dict: OpenAI key names and values (same seed -> same values as
    ``openai_state_dict(geom, seed, fp16=False)``), all fp32, no extras, open_clip key order."""
    sd = openai_state_dict(geom, seed, fp16=False, extra_keys=False)
    return {k: sd[k] for k in _open_clip_order(list(sd))}


def _fake_adamw_state(sd: dict[str, Tensor]) -> dict:
    """A small optimizer.state_dict()-shaped dict (AdamW, open_clip's two param groups)."""
    keys = list(sd)
    gain_or_bias = [i for i, k in enumerate(keys) if sd[k].ndim < 2 or "ln" in k or "bias" in k
                    or "logit_scale" in k]
    rest = [i for i in range(len(keys)) if i not in set(gain_or_bias)]
    state = {}
    for i in (gain_or_bias[:1] + rest[:1]):
        p = sd[keys[i]]
        state[i] = {
            "step": torch.tensor(3.0),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p),
        }
    common = {"lr": 5e-4, "betas": (0.9, 0.98), "eps": 1e-6, "amsgrad": False,
              "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
              "fused": None}
    return {
        "state": state,
        "param_groups": [
            {**common, "weight_decay": 0.0, "initial_lr": 5e-4, "params": gain_or_bias},
            {**common, "weight_decay": 0.2, "initial_lr": 5e-4, "params": rest},
        ],
    }


def write_open_clip(
    path: str | Path,
    geom: Geometry = TINY,
    seed: int = 0,
    *,
    wrapper: bool = True,
    module_prefix: bool = False,
    safetensors: bool = False,
    scaler: bool = False,
) -> Path:
    """open_clip checkpoint.

    * ``wrapper=True``: ``{"epoch": 3, "name": "tiny", "state_dict": sd, "optimizer": {...}}``
      (plus ``"scaler"`` if ``scaler=True``, as AMP training adds), the training-loop form.
      ``wrapper=False``: the bare state dict (the released ``open_clip_pytorch_model.bin`` form).
    * ``module_prefix=True``: every key prefixed with ``module.`` (saved from a DDP wrapper).
    * ``safetensors=True``: ``safetensors.torch.save_file`` of the bare state dict (no wrapper).
    """
    path = Path(path)
    sd = open_clip_state_dict(geom, seed)
    if module_prefix:
        sd = {f"module.{k}": v for k, v in sd.items()}
    if safetensors:
        from safetensors.torch import save_file

        save_file(sd, str(path), metadata={"format": "pt"})
        return path
    if not wrapper:
        torch.save(sd, path)
        return path
    ckpt: dict = {"epoch": 3, "name": "tiny", "state_dict": sd, "optimizer": _fake_adamw_state(sd)}
    if scaler:
        ckpt["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                          "growth_interval": 2000, "_growth_tracker": 0}
    torch.save(ckpt, path)
    return path


def write_open_clip_dir(path: str | Path, geom: Geometry = TINY, seed: int = 0, *, quick_gelu: bool = True,
                        safetensors: bool = True, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)) -> Path:
    """An open_clip model directory as open_clip's hub upload writes it: ``open_clip_config.json``
    (``model_cfg`` with ``quick_gelu`` set only for "-quickgelu" models, ``preprocess_cfg``) beside
    ``open_clip_model.safetensors`` or ``open_clip_pytorch_model.bin``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vision_cfg = {"image_size": geom.image_size, "layers": geom.vision_layers,
                  "width": geom.vision_width, "patch_size": geom.patch_size}
    text_cfg = {"context_length": geom.context_length, "vocab_size": geom.vocab_size,
                "width": geom.text_width, "heads": geom.text_heads, "layers": geom.text_layers}
    # Written only where they differ from open_clip's defaults, as its model configs do.
    if geom.vision_head_width != 64:
        vision_cfg["head_width"] = geom.vision_head_width
    if geom.vision_mlp:
        vision_cfg["mlp_ratio"] = geom.vision_mlp / geom.vision_width
    if geom.text_mlp:
        text_cfg["mlp_ratio"] = geom.text_mlp / geom.text_width
    model_cfg = {"embed_dim": geom.embed_dim, "vision_cfg": vision_cfg, "text_cfg": text_cfg}
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {"mean": list(mean), "std": list(std), "interpolation": "bicubic",
                                 "resize_mode": "shortest"}}
    (path / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    name = "open_clip_model.safetensors" if safetensors else "open_clip_pytorch_model.bin"
    write_open_clip(path / name, geom, seed, wrapper=False, safetensors=safetensors)
    return path


# --------------------------------------------------------------------------------------------
# Hugging Face CLIPModel directory
# --------------------------------------------------------------------------------------------


def hf_config_kwargs(
    geom: Geometry = TINY, *, hidden_act: str = "quick_gelu", legacy_token_ids: bool = True
) -> dict:
    """``CLIPConfig(**kwargs)`` arguments for ``geom``, mirroring openai/clip-vit-* config.json."""
    if legacy_token_ids:  # what the real openai/clip-vit-base-patch32 config.json holds
        token_ids = {"bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}
    else:  # today's CLIPTextConfig defaults
        token_ids = {"bos_token_id": 49406, "eos_token_id": 49407, "pad_token_id": 1}
    text_config = {
        "vocab_size": geom.vocab_size,
        "hidden_size": geom.text_width,
        "intermediate_size": geom.text_hidden,
        "projection_dim": geom.embed_dim,
        "num_hidden_layers": geom.text_layers,
        "num_attention_heads": geom.text_heads,
        "max_position_embeddings": geom.context_length,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        **token_ids,
    }
    vision_config = {
        "hidden_size": geom.vision_width,
        "intermediate_size": geom.vision_hidden,
        "projection_dim": geom.embed_dim,
        "num_hidden_layers": geom.vision_layers,
        "num_attention_heads": geom.vision_heads,
        "num_channels": 3,
        "image_size": geom.image_size,
        "patch_size": geom.patch_size,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
    }
    return {
        "text_config": text_config,
        "vision_config": vision_config,
        "projection_dim": geom.embed_dim,
        "logit_scale_init_value": 2.6592,
    }


def write_hf_dir(
    path: str | Path,
    geom: Geometry = TINY,
    seed: int = 0,
    *,
    hidden_act: str = "quick_gelu",
    safetensors: bool = True,
    legacy_token_ids: bool = True,
) -> Path:
    """A real ``CLIPModel.save_pretrained`` directory (``config.json`` + ``model.safetensors``).

    Random init under ``torch.manual_seed(seed)`` (global RNG state is restored afterwards),
    then LayerNorm weights/biases and any all-zero biases are perturbed away from 1/0.
    ``safetensors=False`` writes ``pytorch_model.bin`` instead (transformers 5 always writes
    safetensors from ``save_pretrained``, so the .bin is written with ``torch.save``).
    """
    from transformers import CLIPConfig, CLIPModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = CLIPConfig(**hf_config_kwargs(geom, hidden_act=hidden_act,
                                           legacy_token_ids=legacy_token_ids))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIPModel(config).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.copy_(_init_tensor(tuple(mod.weight.shape), "ln_w", gen))
                mod.bias.copy_(_init_tensor(tuple(mod.bias.shape), "ln_b", gen))
        for name, p in model.named_parameters():
            if name.endswith("bias") and not p.any():
                p.copy_(_init_tensor(tuple(p.shape), "linear_b", gen))
    model.save_pretrained(str(path))
    if not safetensors:
        st = path / "model.safetensors"
        if st.exists():
            st.unlink()
        torch.save({k: v.contiguous() for k, v in model.state_dict().items()},
                   path / "pytorch_model.bin")
    return path


def _features(out) -> Tensor:
    if isinstance(out, Tensor):  # transformers 4.x
        return out
    if hasattr(out, "pooler_output"):  # transformers 5.x: BaseModelOutputWithPooling
        return out.pooler_output
    if isinstance(out, tuple):  # return_dict=False: (last_hidden_state, pooler_output, ...)
        return out[1]
    raise TypeError(f"unexpected get_*_features output {type(out)!r}")


def hf_reference_features(
    path: str | Path, pixel_values: Tensor, input_ids: Tensor
) -> tuple[Tensor, Tensor]:
    """(image_features, text_features) from ``CLIPModel.from_pretrained(path)``: the projected,
    *unnormalized* embeddings HF's ``get_image_features``/``get_text_features`` return."""
    from transformers import CLIPModel

    return hf_model_features(CLIPModel.from_pretrained(str(path)), pixel_values, input_ids)


def hf_model_features(model: nn.Module, pixel_values: Tensor, input_ids: Tensor) -> tuple[Tensor, Tensor]:
    """``hf_reference_features`` for a ``CLIPModel`` already in memory."""
    model = model.eval()
    with torch.no_grad():
        image = _features(model.get_image_features(pixel_values=pixel_values.float()))
        text = _features(model.get_text_features(input_ids=input_ids.long()))
    return image.float(), text.float()


# --------------------------------------------------------------------------------------------
# CLIP4Clip
# --------------------------------------------------------------------------------------------

Clip4ClipHead = Literal["meanP", "seqTransf", "seqLSTM"]


def _clip4clip_head_spec(
    geom: Geometry, head: str, cross_layers: int, max_position_embeddings: int
) -> _Spec:
    width = geom.text_width
    spec: _Spec = []
    if head in ("seqTransf", "seqLSTM"):
        spec.append(("frame_position_embeddings.weight", (max_position_embeddings, width),
                     "frame_pos"))
    if head == "seqTransf":
        for i in range(cross_layers):
            spec += _resblock_spec(f"transformerClip.resblocks.{i}.", width)
    if head == "seqLSTM":
        spec += [
            ("lstm_visual.weight_ih_l0", (4 * width, width), "lstm"),
            ("lstm_visual.weight_hh_l0", (4 * width, width), "lstm"),
            ("lstm_visual.bias_ih_l0", (4 * width,), "lstm"),
            ("lstm_visual.bias_hh_l0", (4 * width,), "lstm"),
        ]
    return spec


def clip4clip_state_dict(
    geom: Geometry = TINY,
    seed: int = 0,
    *,
    head: Clip4ClipHead,
    cross_layers: int = 2,
    max_position_embeddings: int | None = None,
    fp16: bool = True,
    linear_patch: Literal["2d", "3d"] = "2d",
) -> dict[str, Tensor]:
    """CLIP4Clip ``model.state_dict()`` for a ``--loose_type`` run with ``--sim_header head``.

    ``clip.*`` carries the same values as ``openai_state_dict(geom, seed, fp16=fp16)`` (no
    extras). ``max_position_embeddings=None`` means the real value: the CLIP context length
    (modeling.py overwrites cross_config.max_position_embeddings with it before building
    ``frame_position_embeddings``). ``cross_layers`` is ``--cross_num_hidden_layers`` (its CLI
    default is 4). ``linear_patch="3d"`` adds ``clip.visual.conv2.weight`` (an fp16 Conv3d).
    """
    if head not in ("meanP", "seqTransf", "seqLSTM"):
        raise ValueError(f"head must be meanP, seqTransf or seqLSTM, not {head!r}")
    if linear_patch not in ("2d", "3d"):
        raise ValueError(f"linear_patch must be '2d' or '3d', not {linear_patch!r}")
    if max_position_embeddings is None:
        max_position_embeddings = geom.context_length
    gen = torch.Generator().manual_seed(seed)
    clip = _materialize(_openai_spec(geom), gen, fp16=fp16)
    heads = _materialize(
        _clip4clip_head_spec(geom, head, cross_layers, max_position_embeddings), gen, fp16=False
    )
    out: dict[str, Tensor] = {}
    for k, v in clip.items():
        out[f"clip.{k}"] = v
        if k == "visual.ln_post.bias" and linear_patch == "3d":
            # VisualTransformer registers conv2 after ln_post.
            p = geom.patch_size
            conv2 = 0.02 * torch.randn((geom.vision_width, 3, 3, p, p), generator=gen)
            out["clip.visual.conv2.weight"] = conv2.half() if fp16 else conv2
    out.update(heads)
    return out


def write_clip4clip(path: str | Path, geom: Geometry = TINY, seed: int = 0, **options: Any) -> Path:
    """``torch.save(model.state_dict(), "pytorch_model.bin.<epoch>")`` as CLIP4Clip's
    ``save_model`` does. If ``path`` is an existing directory, writes ``pytorch_model.bin.0``
    inside it."""
    path = Path(path)
    if path.is_dir():
        path = path / "pytorch_model.bin.0"
    torch.save(clip4clip_state_dict(geom, seed, **options), path)  # options: as clip4clip_state_dict
    return path


XCLIP_MATRICES = (
    ("global_mat_weight", "embed"), ("word_logit_weight", "words"), ("frame_logit_weight", "frames"),
    ("local_mat_weight", "embed"), ("frame_mat_weight", "frames"), ("word_mat_weight", "words"),
    ("frame_mat_weight2", "frames"), ("word_mat_weight2", "words"),
)


def xclip_state_dict(
    geom: Geometry = TINY, seed: int = 0, *, head: Clip4ClipHead = "seqTransf", max_words: int = 32,
    max_frames: int = 12, fp16: bool = True, cross_layers: int = 2,
) -> dict[str, Tensor]:
    """X-CLIP ``model.state_dict()`` for a ``--loose_type --sim_header head`` run: its eight
    similarity matrices (identity plus noise, as after training), then CLIP4Clip's keys."""
    gen = torch.Generator().manual_seed(seed + 1000)
    sizes = {"embed": geom.embed_dim, "words": max_words, "frames": max_frames}
    out: dict[str, Tensor] = {}
    for name, axis in XCLIP_MATRICES:
        n = sizes[axis]
        out[name] = torch.eye(n) + 0.05 * torch.randn((n, n), generator=gen)
    out.update(clip4clip_state_dict(geom, seed, head=head, fp16=fp16, cross_layers=cross_layers))
    return out


def drl_state_dict(
    geom: Geometry = TINY_C4C, seed: int = 0, *, head: Clip4ClipHead = "seqTransf", wti_arch: int = 2,
    fp16: bool = True, cross_layers: int = 4,
) -> dict[str, Tensor]:
    """DRL ``model.state_dict()`` for ``--interaction wti --wti_arch N --agg_module head``
    (``head="meanP"`` is its ``--agg_module None``). The weight MLPs are ``transformer_width``
    wide and run on the projected features, so embed_dim must equal the text width."""
    if wti_arch not in (1, 2, 3):
        raise ValueError(f"wti_arch must be 1, 2 or 3, not {wti_arch!r}")
    if geom.embed_dim != geom.text_width:
        raise ValueError("DRL's weight MLPs need embed_dim == text_width")
    base = clip4clip_state_dict(geom, seed, head=head, fp16=fp16, cross_layers=cross_layers)
    gen = torch.Generator().manual_seed(seed + 2000)
    width = geom.text_width
    mlps: dict[str, Tensor] = {}
    for side in ("text", "video"):
        dims = [width] * wti_arch + [1]
        for layer in range(wti_arch):
            prefix = f"{side}_weight_fc." + ("" if wti_arch == 1 else f"{2 * layer}.")
            mlps[prefix + "weight"] = 0.2 * torch.randn((dims[layer + 1], dims[layer]), generator=gen)
            mlps[prefix + "bias"] = 0.1 * torch.randn((dims[layer + 1],), generator=gen)
    out = {k: v for k, v in base.items() if k.startswith("clip.")}
    out.update(mlps)
    out.update({k: v for k, v in base.items() if not k.startswith("clip.")})
    return out


def write_xclip(path: str | Path, geom: Geometry = TINY, seed: int = 0, **options: Any) -> Path:
    """``pytorch_model.bin.<epoch>`` as X-CLIP's ``save_model`` writes it (options: as ``xclip_state_dict``)."""
    path = Path(path)
    torch.save(xclip_state_dict(geom, seed, **options), path)
    return path


def write_drl(path: str | Path, geom: Geometry = TINY_C4C, seed: int = 0, **options: Any) -> Path:
    """A DRL checkpoint, ``torch.save(model.state_dict())`` (options: as ``drl_state_dict``)."""
    path = Path(path)
    torch.save(drl_state_dict(geom, seed, **options), path)
    return path
