"""Constants more than one part of vlrt needs; the one place each is defined. No imports."""

# Files a folder walk picks up: containers FFmpeg demuxes as video, and still images (one frame).
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg",
                            ".mpeg", ".flv", ".wmv", ".3gp", ".ogv", ".gif"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
MEDIA_SUFFIXES = VIDEO_SUFFIXES | IMAGE_SUFFIXES

# CLIP's image normalisation (OpenAI CLIP, CLIP4Clip and most open_clip models).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Canonical parameter names of the two projections into the embedding space: exported graphs keep
# them as initializer names, and graph passes and frame skipping find the projections by them.
VISION_PROJECTION = "clip.visual.proj"
TEXT_PROJECTION = "clip.text.text_projection"
PROJECTION_WEIGHTS = (VISION_PROJECTION, TEXT_PROJECTION)
