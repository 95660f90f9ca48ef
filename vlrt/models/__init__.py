"""Reference PyTorch models: CLIP towers, CLIP4Clip temporal heads, configs as data."""
from vlrt.models.config import HeadConfig, ModelConfig, TextConfig, VisionConfig, get_config, list_configs
from vlrt.models.init import random_init
from vlrt.models.video_text import VideoTextModel

__all__ = [
    "HeadConfig",
    "ModelConfig",
    "TextConfig",
    "VideoTextModel",
    "VisionConfig",
    "get_config",
    "list_configs",
    "random_init",
]
