"""Turn a trained model into the bundle the daemon loads.

Steps: load the base model folder (a bundle or any local Qwen2.5-VL folder),
merge an optional LoRA adapter, convert to the deployment precision (NF4
4-bit through bitsandbytes, bfloat16 or float32), copy the processor, save
the bundle with its manifest, then reload it, check that the saved weights
compute what the converted model computes, and calibrate the threshold on a
validation folder when one is given. Never imported by the daemon.

NF4 on the CPU: bitsandbytes repacks weights at the first forward pass and a
checkpoint saved after that reloads wrong (logits off by up to 1.24), so the model is
saved before it ever runs.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import BitsAndBytesConfig, Qwen2_5_VLForConditionalGeneration

from inspectd.bundle.files import MANIFEST_NAME, read_manifest, replace_model_card
from inspectd.bundle.manifest import BundleManifest, PromptSpec, ScoreSpec
from inspectd.bundle.quanto import SCHEMES as QUANTO_SCHEMES
from inspectd.bundle.quanto import quantize_language_model
from inspectd.bundle.save import save_bundle
from inspectd.errors import BundleError
from inspectd.export.calibrate import Calibration, balanced_accuracy_threshold
from inspectd.bundle.processor import ImageOnlyQwenProcessor
from inspectd.real.params import RealParams

log = logging.getLogger("inspectd.export")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# transformers 5 matches skip patterns from the start of the full module name (or as a suffix): "visual"
# alone never matched "model.visual.blocks.0...", so NF4 bundles had a 4-bit vision tower. The vision
# encoder stays in the compute dtype (it is frozen in CGRO and small next to the language model).
NF4_SKIPPED_MODULES = ("model.visual", "visual", "lm_head")


@dataclass(frozen=True)
class ExportRequest:
    base: Path
    out: Path
    name: str
    quantization: str = "nf4"  # nf4 | bfloat16 | float32
    adapter: Path | None = None
    base_model_name: str | None = None
    prompt: PromptSpec | None = None
    real: RealParams | None = None
    score: ScoreSpec | None = None
    image_size: tuple[int, int] | None = None
    max_new_tokens: int | None = None
    threshold: float | None = None
    calibration: Path | None = None
    device: str = "cpu"
    card_notes: str = ""
    eval_report: Path | None = None
    training: dict = field(default_factory=dict)


def _base_manifest(base: Path) -> BundleManifest | None:
    return read_manifest(base) if (base / MANIFEST_NAME).is_file() else None


def _work_dtype(device: str) -> torch.dtype:
    """bfloat16 on a GPU (a 7B merges in ~16 GB of GPU memory, no float32 copy anywhere); float32 on a CPU."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _load_merged(request: ExportRequest) -> Qwen2_5_VLForConditionalGeneration:
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        request.base, dtype=_work_dtype(request.device), device_map=request.device, local_files_only=True,
        use_safetensors=True,
    )
    if request.adapter is not None:
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise BundleError("merging a LoRA adapter needs peft: pip install 'inspectd[train]'") from exc
        model = PeftModel.from_pretrained(model, request.adapter, local_files_only=True).merge_and_unload()
    return model.eval()


def _probe_inputs(processor) -> dict:
    from PIL import Image

    from inspectd.model.prompting import chat_text

    image = Image.new("RGB", (112, 112), (128, 96, 64))
    return dict(processor(text=[chat_text(processor, PromptSpec())], images=[image], return_tensors="pt"))


@dataclass(frozen=True)
class ExportResult:
    manifest: BundleManifest
    drift: float  # largest logit change on a probe image, converted vs merged model (float32 on CPU, bf16 on GPU)
    calibration: Calibration | None = None  # None when no calibration folder was given


