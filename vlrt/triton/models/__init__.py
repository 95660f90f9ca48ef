"""The Python-backend models of a vlrt Triton repository, one file each, copied as `<model>/1/model.py`.

They import `triton_python_backend_utils`, which exists only inside Triton's Python backend
stub, so vlrt never imports them itself: `vlrt.triton.repository` copies them as files. Each
reads its settings from the `parameters` of its own config.pbtxt, which the repository writer
fills from the bundle's manifest.

    tokenizer.py          text (BYTES, UTF-8) -> input_ids (INT64), vlrt's CLIP tokenizer
    video_preprocess.py   a video file's bytes (BYTES) -> pixels (FP32) + frame_mask (FP32), as
                          `Runtime.encode_videos` decodes, samples and preprocesses
"""
from pathlib import Path

SOURCES = Path(__file__).parent
