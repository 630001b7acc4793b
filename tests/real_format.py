"""A scaled-down checkpoint in the real Qwen2.5-VL-7B-Instruct format, built offline.

The real checkpoint's small files (tokenizer, chat template, processor and
generation config) are read from ``shared/qwen2.5-vl-7b-instruct`` beside the
repository; the config keeps its older flat layout, special token ids, rope
theta and vision patch / merge sizes, with a few small layers scaled
consistently (mrope_section sums to half the text head size, the vision
output width equals the text width); random weights are saved as bfloat16
under the hub's names. What differs from our tiny model, and must not be
assumed away: the tokenizer pads on the right, has distinct ids for yes / Ġyes
/ Yes / ĠYes, the generation config sets repetition_penalty 1.05, the
processor allows 12.8 MP images.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

REAL_CHECKPOINT = Path(__file__).resolve().parent.parent.parent / "shared" / "qwen2.5-vl-7b-instruct"
SMALL_FILES = ("chat_template.json", "generation_config.json", "merges.txt", "preprocessor_config.json",
               "tokenizer_config.json", "vocab.json")

# text hidden 256 with 4 heads: head 64, mrope_section sums to 32
SCALED_TEXT = {"hidden_size": 256, "intermediate_size": 512, "num_attention_heads": 4, "num_key_value_heads": 2,
               "num_hidden_layers": 2, "max_window_layers": 2}
SCALED_VISION = {"depth": 2, "hidden_size": 64, "intermediate_size": 128, "num_heads": 2, "out_hidden_size": 256,
                 "fullatt_block_indexes": [1]}


def available() -> bool:
    return all((REAL_CHECKPOINT / name).is_file() for name in SMALL_FILES + ("config.json",))


def build_checkpoint(destination: Path, seed: int = 0) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    destination.mkdir(parents=True, exist_ok=True)
    flat = json.loads((REAL_CHECKPOINT / "config.json").read_text(encoding="utf-8"))
    flat.update(SCALED_TEXT)
    flat["vision_config"].update(SCALED_VISION)
    flat["rope_scaling"] = {"type": "mrope", "mrope_section": [8, 12, 12]}
    (destination / "config.json").write_text(json.dumps(flat, indent=2), encoding="utf-8")
    config = Qwen2_5_VLConfig.from_pretrained(destination)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(destination, safe_serialization=True)
    # save_pretrained writes transformers 5's nested config; a real download has the flat one.
    (destination / "config.json").write_text(json.dumps(flat, indent=2), encoding="utf-8")
    for name in SMALL_FILES:
        shutil.copyfile(REAL_CHECKPOINT / name, destination / name)
    return destination
