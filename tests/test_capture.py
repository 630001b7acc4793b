"""The capture records exactly the attention eager output_attentions would give."""

import numpy as np
import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from inspectd.bundle.manifest import PromptSpec
from inspectd.model.capture import AttentionRecorder, enable_capture, recording
from inspectd.bundle.processor import ImageOnlyQwenProcessor
from inspectd.model.prompting import anomaly_word_token_ids, capture_targets, chat_text
from tests.conftest import noise_image


def _load(path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path, attn_implementation="eager")
    return model.eval(), ImageOnlyQwenProcessor.from_pretrained(path)


def test_capture_matches_eager_attentions_with_left_padding(random_bundle):
    model, processor = _load(random_bundle)
    images = [noise_image(224, 160, 1), noise_image(308, 308, 2)]  # 12x16 and 22x22 patch grids
    prompt = PromptSpec()
    chat = chat_text(processor, prompt)
    batch = processor(text=[chat, chat], images=images, return_tensors="pt", padding=True, padding_side="left")
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum(), "first row must be left-padded"
    assert batch["attention_mask"][0, 0] == 0
    text_ids, hits = anomaly_word_token_ids(processor.tokenizer, prompt, ("defects", "anomalies"))
    targets, counts = capture_targets(batch["input_ids"], model.config.image_token_id, text_ids, hits)
    assert counts == [48, 121]

    steps = 10
    with torch.inference_mode():
        eager = model.generate(
            **batch, max_new_tokens=steps, do_sample=False, output_attentions=True, return_dict_in_generate=True
        )
        enable_capture(model)
        recorder = AttentionRecorder(targets, model.config.text_config.num_hidden_layers)
        with recording(recorder):
            captured_sequences = model.generate(**batch, max_new_tokens=steps, do_sample=False)
    assert torch.equal(captured_sequences, eager.sequences)
    captured = recorder.stacked()
    assert captured.shape == (steps - 1, 2, 2, 121 + len(hits))
    for step in range(1, steps):
        for layer in range(2):
            full = eager.attentions[step][layer][:, :, -1, :].float().mean(dim=1)
            expected = torch.gather(full, 1, targets.positions) * targets.valid
            torch.testing.assert_close(captured[step - 1, layer], expected, atol=1e-5, rtol=0)
    # Padding slots of the smaller image stay zero; real slots carry weight.
    assert torch.all(captured[:, :, 0, 48:121] == 0)
    assert torch.all(captured[:, :, 0, :48].sum(-1) > 0)


def test_only_reals_layers_are_kept_in_a_buffer_sized_for_the_reply(random_bundle):
    """Layers below layer_start are not recorded; the buffer is steps x layers x batch x K x 4 bytes, allocated once."""
    model, processor = _load(random_bundle)
    chat = chat_text(processor, PromptSpec())
    batch = processor(text=[chat], images=[noise_image(168, 168)], return_tensors="pt")
    text_ids, hits = anomaly_word_token_ids(processor.tokenizer, PromptSpec(), ("defects", "anomalies"))
    targets, _ = capture_targets(batch["input_ids"], model.config.image_token_id, text_ids, hits)
    steps = 8
    with torch.inference_mode():
        eager = model.generate(**batch, max_new_tokens=steps, do_sample=False, output_attentions=True,
                               return_dict_in_generate=True)
        enable_capture(model)
        recorder = AttentionRecorder(targets, 2, layers=range(1, 2), max_steps=steps)
        with recording(recorder):
            sequences = model.generate(**batch, max_new_tokens=steps, do_sample=False)
    assert torch.equal(sequences, eager.sequences)
    assert recorder.buffer_bytes() == steps * 1 * 1 * targets.positions.shape[1] * 4
    captured = recorder.stacked()
    assert captured.shape == (steps - 1, 1, 1, targets.positions.shape[1])
    for step in range(1, steps):
        full = eager.attentions[step][1][:, :, -1, :].float().mean(dim=1)
        torch.testing.assert_close(captured[step - 1, 0], torch.gather(full, 1, targets.positions), atol=1e-5, rtol=0)


def test_plain_generation_unchanged_outside_recording(random_bundle):
    model, processor = _load(random_bundle)
    chat = chat_text(processor, PromptSpec())
    batch = processor(text=[chat], images=[noise_image(200, 140)], return_tensors="pt")
    with torch.inference_mode():
        reference = model.generate(**batch, max_new_tokens=6, do_sample=False)
        enable_capture(model)
        again = model.generate(**batch, max_new_tokens=6, do_sample=False)
    assert torch.equal(reference, again)


def test_anomaly_word_positions_point_at_the_words(random_bundle):
    _, processor = _load(random_bundle)
    prompt = PromptSpec()
    text_ids, hits = anomaly_word_token_ids(processor.tokenizer, prompt, ("defects", "anomalies"))
    words = processor.tokenizer.decode([text_ids[i] for i in hits]).split()
    assert words == ["defects", "anomalies"]
    chat = chat_text(processor, prompt)
    batch = processor(text=[chat], images=[noise_image(112, 112)], return_tensors="pt")
    targets, counts = capture_targets(batch["input_ids"], processor.image_token_id, text_ids, hits)
    ids = batch["input_ids"][0]
    picked = [int(ids[p]) for p in targets.positions[0, counts[0]:]]
    assert processor.tokenizer.decode(picked).split() == ["defects", "anomalies"]
    assert np.all(targets.valid.numpy() == 1)


def test_capture_adds_no_host_synchronisation_to_a_decode_step(random_bundle):
    """On a GPU a device->host read (.item(), bool(tensor), .cpu()) stalls the stream. Counted here at the aten
    level: a captured generation makes exactly the reads plain generation makes (generate's own stopping check),
    and the one copy to the host after it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class HostReads(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in (torch.ops.aten._local_scalar_dense.default, torch.ops.aten.item.default,
                        torch.ops.aten.is_nonzero.default):
                self.count += 1
            return func(*args, **(kwargs or {}))

    model, processor = _load(random_bundle)
    chat = chat_text(processor, PromptSpec())
    batch = processor(text=[chat], images=[noise_image(168, 168)], return_tensors="pt")
    text_ids, hits = anomaly_word_token_ids(processor.tokenizer, PromptSpec(), ("defects", "anomalies"))
    targets, _ = capture_targets(batch["input_ids"], model.config.image_token_id, text_ids, hits)
    enable_capture(model)
    counts = []
    with torch.inference_mode():
        for capture in (False, True):
            recorder = AttentionRecorder(targets, 2, max_steps=12)
            with HostReads() as reads:
                if capture:
                    with recording(recorder):
                        model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False)
                else:
                    model.generate(**batch, max_new_tokens=12, min_new_tokens=12, do_sample=False)
            counts.append(reads.count)
    assert counts[1] == counts[0], counts
    assert recorder.stacked().shape[0] == 11