def export_bundle(request: ExportRequest) -> ExportResult:
    base_manifest = _base_manifest(request.base)
    processor = ImageOnlyQwenProcessor.from_pretrained(request.base, local_files_only=True)
    merged = _load_merged(request)
    probe = _probe_inputs(processor)
    with torch.inference_mode():
        float_logits = merged(**{k: v.to(merged.device) for k, v in probe.items()}).logits.float().cpu()
    with tempfile.TemporaryDirectory(prefix="inspectd-export-") as scratch:
        merged_dir = Path(scratch) / "merged"
        merged.save_pretrained(merged_dir, safe_serialization=True)
        processor.save_pretrained(merged_dir)
        del merged
        if request.quantization == "nf4":
            compute = torch.bfloat16 if request.device.startswith("cuda") else torch.float32
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                merged_dir,
                quantization_config=BitsAndBytesConfig(
                    load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute,
                    llm_int8_skip_modules=list(NF4_SKIPPED_MODULES),
                ),
                dtype=compute,
                device_map=request.device,
                local_files_only=True,
            )
            dtype = "bfloat16" if compute == torch.bfloat16 else "float32"
        elif request.quantization in QUANTO_SCHEMES:
            dtype = "float32"  # CPU deployment: int weights, float32 activations
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                merged_dir, dtype=torch.float32, device_map=request.device, local_files_only=True
            )
            quantize_language_model(model, request.quantization)
        else:
            dtype = request.quantization
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                merged_dir, dtype=_DTYPES[dtype], device_map=request.device, local_files_only=True
            )
        defaults = base_manifest or BundleManifest(name=request.name, base_model="unknown")
        manifest = BundleManifest(
            name=request.name,
            base_model=request.base_model_name or defaults.base_model,
            quantization=request.quantization if request.quantization in ("nf4", *QUANTO_SCHEMES) else "none",
            dtype=dtype,
            prompt=request.prompt or defaults.prompt,
            image_size=request.image_size or defaults.image_size,
            max_new_tokens=request.max_new_tokens or defaults.max_new_tokens,
            threshold=request.threshold if request.threshold is not None else defaults.threshold,
            real=request.real or defaults.real,
            score=request.score or defaults.score,
        )
        # Saved before any forward pass (the CPU repacking trap).
        save_bundle(model, processor, request.out, manifest, model_card(request, manifest, None))
        drift = _check_round_trip(model, processor, request, probe, float_logits)
    calibration = None
    if request.calibration is not None:
        calibration = calibrate_bundle(request, manifest, drift)  # rewrites the card with threshold and drift
    else:
        replace_model_card(request.out, model_card(request, manifest, None, drift))
    return ExportResult(read_manifest(request.out), drift, calibration)


def _check_round_trip(model, processor, request: ExportRequest, probe: dict, float_logits: torch.Tensor) -> float:
    """The saved bundle must compute what the converted model computes.

    Returns the conversion's drift: the largest logit change on the probe
    image against the float32 model that was exported.
    """
    from inspectd.bundle.load import load_bundle

    inputs = {k: v.to(model.device) for k, v in probe.items()}
    with torch.no_grad():  # quanto int4 refuses inference_mode
        expected = model(**inputs).logits.float().cpu()
    reloaded = load_bundle(request.out, request.device)
    with torch.no_grad():
        actual = reloaded.model(**{k: v.to(reloaded.device) for k, v in inputs.items()}).logits.float().cpu()
    difference = float((actual - expected).abs().max())
    if difference > 1e-3:
        shutil.rmtree(request.out, ignore_errors=True)
        raise BundleError(f"exported bundle reloads with logits off by {difference:.3g}; export refused")
    drift = float((expected - float_logits).abs().max())
    log.info("round trip checked: max logit difference %.2e; %s drift from float32 %.3g",
             difference, request.quantization, drift)
    return drift


