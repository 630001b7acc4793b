"""CGRO's rewards: format, accuracy, spatial consistency and, where a drawn defect's exact mask is known,
localization (docs/training.md, "Training (CGRO)").

The consistency reward reads the reasoning tokens' attention with the same
capture code as inference (a teacher-forced pass over the sampled reply) and
ranks tokens with the same ReAL weighting (``score_tokens``), so training
rewards exactly the maps the daemon will draw.
"""

from __future__ import annotations

import numpy as np
import torch

from inspectd.bundle.manifest import PromptSpec
from inspectd.model.capture import AttentionRecorder, enable_capture, recording
from inspectd.model.prompting import anomaly_word_token_ids, capture_targets, chat_text
from inspectd.model.reply import ParseStatus, parse_reply, token_char_spans, tokens_overlapping
from inspectd.model.sequences import extend_rows, pad_id_of
from inspectd.metrics.ranking import exact_auroc_ap
from inspectd.real.localize import TokenEvidence, localize, score_tokens
from inspectd.real.params import RealParams
from inspectd.training.cgro_config import ConsistencySettings


def completion_text(completion) -> str:
    """trl hands conversational completions as message lists."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") if isinstance(m.get("content"), str) else "" for m in completion)
    return str(completion)


def format_reward(completions, **_) -> list[float]:
    return [1.0 if parse_reply(completion_text(c)).status is ParseStatus.OK else 0.0 for c in completions]


def accuracy_reward(completions, label, **_) -> list[float]:
    rewards = []
    for completion, anomalous in zip(completions, label):
        parsed = parse_reply(completion_text(completion))
        rewards.append(1.0 if parsed.answer == ("yes" if anomalous else "no") else 0.0)
    return rewards


def spatial_consensus(evidence: TokenEvidence, params: RealParams, settings: ConsistencySettings) -> float:
    """Jaccard overlap (|intersection| / |union|) of the top-k tokens' 95th-percentile regions.

    Top-k by the ReAL weight w_r, the tokens ReAL keeps first; when fewer
    than k are kept, the rest are filled by weight from the others (never by
    position: a token of weight 0 would enter the consensus). Empty union (no
    token singles out a place) gives 0.
    """
    scores = score_tokens(evidence, params)
    top = np.lexsort((-scores.weights, ~scores.kept))[: settings.k]  # kept first, then by weight
    # Strictly above the percentile: cells tied with a flat background never join a region,
    # so a map that singles out nothing has an empty region.
    regions = [m > np.percentile(m, settings.percentile) for m in evidence.maps[top]]
    union = np.logical_or.reduce(regions)
    if not union.any():
        return 0.0
    return float(np.logical_and.reduce(regions).sum() / union.sum())


def consistency_reward_value(consensus: float, anomalous: bool, settings: ConsistencySettings) -> float:
    if anomalous:
        return 1.0 if consensus >= settings.delta_anomalous else 0.0
    return 1.0 if consensus <= settings.delta_normal else 0.0


class ReplyAttention:
    """Teacher-forced attention of a finished reply's reasoning tokens, via the inference capture.

    The pass runs the decoder only (no LM head: full-vocabulary logits at every position were the largest
    item of a 7B step's reward pass, ~150k floats per token) over ``batch_size`` replies at a time, so its
    peak memory is set by ``reward_batch_size``, not by the batch x generations group.
    """

    def __init__(self, model, processor, prompt: PromptSpec, real: RealParams, batch_size: int = 16) -> None:
        self.model = model
        self.processor = processor
        self.prompt = prompt
        self.real = real
        self.batch_size = batch_size
        self.chat = chat_text(processor, prompt)
        self.text_ids, self.word_hits = anomaly_word_token_ids(processor.tokenizer, prompt, real.anomaly_words)

    def _decode(self, ids: list[int]) -> str:
        return self.processor.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def evidence(self, images, replies: list[str]) -> list[TokenEvidence | None]:
        images = list(images)
        out: list[TokenEvidence | None] = []
        for start in range(0, len(replies), self.batch_size):
            out += self._evidence(images[start:start + self.batch_size], replies[start:start + self.batch_size])
        return out

    @torch.no_grad()
    def _evidence(self, images, replies: list[str]) -> list[TokenEvidence | None]:
        tokenizer = self.processor.tokenizer
        prompts = self.processor(text=[self.chat] * len(replies), images=list(images), return_tensors="pt",
                                 padding=True, padding_side="left")
        reply_ids = [tokenizer.encode(reply, add_special_tokens=False) for reply in replies]
        extended = extend_rows(prompts, list(range(len(replies))), reply_ids, pad_id_of(tokenizer))
        batch = extended.inputs
        length = batch["input_ids"].shape[1]
        reasoning_positions: list[list[int]] = []
        reasoning_words: list[tuple[str, ...]] = []  # each reasoning token's text: real.ignored_words reads it
        for reply, ids, start in zip(replies, reply_ids, extended.tail_starts):
            parsed = parse_reply(reply)
            if parsed.status is not ParseStatus.OK:
                reasoning_positions.append([])
                reasoning_words.append(())
                continue
            spans = token_char_spans(self._decode, ids)
            tokens = tokens_overlapping(spans, *parsed.think_span)
            reasoning_positions.append([start + j for j in tokens])
            reasoning_words.append(tuple(reply[spans[j][0]:spans[j][1]] for j in tokens))
        widest = max((len(p) for p in reasoning_positions), default=0)
        if widest == 0:
            return [None] * len(replies)
        padded = []
        for positions in reasoning_positions:
            positions = positions or [length - 1]  # a row without reasoning still needs a query
            padded.append(positions + [positions[-1]] * (widest - len(positions)))
        queries = torch.tensor(padded)
        targets, image_counts = capture_targets(batch["input_ids"], self.model.config.image_token_id,
                                                self.text_ids, self.word_hits)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        enable_capture(base)
        layers = base.config.text_config.num_hidden_layers
        recorder = AttentionRecorder(targets, layers, query_positions=queries)
        device = next(base.parameters()).device
        with recording(recorder):
            base.model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False)  # decoder only: no logits
        rows = recorder.rows()[self.real.layer_slice(layers)].mean(dim=0).float().cpu().numpy()  # (B, Q, K)
        grids = batch["image_grid_thw"].tolist()
        merge = self.processor.image_processor.merge_size
        max_images = max(image_counts)
        out: list[TokenEvidence | None] = []
        for row, positions in enumerate(reasoning_positions):
            if not positions:
                out.append(None)
                continue
            _, grid_h, grid_w = grids[row]
            picked = rows[row, : len(positions)]
            maps = picked[:, : image_counts[row]].reshape(len(positions), grid_h // merge, grid_w // merge)
            out.append(TokenEvidence(maps.astype(np.float64), picked[:, max_images:].sum(axis=1).astype(np.float64),
                                     words=reasoning_words[row]))
        return out


class ConsistencyReward:
    """trl reward function: 1 when the reasoning agrees on one place (anomalous) or on none (normal)."""

    __name__ = "consistency_reward"

    def __init__(self, attention: ReplyAttention, settings: ConsistencySettings) -> None:
        self.attention = attention
        self.settings = settings
        self.last_consensus: list[float | None] = []
        self.last_evidence: tuple[list, list[str], list[TokenEvidence | None]] | None = None

    def __call__(self, completions, image, label, **_) -> list[float]:
        replies = [completion_text(c) for c in completions]
        evidence = self.attention.evidence(image, replies)
        self.last_evidence = (list(image), replies, evidence)  # the localization reward reads it, same step
        rewards, consensus = [], []
        for item, anomalous in zip(evidence, label):
            if item is None:
                rewards.append(0.0)
                consensus.append(None)
                continue
            value = spatial_consensus(item, self.attention.real, self.settings)
            consensus.append(value)
            rewards.append(consistency_reward_value(value, bool(anomalous), self.settings))
        self.last_consensus = consensus
        return rewards


class LocalizationReward:
    """trl reward function: how well ReAL's map finds a drawn defect, on the rows that carry its exact mask.

    The value is the pixel AUROC of the map ReAL draws from the reply's reasoning (the daemon's map) against
    the mask of the defect drawn onto a good photo (``mask_id`` indexes ``masks``); rows without a mask
    (``mask_id`` -1: the real photos, labels only) are not scored (None). No human pixel label is involved.
    """

    __name__ = "localization_reward"

    def __init__(self, attention: ReplyAttention, masks: list[np.ndarray],
                 consistency: ConsistencyReward | None = None) -> None:
        self.attention = attention
        self.masks = masks
        self.consistency = consistency  # called first in a step: its teacher-forced pass is reused

    def _evidence(self, image, completions, rows: list[int]) -> list[TokenEvidence | None]:
        replies = [completion_text(c) for c in completions]
        last = None if self.consistency is None else self.consistency.last_evidence
        if last is not None and last[1] == replies and len(last[0]) == len(image) \
                and all(a is b for a, b in zip(last[0], image)):
            return [last[2][i] for i in rows]
        return self.attention.evidence([image[i] for i in rows], [replies[i] for i in rows])

    def __call__(self, completions, image, mask_id, **_) -> list[float | None]:
        rewards: list[float | None] = [None] * len(completions)
        rows = [i for i, m in enumerate(mask_id) if m is not None and m >= 0]
        if not rows:
            return rewards
        for row, item in zip(rows, self._evidence(image, completions, rows)):
            mask = self.masks[mask_id[row]]
            if item is None:  # no reasoning to read: nothing found
                rewards[row] = 0.0
                continue
            found = localize(item, self.attention.real, (mask.shape[1], mask.shape[0])).anomaly_map
            rewards[row] = exact_auroc_ap(mask.ravel(), found.ravel())[0]
        return rewards
