"""The dimensions of a tiny Qwen2.5-VL (``tiny.py`` builds it): a recipe's ``model:`` section, read without torch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TinySpec:
    """Dimensions of a tiny Qwen2.5-VL; defaults give about 0.6M parameters."""

    text_hidden: int = 128
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_intermediate: int = 256
    vision_hidden: int = 64
    vision_depth: int = 2
    vision_heads: int = 2
    vision_intermediate: int = 128
    fullatt_blocks: tuple[int, ...] = (1,)
    vocab_size: int = 1024
    min_pixels: int = 56 * 56
    max_pixels: int = 448 * 448
    seed: int = 0
    extra_corpus: tuple[str, ...] = field(default_factory=tuple)