def calibrate_bundle(request: ExportRequest, manifest: BundleManifest, drift: float | None = None) -> Calibration:
    """Sets the bundle's threshold on the calibration folder and rewrites its card."""
    import numpy as np

    from inspectd.bundle.load import load_bundle
    from inspectd.data.layouts import read_labelled_folder, read_mvtec
    from inspectd.inspection.inspector import Inspector, InspectorOptions
    from inspectd.metrics.ranking import exact_auroc_ap

    folder = request.calibration
    dataset = read_mvtec(folder) if (folder / "test").is_dir() or any(
        (p / "test").is_dir() for p in folder.iterdir() if p.is_dir()) else read_labelled_folder(folder)
    bundle = load_bundle(request.out, request.device)
    inspector = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=4, threshold=0.5))
    results = inspector.inspect_files([image.path for image in dataset.images])
    scored = [(image.anomalous, result.score) for image, result in zip(dataset.images, results)
              if result.score is not None]
    if not scored:
        raise BundleError(f"{folder}: no calibration image gave a parsable reply; threshold not calibrated")
    labels, scores = (np.array(x) for x in zip(*scored))
    threshold, balanced = balanced_accuracy_threshold(labels, scores)
    auroc, _ = exact_auroc_ap(labels, scores)
    calibration = Calibration(threshold, balanced, len(dataset.images), len(dataset.images) - len(scored), auroc)
    log.info("calibrated threshold %.4f (balanced accuracy %.3f, image AUROC %.3f on %d images, %d unparsable)",
             threshold, balanced, auroc, calibration.images, calibration.unparsable)
    card = model_card(request, manifest.model_copy(update={"threshold": threshold}), calibration, drift)
    replace_model_card(request.out, card, threshold=threshold)
    return calibration


_PRECISION = {
    "nf4": "4-bit NF4 weights (bitsandbytes), compute ",
    "quanto-int8": "int8 language-model weights (optimum-quanto, for CPUs), compute ",
    "quanto-int4": "int4 language-model weights (optimum-quanto, for CPUs), compute ",
}


def model_card(request: ExportRequest, manifest: BundleManifest, calibration, drift: float | None = None) -> str:
    lines = [
        f"# {manifest.name}",
        "",
        f"- Base model: {manifest.base_model} (from `{request.base}`)",
        f"- LoRA adapter merged: {request.adapter or 'none'}",
        f"- Precision: {_PRECISION.get(manifest.quantization, '')}{manifest.dtype}"
        + ("" if drift is None else f"; largest logit change vs the float32 model on a probe image: {drift:.3g}"),
        f"- Prompt: {manifest.prompt.user_text()!r}",
        f"- Image size: {manifest.image_size or 'processor default (aspect kept)'}; max new tokens {manifest.max_new_tokens}",
        f"- ReAL: {json.dumps(manifest.real.model_dump(mode='json'))}",
        f"- Score: {json.dumps(manifest.score.model_dump(mode='json'))}",
    ]
    if calibration is not None:
        lines.append(
            f"- Threshold: {calibration.threshold:.4f}, calibrated on `{request.calibration}` "
            f"({calibration.images} images, {calibration.unparsable} unparsable) by maximum balanced accuracy "
            f"({calibration.balanced_accuracy:.3f}); the score's image AUROC there: {calibration.image_auroc:.3f}"
        )
    else:
        lines.append(f"- Threshold: {manifest.threshold} (not calibrated)")
    if request.training:
        lines += ["", "## Training", ""] + [f"- {k}: {v}" for k, v in request.training.items()]
    if request.card_notes:
        lines += ["", "## Notes", "", request.card_notes.strip()]
    if request.eval_report is not None:
        from inspectd.evaluation.runner import CategoryReport, EvalReport, format_table

        data = json.loads(Path(request.eval_report).read_text())
        report = EvalReport(data["bundle"], data["bundle_sha256"], [CategoryReport(**c) for c in data["categories"]],
                            data["datasets"], data["overall"])
        lines += ["", "## Evaluation", "", "```", format_table(report), "```"]
    return "\n".join(lines) + "\n"
