"""A 4-bit (bitsandbytes NF4) bundle loads and inspects on the CPU too."""

import pytest
import torch

from tests.conftest import REPO

bitsandbytes = pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the gpu/test extras")


def test_nf4_bundle_round_trip_on_cpu(format_bundle, tmp_path):
    from transformers import BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration

    from inspectd.bundle.files import read_manifest
    from inspectd.bundle.load import load_bundle
    from inspectd.bundle.save import save_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions
    from inspectd.model.processor import ImageOnlyQwenProcessor

    quantization = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        format_bundle, quantization_config=quantization, device_map="cpu", dtype=torch.float32
    )
    processor = ImageOnlyQwenProcessor.from_pretrained(format_bundle)
    manifest = read_manifest(format_bundle).model_copy(update={"quantization": "nf4", "name": "tiny-nf4"})
    # Saved before any forward pass: bitsandbytes repacks CPU weights on first use.
    save_bundle(model, processor, tmp_path / "nf4", manifest, "tiny NF4 test bundle")
    full_size = (format_bundle / "model.safetensors").stat().st_size
    assert (tmp_path / "nf4" / "model.safetensors").stat().st_size < full_size

    loaded = load_bundle(tmp_path / "nf4", "cpu")
    assert isinstance(loaded.model.model.language_model.layers[0].mlp.down_proj, bitsandbytes.nn.Linear4bit)

    # The reloaded bundle computes what the quantized model in memory computes.
    from PIL import Image

    from inspectd.bundle.manifest import PromptSpec
    from inspectd.model.prompting import chat_text

    with Image.open(REPO / "samples" / "sample-3-defect-spot.png") as image:
        batch = processor(text=[chat_text(processor, PromptSpec())], images=[image.convert("RGB")], return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).logits
        actual = loaded.model(**batch).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)

    inspector = Inspector(loaded, loaded.manifest.real, InspectorOptions())
    result = inspector.inspect_files([REPO / "samples" / "sample-3-defect-spot.png"])[0]
    # A 0.7M-parameter model loses its reply format at 4 bits; the run itself must still complete.
    assert result.verdict.value in ("anomalous", "normal", "unknown") and result.error is None
