"""Write a model repository for NVIDIA Triton Inference Server from a bundle.

REPO gets six models (seven for an X-CLIP or DRL bundle), each a folder with config.pbtxt and a
version folder 1/:

  text_encoder, video_encoder   the bundle's fp32 ONNX graphs (onnxruntime backend), or with
                                --engine KEY a built engine's: an onnxruntime engine's ONNX graphs,
                                or a TensorRT engine's plans (tensorrt backend, on the GPU)
  tokenizer                     Python backend: text (BYTES) -> input_ids, vlrt's CLIP tokenizer
  video_preprocess              Python backend: a video file (BYTES) -> pixels + frame_mask, decoded,
                                sampled and preprocessed as vlrt's runtime does
  text_ensemble, video_ensemble tokenizer -> text_encoder and video_preprocess -> video_encoder:
                                text or a video file in, embeddings out
  scorer                        an X-CLIP or DRL bundle's scorer graph (onnxruntime backend):
                                caption features x video features -> scores

Tensor names, types and shapes come from the bundle's manifest (a TensorRT engine's from its
recorded profile). The encoders batch dynamically up to --max-batch (default: 64 texts, 8
videos) and run as KIND_CPU instances, or KIND_GPU with --gpu (always for ort-cuda and TensorRT
engines). REPO/README.md has the exact `tritonserver` command; the Python-backend models need vlrt
installed in the Python that Triton's Python backend runs. See docs/triton.md.
"""
from __future__ import annotations

import argparse

from vlrt.cli.common import Stages, add_json, positive_int, print_json, subcommand


def register(sub) -> None:
    p = subcommand(sub, "triton", __doc__)
    p.add_argument("bundle", help="bundle directory made by `vlrt export`")
    p.add_argument("-o", "--output", required=True, metavar="REPO", help="the model repository folder to write")
    p.add_argument("--engine", metavar="KEY", help="serve this built engine (a key under BUNDLE/engines/) "
                   "instead of the bundle's fp32 graphs")
    p.add_argument("--max-batch", type=positive_int, metavar="N",
                   help="max_batch_size of every model (default: 64 for text, 8 for video; a TensorRT engine's "
                        "profile caps it)")
    p.add_argument("--gpu", action="store_true", help="run the encoders as KIND_GPU instances (default: KIND_CPU)")
    p.add_argument("--mode", choices=["exact", "fast"], default="exact",
                   help="video preprocessing: exact (CLIP's PIL pipeline) or fast (resize inside FFmpeg)")
    p.add_argument("--overwrite", action="store_true", help="replace REPO if `vlrt triton` wrote it before")
    add_json(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vlrt.triton import write_repository

    stages = Stages(quiet=args.json)
    summary = write_repository(args.bundle, args.output, engine=args.engine, max_batch=args.max_batch, gpu=args.gpu,
                               overwrite=args.overwrite, mode=args.mode, progress=stages)
    if args.json:
        print_json(summary)
        return 0
    enc = summary["encoders"]
    what = f"engine {summary['engine']} ({enc['backend']}, {enc['precision']})" if summary["engine"] else "fp32 graphs"
    print(f"wrote {summary['repository']}: encoders from the bundle's {what} as {enc['platform']}, {enc['kind']}")
    for name, model in summary["models"].items():
        print(f"  {name:17s} {model.get('platform') or model.get('backend'):17s} max batch {model['max_batch_size']}")
    print(f"start it with: {summary['command']}")
    print("(tokenizer and video_preprocess need vlrt installed in the Python of Triton's Python backend; "
          "see README.md there)")
    return 0
