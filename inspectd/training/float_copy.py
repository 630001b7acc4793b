"""A plain float32 copy of a loaded model, to train from a deployed (maybe 4-bit) bundle.

A bitsandbytes model dequantized in place still carries its quantization
config and cannot be saved again (transformers refuses to reverse the weight
conversion); the copy is a fresh model of the same config holding the
dequantized float32 weights, which trains and saves like any other.
"""

from __future__ import annotations

import copy

import torch
from transformers import Qwen2_5_VLForConditionalGeneration


def float32_copy(model: Qwen2_5_VLForConditionalGeneration) -> Qwen2_5_VLForConditionalGeneration:
    config = copy.deepcopy(model.config)
    if getattr(config, "quantization_config", None) is not None:
        model = model.dequantize()
        del config.quantization_config
    state = {name: tensor.detach().to(torch.float32) for name, tensor in model.state_dict().items()}
    fresh = Qwen2_5_VLForConditionalGeneration(config).to(torch.float32)
    fresh.load_state_dict(state, strict=True)
    return fresh.eval()
