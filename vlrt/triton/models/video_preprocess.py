"""Triton Python-backend model: a video file's bytes -> the video graph's `pixels` and `frame_mask`.

Input `video` (BYTES, dims [1]: one whole file per batch row, any container FFmpeg reads).
Outputs `pixels` (FP32, dims [max_frames, 3, S, S]: the sampled frames, zero after the last)
and `frame_mask` (FP32, dims [max_frames]: 1 for the sampled frames, 0 after): what
`Runtime.encode_videos` feeds the video graph. Each file is spooled to a private temporary
folder and decoded, sampled (the manifest's rule) and preprocessed by `vlrt.runtime.pipeline.ClipLoader`.
Parameters (config.pbtxt): `max_frames`, `sampling` and `preprocessing` (the manifest's, as JSON),
`mode` (exact or fast preprocessing), `decode_workers` (files decoded at once per instance).
A file that cannot be decoded fails its own request, named by its row.
"""
import concurrent.futures as cf
import json
import os
import shutil
import tempfile

import numpy as np
import triton_python_backend_utils as pb_utils

from vlrt.runtime.pipeline import ClipLoader, prefix_mask


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        manifest = {"max_frames": int(params["max_frames"]), "sampling": json.loads(params["sampling"]),
                    "preprocessing": json.loads(params["preprocessing"])}
        self.max_frames = manifest["max_frames"]
        self.loader = ClipLoader(manifest, mode=params.get("mode", "exact"))
        self.spool = tempfile.mkdtemp(prefix="vlrt-triton-video-")
        self.pool = cf.ThreadPoolExecutor(max_workers=max(1, int(params.get("decode_workers", "1"))),
                                          thread_name_prefix="vlrt-decode")

    def execute(self, requests):
        jobs = []
        for request in requests:
            try:
                videos = pb_utils.get_input_tensor_by_name(request, "video").as_numpy().reshape(-1)
                jobs.append([self.pool.submit(self._load, bytes(v), row) for row, v in enumerate(videos)])
            except Exception as exc:
                jobs.append(exc)
        responses = []
        for job in jobs:
            try:
                if isinstance(job, Exception):
                    raise job
                clips = [future.result() for future in job]
                pixels = np.stack([c.pixels for c in clips])  # (B, T, 3, S, S)
                mask = prefix_mask([c.n_frames for c in clips], self.max_frames)  # (B, T)
                out = [pb_utils.Tensor("pixels", pixels), pb_utils.Tensor("frame_mask", mask)]
                responses.append(pb_utils.InferenceResponse(output_tensors=out))
            except Exception as exc:  # one bad file fails its request, not the batch it was queued with
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(exc))))
        return responses

    def _load(self, data, row):
        fd, path = tempfile.mkstemp(dir=self.spool)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            return self.loader(path)
        except Exception as exc:  # the spool file's name means nothing to the client: name the row
            raise ValueError(str(exc).replace(path, f"video {row}")) from None
        finally:
            os.unlink(path)

    def finalize(self):
        self.pool.shutdown(wait=True)
        shutil.rmtree(self.spool, ignore_errors=True)
