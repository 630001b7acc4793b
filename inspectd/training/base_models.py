"""The model a recipe starts from: an inspectd bundle, or a Qwen2.5-VL checkpoint folder as downloaded.

A bundle (``bundle.json`` beside the weights) may be 4-bit and is verified on load; a checkpoint folder (a
hub download such as Qwen2.5-VL-7B-Instruct: ``config.json``, safetensors shards, tokenizer and processor
files) is read as it came, bfloat16 on disk, with a tokenizer that pads on the right. Both become the same
float32 model and left-padding processor for the warm-up. Training code: the daemon never imports it.
"""

from __future__ import annotations

import json
from pathlib import Path

from inspectd.bundle.files import MANIFEST_NAME
from inspectd.errors import InspectdError


def is_bundle(folder: Path) -> bool:
    return (Path(folder) / MANIFEST_NAME).is_file()


def check_model_folder(folder: Path) -> None:
    """A missing or wrong ``init`` is named before any stage starts, not deep inside transformers."""
    if not (Path(folder) / "config.json").is_file():
        raise InspectdError(f"init: {folder} has no config.json: point it at an inspectd bundle or a local "
                            "Qwen2.5-VL checkpoint folder (config.json + safetensors, as downloaded)")


def processor_of(folder: Path):
    from inspectd.bundle.processor import ImageOnlyQwenProcessor

    processor = ImageOnlyQwenProcessor.from_pretrained(folder, local_files_only=True)
    processor.tokenizer.padding_side = "left"  # a real checkpoint's tokenizer pads right; generation needs left
    return processor


def float32_model(folder: Path):
    """(model, processor) to train: float32 master weights whatever the folder holds (a bundle's 4-bit
    weights dequantized; a download's bfloat16 upcast: pure bf16 AdamW loses small updates)."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    check_model_folder(folder)
    if is_bundle(folder):
        from inspectd.bundle.load import load_bundle
        from inspectd.bundle.dequantized_copy import dequantized_copy

        bundle = load_bundle(folder, "cpu")
        return dequantized_copy(bundle.model), bundle.processor
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        folder, local_files_only=True, use_safetensors=True, dtype=torch.float32)
    return model, processor_of(folder)


def saved_dtype(folder: Path) -> str:
    """The dtype a checkpoint was saved in ("bfloat16" for a download), "float32" when its config does not say.

    The warm-up saves its model so: a 7B's copy takes 16.6 GB, not 33."""
    try:
        raw = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "float32"
    name = raw.get("dtype") or raw.get("torch_dtype") or (raw.get("text_config") or {}).get("dtype") or "float32"
    return name if name in ("bfloat16", "float16") else "float32"


def parameter_count(folder: Path) -> int:
    """Parameters in a folder's safetensors files, from their headers alone (no weights read)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(path), "pt") as weights:
            for name in weights.keys():
                count = 1
                for size in weights.get_slice(name).get_shape():
                    count *= size
                total += count
    return total
