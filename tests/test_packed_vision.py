"""The packed vision passes compute what the stock Qwen2.5-VL vision encoder computes."""

from __future__ import annotations

import copy

import torch
from PIL import Image

from inspectd.data.synthetic import make_sample
from inspectd.model.packed_vision import use_packed_vision
from inspectd.model.tiny import build_tiny_model
from inspectd.model.tiny_spec import TinySpec


def test_packed_vision_matches_stock_encoder_outputs_and_gradients():
    # Two sizes, so windows have unequal lengths (padding inside the packed batch) and two images share full attention.
    stock, processor = build_tiny_model(TinySpec(vision_depth=3, fullatt_blocks=(2,), seed=4))
    packed = copy.deepcopy(stock)
    assert use_packed_vision(packed) == 4  # three attention blocks and the patch embedding
    images = [make_sample(11, 196).image, make_sample(12, 168).image.resize((252, 140), Image.Resampling.BICUBIC)]
    batch = processor.image_processor(images=images, return_tensors="pt")
    outputs = []
    for model in (stock, packed):
        pixels = batch["pixel_values"].clone().requires_grad_(True)
        merged = model.model.visual(pixels, grid_thw=batch["image_grid_thw"]).pooler_output
        merged.square().sum().backward()
        outputs.append((merged.detach(), pixels.grad, model.model.visual.blocks[0].attn.qkv.weight.grad))
    for expected, actual in zip(*outputs):
        torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
