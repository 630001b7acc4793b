"""Batched generation with attention capture: images in, replies and evidence out."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from inspectd.bundle.load import LoadedBundle
from inspectd.model.answer_score import AnswerTokens, recording_answer_logits, yes_probability_at_answer
from inspectd.model.branch_score import BranchPoint, branch_points, mixed_score, run_branches
from inspectd.model.capture import AttentionRecorder, enable_capture, recording
from inspectd.model.packed_vision import use_packed_vision
from inspectd.model.prompting import anomaly_word_token_ids, capture_targets, chat_text
from inspectd.model.reply import (
    ParsedReply,
    ParseStatus,
    parse_lenient_reply,
    parse_reply,
    token_char_spans,
    tokens_overlapping,
)
from inspectd.real.localize import TokenEvidence
from inspectd.real.params import RealParams


@dataclass(frozen=True)
class ModelReply:
    """One image's reply, its score and the reasoning tokens' attention.

    ``score`` is what the threshold cuts (the bundle's score method);
    ``answer_probability`` is P(yes) at this reply's own answer word.
    """

    text: str
    parsed: ParsedReply
    score: float | None
    evidence: TokenEvidence | None
    grid: tuple[int, int]
    generated_tokens: int
    answer_probability: float | None = None


def reasoning_spans(text: str, think_span: tuple[int, int], spans: list[tuple[int, int]]) -> np.ndarray:
    """Token spans in the reply -> spans in the stripped reasoning text (``ParsedReply.reasoning``)."""
    inner = text[think_span[0]:think_span[1]]
    start = think_span[0] + len(inner) - len(inner.lstrip())
    length = len(inner.strip())
    return np.array([(min(max(a - start, 0), length), min(max(b - start, 0), length)) for a, b in spans],
                    dtype=np.int32).reshape(-1, 2)


@dataclass(frozen=True)
class BatchTimings:
    preprocess_s: float
    generate_s: float
    postprocess_s: float


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
        self.answers = AnswerTokens.of(self.tokenizer)
        self.score_spec = bundle.manifest.score
        self.parse = parse_lenient_reply if self.score_spec.replies == "lenient" else parse_reply
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
        recorder = AttentionRecorder(targets, self.num_layers, layers=range(self.num_layers)[self.layers],
                                     max_steps=self.max_new_tokens)
        prepared = time.perf_counter()
        branching = self.score_spec.method == "reasoning_branch"
        with recording(recorder), recording_answer_logits(self.model, self.answers, branching) as answers:
            sequences = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=False)
        generated = time.perf_counter()
        attention = recorder.stacked()  # (steps, ReAL's layers, batch, K)
        yes_no, top_probs, top_ids = answers.stacked()  # raw logits: no generation-config processing
        prompt_length = batch["input_ids"].shape[1]
        grids = batch["image_grid_thw"].cpu().tolist()
        merge = self.processor.image_processor.merge_size
        max_images = max(image_counts)
        replies, branches = [], []
        for row in range(len(images)):
            new_ids = sequences[row, prompt_length:].tolist()
            cut = next((i for i, t in enumerate(new_ids) if t in self.stop_ids), len(new_ids))
            new_ids = new_ids[:cut]
            _, grid_h, grid_w = grids[row]
            grid = (grid_h // merge, grid_w // merge)
            reply, spans = self._reply(row, new_ids, attention, yes_no, grid, image_counts[row], max_images)
            replies.append(reply)
            if branching and reply.score is not None and reply.parsed.status is ParseStatus.OK:
                branches += branch_points(row, new_ids, spans, reply.parsed, top_probs[:, row], top_ids[:, row],
                                          self.score_spec.branches, self.score_spec.min_branch_probability)
        branch_started = time.perf_counter()
        if branches:
            replies = self._with_branch_scores(batch, replies, branches)
        finished = time.perf_counter()
        branch_s = finished - branch_started
        return replies, BatchTimings(prepared - started, generated - prepared + branch_s,
                                     finished - generated - branch_s)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def answer_probability(self, text: str, ids: list[int], yes_no: torch.Tensor, offset: int = 0, parse=parse_reply):
        """Parse a reply; P(yes) at its answer word from raw answer logits (``yes_no`` step i = token offset+i)."""
        parsed = parse(text)
        if parsed.status is ParseStatus.UNPARSABLE:
            return parsed, None, None
        spans = token_char_spans(self.decode, ids)
        return parsed, spans, yes_probability_at_answer(self.answers, parsed, spans, yes_no, offset)

    def _with_branch_scores(self, batch, replies: list[ModelReply], points: list[BranchPoint]) -> list[ModelReply]:
        scored = list(zip(points, run_branches(self, batch, points)))  # None: branch unparsable, ignored
        out = list(replies)
        for row in {point.row for point in points}:
            mine = [(point, value) for point, value in scored if point.row == row]
            out[row] = dataclasses.replace(replies[row], score=mixed_score(replies[row].score, mine))
        return out

    def _reply(self, row, new_ids, attention, yes_no, grid, image_count, max_images):
        text = self.decode(new_ids)
        parsed, spans, score = self.answer_probability(text, new_ids, yes_no[:, row], parse=self.parse)
        if parsed.status is ParseStatus.UNPARSABLE or parsed.think_span is None:
            return ModelReply(text, parsed, score, None, grid, len(new_ids), score), spans
        # Token j's own query is seen at decode step j (capture index j).
        reasoning = [j for j in tokens_overlapping(spans, *parsed.think_span) if j < attention.shape[0]]
        evidence = None
        if reasoning:
            picked = attention[reasoning][:, :, row].mean(dim=1).numpy()
            maps = picked[:, :image_count].reshape(len(reasoning), grid[0], grid[1])
            relevance = picked[:, max_images:].sum(axis=1)
            token_spans = reasoning_spans(text, parsed.think_span, [spans[j] for j in reasoning])
            inner = text[parsed.think_span[0]:parsed.think_span[1]].strip()
            evidence = TokenEvidence(maps.astype(np.float64), relevance.astype(np.float64), token_spans,
                                     tuple(inner[a:b] for a, b in token_spans))
        return ModelReply(text, parsed, score, evidence, grid, len(new_ids), score), spans
