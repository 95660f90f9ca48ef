"""Random initialisation for generated checkpoints (tests, the demo, benchmarks).

Scales follow CLIP's own initialisation closely enough that activations stay in a realistic range
through deep stacks; LayerNorm affine parameters are perturbed away from 1/0 so that a wrong
mapping of them changes the embeddings instead of hiding.
"""
from __future__ import annotations

import math

import torch
from torch import nn


@torch.no_grad()
def random_init(model: nn.Module, *, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if ".ln_" in name or name.split(".")[-2].startswith("ln_"):
            base = 1.0 if leaf == "weight" else 0.0
            param.copy_(base + 0.1 * torch.randn(param.shape, generator=gen))
        elif leaf in ("bias", "in_proj_bias") or leaf.startswith("bias_"):
            param.copy_(0.02 * torch.randn(param.shape, generator=gen))
        elif leaf == "logit_scale":
            param.fill_(math.log(1 / 0.07))
        else:
            fan_in = param.shape[-1] if param.dim() > 1 else param.shape[0]
            std = 0.02 if "embedding" in name else fan_in**-0.5
            param.copy_(std * torch.randn(param.shape, generator=gen))
    return model
