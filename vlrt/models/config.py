"""Architecture hyperparameters as data.

A `ModelConfig` is everything needed to build the reference PyTorch model; it is read from the
JSON files in `configs/`, inferred from a checkpoint's tensor shapes, or read back from a bundle
manifest. Code never hard-codes a geometry.
"""
from __future__ import annotations

import dataclasses
import json
from importlib import resources
from typing import Any, Literal

from vlrt.errors import VlrtError

Activation = Literal["quick_gelu", "gelu"]
HeadType = Literal["meanP", "seqTransf", "seqLSTM"]
ACTIVATIONS: tuple[str, ...] = ("quick_gelu", "gelu")
HEAD_TYPES: tuple[str, ...] = ("meanP", "seqTransf", "seqLSTM")


def _resolve_mlp_width(tower: VisionConfig | TextConfig) -> None:
    if tower.mlp_width is None:
        # Stored as a number, not left implicit, so manifests and saved configs state it.
        object.__setattr__(tower, "mlp_width", 4 * tower.width)
    if not isinstance(tower.mlp_width, int) or tower.mlp_width < 1:
        raise VlrtError(f"MLP width {tower.mlp_width!r} is not a positive integer")


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    image_size: int
    patch_size: int
    width: int
    layers: int
    heads: int
    # Hidden width of each block's MLP. CLIP uses 4 x width; open_clip's ViT-g-14 and ViT-bigG-14
    # do not. None means 4 x width (configs written before this field existed).
    mlp_width: int | None = None

    def __post_init__(self) -> None:
        _resolve_mlp_width(self)


@dataclasses.dataclass(frozen=True)
class TextConfig:
    context_length: int
    vocab_size: int
    width: int
    layers: int
    heads: int
    mlp_width: int | None = None  # as VisionConfig.mlp_width

    def __post_init__(self) -> None:
        _resolve_mlp_width(self)


@dataclasses.dataclass(frozen=True)
class HeadConfig:
    """The temporal head that turns frame embeddings into one video embedding (CLIP4Clip)."""

    type: HeadType = "meanP"
    layers: int = 0  # seqTransf blocks
    heads: int = 0  # seqTransf attention heads
    max_positions: int = 0  # rows of the frame position table (seqTransf/seqLSTM)
    # CLIP4Clip's temporal transformer uses a TF-style LayerNorm (eps 1e-12) and an additive
    # key mask of -1e6 for padded frames; both differ from the CLIP towers.
    layer_norm_eps: float = 1e-12
    mask_value: float = -1e6


SCORER_TYPES: tuple[str, ...] = ("xclip", "drl")


@dataclasses.dataclass(frozen=True)
class ScorerConfig:
    """A multi-grained scorer over stored per-frame and per-word features (none for dual encoders).

    xclip: X-CLIP's four similarities; its word and frame weight matrices fix the words and
    frames a caption and a video have. drl: DRL's weighted token-wise interaction; its word and
    frame weights come from MLPs of `weight_layers` linear layers (0: uniform weights, DRL's "ti").
    """

    type: str
    words: int = 0
    frames: int = 0
    weight_layers: int = 0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    embed_dim: int
    vision: VisionConfig
    text: TextConfig
    activation: Activation = "quick_gelu"
    layer_norm_eps: float = 1e-5
    head: HeadConfig = dataclasses.field(default_factory=HeadConfig)
    scorer: ScorerConfig | None = None

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise VlrtError(f"unknown activation {self.activation!r}; expected one of {ACTIVATIONS}")
        if self.head.type not in HEAD_TYPES:
            raise VlrtError(f"unknown temporal head {self.head.type!r}; expected one of {HEAD_TYPES}")
        if self.scorer is not None and self.scorer.type not in SCORER_TYPES:
            raise VlrtError(f"unknown scorer {self.scorer.type!r}; expected one of {SCORER_TYPES}")
        for name, tower in (("vision", self.vision), ("text", self.text)):
            if tower.width % tower.heads:
                raise VlrtError(f"{name} width {tower.width} is not divisible by {tower.heads} heads")
        if self.vision.image_size % self.vision.patch_size:
            raise VlrtError(
                f"image size {self.vision.image_size} is not a multiple of patch size {self.vision.patch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["scorer"] is None:  # dual encoders: configs and manifests as before scorers existed
            del out["scorer"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        try:
            return cls(
                embed_dim=int(data["embed_dim"]),
                vision=VisionConfig(**data["vision"]),
                text=TextConfig(**data["text"]),
                activation=data.get("activation", "quick_gelu"),
                layer_norm_eps=float(data.get("layer_norm_eps", 1e-5)),
                head=HeadConfig(**data.get("head", {})),
                scorer=ScorerConfig(**data["scorer"]) if data.get("scorer") else None,
            )
        except (KeyError, TypeError) as exc:
            raise VlrtError(f"malformed model config: {exc}") from None

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def list_configs() -> list[str]:
    """Names of the bundled architecture configs (e.g. 'ViT-B-32')."""
    files = resources.files("vlrt.models").joinpath("configs").iterdir()
    return sorted(f.name[: -len(".json")] for f in files if f.name.endswith(".json"))


def get_config(name: str) -> ModelConfig:
    """A bundled architecture config by name; unknown names list the valid ones."""
    names = list_configs()
    if name not in names:
        raise VlrtError(f"unknown model config {name!r}; available: {', '.join(names)}")
    text = resources.files("vlrt.models").joinpath("configs", f"{name}.json").read_text()
    return ModelConfig.from_dict(json.loads(text))
