"""The image score comes from the raw answer logits, over every yes / no token form."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from inspectd.bundle.load import load_bundle
from inspectd.bundle.manifest import PromptSpec
from inspectd.data.synthetic import make_sample
from inspectd.model.answer_score import AnswerTokens, recording_answer_logits
from inspectd.model.branch_score import BranchPoint, branch_points, mixed_score
from inspectd.model.reply import parse_reply, token_char_spans, token_starting_at
from inspectd.model.runtime import InspectionModel

REPO = Path(__file__).resolve().parent.parent
REAL_CHECKPOINT = REPO.parent / "shared" / "qwen2.5-vl-7b-instruct"


@pytest.mark.skipif(not (REAL_CHECKPOINT / "vocab.json").is_file(), reason="real Qwen2.5-VL tokenizer files absent")
def test_real_tokenizer_yes_and_no_forms_are_all_counted():
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(REAL_CHECKPOINT, local_files_only=True)
    tokens = AnswerTokens.of(tokenizer)
    decoded_yes = {tokenizer.convert_ids_to_tokens(i) for i in tokens.yes}
    decoded_no = {tokenizer.convert_ids_to_tokens(i) for i in tokens.no}
    assert {"yes", "Ġyes", "Yes", "ĠYes"} <= decoded_yes
    assert {"no", "Ġno", "No", "ĠNo"} <= decoded_no
    # P(yes) sums the forms: all mass on " Yes" is a yes, all mass on "No" a no.
    logits = torch.full((len(tokens.columns),), -30.0)
    logits[tokens.columns.index(tokenizer.convert_tokens_to_ids("ĠYes"))] = 5.0
    assert float(tokens.yes_probability(logits)) > 0.999
    logits = torch.full((len(tokens.columns),), -30.0)
    logits[tokens.columns.index(tokenizer.convert_tokens_to_ids("No"))] = 5.0
    assert float(tokens.yes_probability(logits)) < 0.001


def _teacher_forced_yes(model: InspectionModel, image, reply_ids: list[int], answer_index: int) -> float:
    """P(yes) from one plain forward pass over prompt + the reply up to its answer word."""
    batch = model._prepare([image])
    prefix = torch.tensor([reply_ids[:answer_index]])
    inputs = dict(batch)
    inputs["input_ids"] = torch.cat([batch["input_ids"], prefix], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = torch.cat([batch["mm_token_type_ids"], torch.zeros_like(prefix)], dim=1)
    with torch.no_grad():
        logits = model.model(**inputs).logits[0, -1]
    return float(model.answers.yes_probability(logits[model.answers.columns]))


@pytest.fixture(scope="module")
def shipped():
    return load_bundle(REPO / "models" / "tiny-cgro", "cpu")


def test_answer_logits_are_the_raw_logits_not_the_penalised_ones(shipped):
    # A prompt that says "yes or no" puts both answer words in the context, so a repetition penalty
    # (the real checkpoint's generation_config sets 1.05) changes their processed scores at every step.
    prompt = PromptSpec(question="Are there any defects or anomalies in the image? Answer yes or no.")
    bundle = dataclasses.replace(shipped, manifest=shipped.manifest.model_copy(update={"prompt": prompt}))
    model = InspectionModel(bundle, bundle.manifest.real)
    batch = model._prepare([make_sample(21, 168, defect="hole").image])
    with torch.no_grad(), recording_answer_logits(model.model, model.answers) as recorder:
        out = model.model.generate(**batch, max_new_tokens=12, do_sample=False, repetition_penalty=1.3,
                                   output_logits=True, output_scores=True, return_dict_in_generate=True)
    recorded, _, _ = recorder.stacked()
    columns = model.answers.columns
    raw = torch.stack([step[:, columns] for step in out.logits]).float()
    processed = torch.stack([step[:, columns] for step in out.scores]).float()
    assert torch.allclose(recorded, raw, atol=1e-5)
    assert not torch.allclose(processed, raw, atol=1e-3)  # the trap is real in this configuration


def test_score_is_p_yes_from_a_plain_forward_pass_whatever_the_generation_config(shipped):
    model = InspectionModel(shipped, shipped.manifest.real)
    shipped.model.generation_config.repetition_penalty = 1.3
    try:
        for image in (make_sample(21, 168, defect="hole").image, make_sample(22, 168, anomalous=False).image):
            reply = model.run([image])[0][0]
            assert reply.score is not None, reply.text
            ids = model.tokenizer.encode(reply.text, add_special_tokens=False)
            answer = token_starting_at(token_char_spans(model.decode, ids), parse_reply(reply.text).answer_start)
            assert reply.score == pytest.approx(_teacher_forced_yes(model, image, ids, answer), rel=1e-3, abs=1e-9)
    finally:
        shipped.model.generation_config.repetition_penalty = 1.0


def test_branch_points_pick_the_most_hesitant_reasoning_steps_and_mix_exactly():
    reply = "<think>a b c</think><answer>no</answer>"
    pieces = ["<think>", "a", " b", " c", "</think>", "<answer>", "no", "</answer>"]
    ids = list(range(10, 10 + len(pieces)))
    spans = token_char_spans(lambda prefix: "".join(pieces[i - 10] for i in prefix), ids)
    parsed = parse_reply(reply)
    top_ids = torch.tensor([[ids[i], 99] for i in range(len(ids))])
    top_probs = torch.tensor([[0.9, 0.05], [0.6, 0.4], [0.7, 0.3], [0.99, 0.0001],
                              [0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    points = branch_points(0, ids, spans, parsed, top_probs, top_ids, count=2, min_probability=1e-3)
    # Only reasoning tokens (a, b, c) branch; the two likeliest runner-ups; c's is below the floor.
    assert [len(p.prefix) for p in points] == [1, 2]
    assert (points[0].row, points[0].prefix, points[0].token) == (0, tuple(ids[:1]), 99)
    assert (points[0].chosen_probability, points[0].branch_probability) == pytest.approx((0.6, 0.4))
    # One branch: the exact mixture of the two replies' P(yes).
    assert mixed_score(0.0, [(points[0], 1.0)]) == pytest.approx(0.4)
    # An unparsable branch (None) leaves the greedy score.
    assert mixed_score(0.2, [(points[0], None)]) == pytest.approx(0.2)
    # Several: the sum of the corrections (first order), clipped to [0, 1].
    assert mixed_score(0.1, [(points[0], 1.0), (points[1], 1.0)]) == pytest.approx(0.1 + 0.4 * 0.9 + 0.3 * 0.9)
    even = BranchPoint(0, (), 1, 0.5, 0.5)
    assert mixed_score(0.0, [(even, 1.0)] * 3) == 1.0
