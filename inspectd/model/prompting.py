"""The inspection prompt and the positions ReAL reads attention from."""

from __future__ import annotations

import re

import torch

from inspectd.bundle.manifest import PromptSpec
from inspectd.model.capture import CaptureTargets


def chat_text(processor, prompt: PromptSpec) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt.user_text()}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def anomaly_word_token_ids(tokenizer, prompt: PromptSpec, words: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """Token ids of the user text and the indices, within them, of anomaly words."""
    text = prompt.user_text()
    pattern = re.compile(r"\b(" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
    spans = [m.span() for m in pattern.finditer(text)]
    if not spans:
        raise ValueError(f"the prompt {text!r} contains none of the anomaly words {list(words)}")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    hits = [
        i
        for i, (a, b) in enumerate(encoded["offset_mapping"])
        if any(a < end and b > start for start, end in spans)
    ]
    return list(encoded["input_ids"]), hits


def _find_last(row: list[int], needle: list[int]) -> int:
    for start in range(len(row) - len(needle), -1, -1):
        if row[start : start + len(needle)] == needle:
            return start
    return -1


def capture_targets(
    input_ids: torch.Tensor, image_token_id: int, text_ids: list[int], word_hits: list[int]
) -> tuple[CaptureTargets, list[int]]:
    """Key positions per row: all image tokens first, then the anomaly words.

    Returns the targets and each row's image-token count; the K axis is laid
    out as [max image tokens | anomaly words].
    """
    rows = input_ids.tolist()
    image_positions = [[i for i, t in enumerate(row) if t == image_token_id] for row in rows]
    max_images = max(len(p) for p in image_positions)
    width = max_images + len(word_hits)
    positions = torch.zeros(len(rows), width, dtype=torch.long)
    valid = torch.zeros(len(rows), width)
    for r, row in enumerate(rows):
        start = _find_last(row, text_ids)
        if start < 0:
            raise RuntimeError("the prompt's tokens were not found in the processed input (tokenizer mismatch)")
        images = image_positions[r]
        positions[r, : len(images)] = torch.tensor(images, dtype=torch.long)
        valid[r, : len(images)] = 1
        positions[r, max_images:] = torch.tensor([start + h for h in word_hits], dtype=torch.long)
        valid[r, max_images:] = 1
    return CaptureTargets(positions, valid), [len(p) for p in image_positions]
