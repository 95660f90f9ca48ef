"""A model repository for NVIDIA Triton Inference Server, written from a bundle (`vlrt triton`).

    repository.py   write_repository(): the encoders (the bundle's ONNX graphs, or a built
                    engine's ONNX graphs or TensorRT plans), the Python-backend tokenizer and
                    video preprocessing, the two ensembles, config.pbtxt for each, a README
    models/         the Python-backend models' sources, each copied as `<model>/1/model.py`

docs/triton.md says how to run the repository and what has been run against a real tritonserver.
"""
from vlrt.triton.repository import MODELS, write_repository

__all__ = ["MODELS", "write_repository"]
