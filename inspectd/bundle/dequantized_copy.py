"""A plain copy of a loaded bundle's model with its quantized weights dequantized.

A bitsandbytes model dequantized in place still carries its quantization
config and cannot be saved again (transformers refuses to reverse the weight
conversion); the copy is a fresh model of the same config holding the
dequantized weights, which trains, merges and saves like any other. Two users:
training from a deployed bundle (float32 master weights) and re-exporting one
(a recalibrated threshold, another precision), which must never import training.
"""

from __future__ import annotations

import copy

import torch
from transformers import Qwen2_5_VLForConditionalGeneration


def dequantized_copy(model: Qwen2_5_VLForConditionalGeneration,
                     dtype: torch.dtype = torch.float32) -> Qwen2_5_VLForConditionalGeneration:
    """The model's weights in ``dtype`` in a fresh model on the same device (a GPU's 7B copy stays there)."""
    config = copy.deepcopy(model.config)
    if getattr(config, "quantization_config", None) is not None:
        model = model.dequantize()
        del config.quantization_config
    device = next(model.parameters()).device
    state = {name: tensor.detach().to(dtype) for name, tensor in model.state_dict().items()}
    with torch.device(device):
        fresh = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    fresh.load_state_dict(state, strict=True)
    return fresh.eval()
