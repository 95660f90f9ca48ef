"""Triton Python-backend model: text -> the text graph's `input_ids`, with vlrt's CLIP tokenizer.

Input `text` (BYTES, dims [1]: one UTF-8 text per batch row); output `input_ids` (INT64,
dims [context_length]): SOT, the BPE ids (cut to context_length - 2), EOT, zeros; the rows
`Runtime.tokenize` makes. Parameters (config.pbtxt): `context_length`, the manifest's max_words;
`vocabulary`, the file name of CLIP's merges file beside this model.py (its sha256 is checked
when it loads). Imports numpy and vlrt's tokenizer module only (vlrt installed in the Python
environment the backend stub runs).
"""
import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from vlrt.runtime.tokenizer import ClipTokenizer


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.context_length = int(params["context_length"])
        self.tokenizer = ClipTokenizer(Path(__file__).parent / params["vocabulary"])

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                texts = pb_utils.get_input_tensor_by_name(request, "text").as_numpy()  # (B, 1) bytes
                ids = self.tokenizer([_text(t, i) for i, t in enumerate(texts.reshape(-1))],
                                     context_length=self.context_length)  # (B, context_length) int64
                out = pb_utils.Tensor("input_ids", np.ascontiguousarray(ids, dtype=np.int64))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except Exception as exc:  # one bad request fails alone, not the batch it was queued with
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def finalize(self):
        self.tokenizer = None


def _text(value, row):
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"text {row} is not UTF-8 ({exc.reason} at byte {exc.start})") from None
