"""Reference PyTorch models: CLIP towers, CLIP4Clip temporal heads, X-CLIP and DRL scorers, configs as data."""
from vlrt.models.config import (
    HeadConfig,
    ModelConfig,
    ScorerConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_configs,
)
from vlrt.models.init import random_init
from vlrt.models.video_text import VideoTextModel

__all__ = [
    "HeadConfig",
    "ModelConfig",
    "ScorerConfig",
    "TextConfig",
    "VideoTextModel",
    "VisionConfig",
    "get_config",
    "list_configs",
    "random_init",
]
