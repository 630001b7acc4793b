"""inspectd-export: LoRA merge, NF4 on the CPU, calibration; the daemon's loader accepts the result."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from inspectd.bundle.files import verify_bundle
from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample
from inspectd.export.calibrate import balanced_accuracy_threshold
from inspectd.export.exporter import ExportRequest, _probe_inputs, export_bundle
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.metrics.ranking import exact_auroc_ap
from tests.conftest import REPO

pytest.importorskip("bitsandbytes")


def test_nf4_export_reloads_with_the_exported_models_outputs(format_bundle, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(tmp_path / "nf4"),
         "--name", "tiny-nf4", "--quantization", "nf4", "--base-model-name", "tiny test model"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "round trip checked: max logit difference" in done.stderr
    manifest = verify_bundle(tmp_path / "nf4")
    assert manifest.quantization == "nf4" and manifest.base_model == "tiny test model"
    bundle = load_bundle(tmp_path / "nf4", "cpu")
    import bitsandbytes

    assert isinstance(bundle.model.model.language_model.layers[0].self_attn.q_proj, bitsandbytes.nn.Linear4bit)
    # The frozen vision tower and the output head stay in the compute dtype.
    four_bit = [name for name, module in bundle.model.named_modules() if isinstance(module, bitsandbytes.nn.Linear4bit)]
    assert four_bit and not any("visual" in name or "lm_head" in name for name in four_bit)
    # Close to the full-precision model it came from (NF4 error, not a broken checkpoint).
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.inference_mode():
        reference = full.model(**inputs).logits
        quantized = bundle.model(**inputs).logits
    agreement = (reference[0, -1].argmax() == quantized[0, -1].argmax()).item()
    assert agreement and torch.nn.functional.cosine_similarity(reference.flatten(), quantized.flatten(), dim=0) > 0.9


def test_lora_adapter_is_merged(format_bundle, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(format_bundle)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    torch.manual_seed(0)
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)  # a trained adapter, not the zero init
    lora.save_pretrained(tmp_path / "adapter")
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.inference_mode():
        expected = lora.eval()(**inputs).logits
        untouched = full.model(**inputs).logits
    assert (expected - untouched).abs().max() > 1e-3, "the adapter must change the outputs"
    export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "merged", name="merged", quantization="float32",
                                adapter=tmp_path / "adapter"))
    merged = load_bundle(tmp_path / "merged", "cpu")
    with torch.inference_mode():
        actual = merged.model(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert "adapter" in (tmp_path / "merged" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("scheme", ["quanto-int8", "quanto-int4"])
def test_quanto_cpu_export_reloads_exactly_and_stays_close_to_float(format_bundle, tmp_path, scheme):
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.nn import QLinear

    from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage

    result = export_bundle(ExportRequest(base=format_bundle, out=tmp_path / scheme, name=scheme, quantization=scheme))
    assert result.manifest.quantization == scheme and verify_bundle(tmp_path / scheme) == result.manifest
    assert f"{result.drift:.3g}" in (tmp_path / scheme / "MODEL_CARD.md").read_text()
    bundle = load_bundle(tmp_path / scheme, "cpu")
    assert isinstance(bundle.model.model.language_model.layers[0].mlp.up_proj, QLinear)
    assert not any(isinstance(m, QLinear) for m in bundle.model.model.visual.modules())
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.no_grad():
        reference = full.model(**inputs).logits
        quantized = bundle.model(**inputs).logits
    assert (quantized - reference).abs().max().item() == pytest.approx(result.drift, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(reference.flatten(), quantized.flatten(), dim=0) > 0.95
    # The daemon's inspection path runs it (no_grad, capture, ReAL) and still reads its replies.
    sample = make_sample(81_000, 112, defect="hole")
    inspected = Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_images(
        [NamedImage("hole.png", sample.image)])[0]
    assert inspected.parse_status == "ok" and inspected.anomaly_map is not None, inspected.reply


def test_a_tampered_quanto_weights_file_is_refused(format_bundle, tmp_path):
    pytest.importorskip("optimum.quanto")
    from inspectd.errors import BundleError

    export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "q", name="q", quantization="quanto-int8"))
    weights = tmp_path / "q" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(tmp_path / "q", "cpu")


def test_calibration_writes_threshold_and_keeps_bundle_valid(format_bundle, tmp_path):
    folder = tmp_path / "val"
    for kind, anomalous in (("good", False), ("defect", True)):
        (folder / kind).mkdir(parents=True)
        for i in range(4):
            make_sample(80_000 + 10 * anomalous + i, 96, anomalous=anomalous).image.save(folder / kind / f"{i}.png")
    result = export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "cal", name="cal",
                                         quantization="float32", calibration=folder))
    manifest = result.manifest
    assert 0.0 <= manifest.threshold <= 1.0
    assert verify_bundle(tmp_path / "cal").threshold == manifest.threshold
    card = (tmp_path / "cal" / "MODEL_CARD.md").read_text()
    assert "calibrated on" in card
    # The card also says how well the score ranks those images: the AUROC of the exported bundle's own scores.
    bundle = load_bundle(tmp_path / "cal", "cpu")
    paths = [folder / kind / f"{i}.png" for kind in ("good", "defect") for i in range(4)]
    scores = [r.score for r in Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_files(paths)]
    labels = np.array([False] * 4 + [True] * 4)
    expected, _ = exact_auroc_ap(labels[[s is not None for s in scores]], [s for s in scores if s is not None])
    assert result.calibration.images == 8 and result.calibration.image_auroc == pytest.approx(expected)
    assert f"image AUROC there: {expected:.3f}" in card


def test_balanced_accuracy_threshold_rule():
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    threshold, value = balanced_accuracy_threshold(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert threshold == pytest.approx(0.5) and value == 1.0
    threshold, value = balanced_accuracy_threshold(labels, np.array([0.90, 0.91, 0.92, 0.95, 0.96, 0.97]))
    assert threshold == pytest.approx(0.935) and value == 1.0
    with pytest.raises(ValueError, match="both normal and anomalous"):
        balanced_accuracy_threshold(np.ones(3, bool), np.array([0.1, 0.2, 0.3]))
