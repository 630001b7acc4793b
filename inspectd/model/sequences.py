"""Prompt + reply token sequences built as generation builds them.

``generate`` tokenizes the prompt alone and appends the reply's token ids; a
fast tokenizer run over prompt + reply text can merge characters across the
boundary (runs of newlines, for one) and shift every reply position. Teacher
forcing (the warm-up's labels, the CGRO reward's attention pass, the branch
score) therefore appends reply ids to the processed prompt instead, and knows
each reply token's position exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ExtendedBatch:
    inputs: dict[str, torch.Tensor]  # left-padded model inputs, one row per tail
    tail_starts: list[int]  # position of each row's first tail token


def _image_slices(batch) -> list[slice]:
    """Each row's part of the flattened ``pixel_values`` (one image per row)."""
    counts = batch["image_grid_thw"].prod(dim=-1).tolist()
    starts = [sum(counts[:i]) for i in range(len(counts))]
    return [slice(start, start + count) for start, count in zip(starts, counts)]


def extend_rows(batch, rows: list[int], tails: list[list[int]], pad_id: int) -> ExtendedBatch:
    """Row ``rows[i]`` of a processed prompt batch (left-padded) followed by ``tails[i]``, left-padded again."""
    device = batch["input_ids"].device
    ids, types = [], []
    for row, tail in zip(rows, tails):
        real = batch["attention_mask"][row].bool()
        extra = torch.tensor(tail, dtype=torch.long, device=device)
        ids.append(torch.cat([batch["input_ids"][row][real], extra]))
        if "mm_token_type_ids" in batch:  # 1 at image tokens; a reply is text
            types.append(torch.cat([batch["mm_token_type_ids"][row][real], torch.zeros_like(extra)]))
    length = max(len(sequence) for sequence in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long, device=device)
    attention_mask = torch.zeros((len(ids), length), dtype=torch.long, device=device)
    token_types = torch.zeros((len(ids), length), dtype=torch.long, device=device)
    starts = []
    for i, sequence in enumerate(ids):
        offset = length - len(sequence)
        input_ids[i, offset:] = sequence
        attention_mask[i, offset:] = 1
        if types:
            token_types[i, offset:] = types[i]
        starts.append(offset + len(sequence) - len(tails[i]))
    slices = _image_slices(batch)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": torch.cat([batch["pixel_values"][slices[row]] for row in rows]),
        "image_grid_thw": batch["image_grid_thw"][list(rows)],
    }
    if types:
        inputs["mm_token_type_ids"] = token_types
    return ExtendedBatch(inputs, starts)


def pad_id_of(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
