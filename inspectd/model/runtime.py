"""Batched generation with attention capture: images in, replies and evidence out."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from inspectd.bundle.load import LoadedBundle
from inspectd.model.capture import AttentionRecorder, enable_capture, recording
from inspectd.model.packed_vision import use_packed_vision
from inspectd.model.prompting import anomaly_word_token_ids, capture_targets, chat_text
from inspectd.model.reply import (
    ParsedReply,
    ParseStatus,
    parse_reply,
    token_char_spans,
    token_starting_at,
    tokens_overlapping,
)
from inspectd.real.localize import TokenEvidence
from inspectd.real.params import RealParams


@dataclass(frozen=True)
class ModelReply:
    """One image's reply, its P(yes) and the reasoning tokens' attention."""

    text: str
    parsed: ParsedReply
    score: float | None
    evidence: TokenEvidence | None
    grid: tuple[int, int]
    generated_tokens: int


@dataclass(frozen=True)
class BatchTimings:
    preprocess_s: float
    generate_s: float
    postprocess_s: float


class _AnswerLogits(LogitsProcessor):
    """Keeps the raw yes/no logits of every step; changes nothing."""

    def __init__(self, yes_id: int, no_id: int) -> None:
        self.ids = [yes_id, no_id]
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.steps.append(scores[:, self.ids].float().cpu())
        return scores


def _single_token(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"the tokenizer splits {word!r} into {len(ids)} tokens; the score needs one")
    return ids[0]


class InspectionModel:
    """Asks the bundle's question about images and keeps what ReAL needs."""

    def __init__(self, bundle: LoadedBundle, real: RealParams, max_new_tokens: int | None = None) -> None:
        self.bundle = bundle
        self.real = real
        self.model = bundle.model
        self.processor = bundle.processor
        self.tokenizer = bundle.processor.tokenizer
        self.prompt = bundle.manifest.prompt
        self.max_new_tokens = max_new_tokens or bundle.manifest.max_new_tokens
        self.num_layers = self.model.config.text_config.num_hidden_layers
        self.layers = real.layer_slice(self.num_layers)
        self.chat = chat_text(self.processor, self.prompt)
        self.text_ids, self.word_hits = anomaly_word_token_ids(self.tokenizer, self.prompt, real.anomaly_words)
        self.yes_id = _single_token(self.tokenizer, "yes")
        self.no_id = _single_token(self.tokenizer, "no")
        self.stop_ids = {i for i in (self.tokenizer.eos_token_id, self.tokenizer.pad_token_id) if i is not None}
        enable_capture(self.model)
        use_packed_vision(self.model)  # same outputs, one sdpa call instead of a loop over windows

    def _prepare(self, images: list[Image.Image]):
        size = self.bundle.manifest.image_size
        if size is not None:
            images = [im.resize(tuple(size), Image.Resampling.BICUBIC) for im in images]
        batch = self.processor(
            text=[self.chat] * len(images), images=images, return_tensors="pt", padding=True, padding_side="left"
        )
        return batch.to(self.bundle.device)

    @torch.no_grad()  # not inference_mode: quanto int4 modules refuse inference tensors
    def run(self, images: list[Image.Image]) -> tuple[list[ModelReply], BatchTimings]:
        started = time.perf_counter()
        batch = self._prepare(images)
        targets, image_counts = capture_targets(
            batch["input_ids"].cpu(), self.model.config.image_token_id, self.text_ids, self.word_hits
        )
        recorder = AttentionRecorder(targets, self.num_layers)
        answer_logits = _AnswerLogits(self.yes_id, self.no_id)
        prepared = time.perf_counter()
        with recording(recorder):
            sequences = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                logits_processor=LogitsProcessorList([answer_logits]),
            )
        generated = time.perf_counter()
        attention = recorder.stacked()  # (steps, layers, batch, K)
        yes_no = torch.stack(answer_logits.steps) if answer_logits.steps else torch.zeros(0, len(images), 2)
        prompt_length = batch["input_ids"].shape[1]
        grids = batch["image_grid_thw"].cpu().tolist()
        merge = self.processor.image_processor.merge_size
        max_images = max(image_counts)
        replies = []
        for row in range(len(images)):
            new_ids = sequences[row, prompt_length:].tolist()
            cut = next((i for i, t in enumerate(new_ids) if t in self.stop_ids), len(new_ids))
            new_ids = new_ids[:cut]
            _, grid_h, grid_w = grids[row]
            grid = (grid_h // merge, grid_w // merge)
            replies.append(
                self._reply(row, new_ids, attention, yes_no, grid, image_counts[row], max_images)
            )
        finished = time.perf_counter()
        return replies, BatchTimings(prepared - started, generated - prepared, finished - generated)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _reply(self, row, new_ids, attention, yes_no, grid, image_count, max_images) -> ModelReply:
        text = self._decode(new_ids)
        parsed = parse_reply(text)
        if parsed.status is not ParseStatus.OK:
            return ModelReply(text, parsed, None, None, grid, len(new_ids))
        spans = token_char_spans(self._decode, new_ids)
        answer_index = token_starting_at(spans, parsed.answer_start)
        score = None
        if answer_index is not None and answer_index < yes_no.shape[0]:
            score = float(torch.softmax(yes_no[answer_index, row], dim=-1)[0])
        # Token j's own query is seen at decode step j (capture index j).
        reasoning = [j for j in tokens_overlapping(spans, *parsed.think_span) if j < attention.shape[0]]
        evidence = None
        if reasoning:
            picked = attention[reasoning][:, self.layers, row].mean(dim=1).numpy()
            maps = picked[:, :image_count].reshape(len(reasoning), grid[0], grid[1])
            relevance = picked[:, max_images:].sum(axis=1)
            evidence = TokenEvidence(maps.astype(np.float64), relevance.astype(np.float64))
        return ModelReply(text, parsed, score, evidence, grid, len(new_ids))
