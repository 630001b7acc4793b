"""Turn a trained model into the bundle the daemon loads.

Steps: load the base model folder (a bundle or any local Qwen2.5-VL folder),
merge an optional LoRA adapter, convert to the deployment precision (NF4
4-bit through bitsandbytes, bfloat16 or float32), copy the processor, save
the bundle with its manifest into a partial folder beside the output, then
reload it, check that the saved weights compute what the converted model
computes, calibrate the threshold on a validation folder when one is given,
and only then rename it into place. Never imported by the daemon.

NF4 on the CPU: bitsandbytes repacks weights at the first forward pass and a
checkpoint saved after that reloads wrong (logits off by up to 1.24), so the model is
saved before it ever runs.
"""

from __future__ import annotations

import errno
import json
import logging
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from inspectd.bundle.files import (
    MANIFEST_NAME, group_id, move_into_place, read_manifest, replace_model_card, set_bundle_group, staged_beside,
)
from inspectd.bundle.nf4 import nf4_config
from inspectd.bundle.manifest import BundleManifest, PromptSpec, ScoreSpec
from inspectd.bundle.quanto import SCHEMES as QUANTO_SCHEMES
from inspectd.bundle.quanto import quantize_language_model
from inspectd.bundle.save import save_bundle
from inspectd.errors import BundleError
from inspectd.export.calibrate import Calibration, calibrate, check_target_recall, operating_points_markdown
from inspectd.bundle.processor import ImageOnlyQwenProcessor
from inspectd.real.params import RealParams

log = logging.getLogger("inspectd.export")

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


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
    target_recall: float | None = None  # with ``calibration``: the recall rule's target; None: balanced accuracy
    device: str = "cpu"
    card_notes: str = ""
    eval_report: Path | None = None
    training: dict = field(default_factory=dict)
    group: str | None = None  # chgrp the bundle (the service user's group); None: the replaced bundle's group
    scratch_dir: Path | None = None  # where the temporary merged copy goes; None: beside ``out``


def _base_manifest(base: Path) -> BundleManifest | None:
    return read_manifest(base) if (base / MANIFEST_NAME).is_file() else None


def _work_dtype(device: str) -> torch.dtype:
    """bfloat16 on a GPU (a 7B merges in ~16 GB of GPU memory, no float32 copy anywhere); float32 on a CPU."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _load_merged(request: ExportRequest, base: BundleManifest | None) -> Qwen2_5_VLForConditionalGeneration:
    """The base's model (``base``: its manifest when it is a bundle) with the adapter merged, if any."""
    if base is not None and base.quantization != "none":
        model = _dequantized_base(request)
    else:
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


def _dequantized_base(request: ExportRequest) -> Qwen2_5_VLForConditionalGeneration:
    """A deployed (quantized) bundle as the base: recalibrating it on a plant's own photos (``--calibration``
    with ``--target-recall``) or exporting it at another precision. Its 4-bit weights cannot be saved again as
    they are, so the export starts from their dequantized copy; the bundle is verified first, as the daemon
    would load it (a tampered one is refused)."""
    from inspectd.bundle.dequantized_copy import dequantized_copy
    from inspectd.bundle.load import load_bundle

    return dequantized_copy(load_bundle(request.base, request.device).model, _work_dtype(request.device))


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
    """Write the bundle into a partial folder beside ``request.out``, check it there, then rename it into place.

    The round trip, the calibration and the card all run against the partial
    folder (``.<out name>.partial-*``), so a failed or interrupted export
    leaves the bundle at ``--out`` as it was (byte for byte) and no new one:
    a daemon that reloads ``--out`` never sees a bundle that did not pass.
    The partial folder sits in ``--out``'s own parent so the final move is a
    rename on one filesystem (see ``move_into_place``).
    """
    out = Path(request.out)
    # A typo'd group or a calibration folder that cannot calibrate fails now, not after minutes of merging.
    if request.group is not None:
        group_id(request.group)
    _check_target_recall(request)
    if request.calibration is not None:
        read_calibration(request.calibration)
    # KeyboardInterrupt too: no partial bundle is left behind; save_bundle replaces the empty folder
    with staged_beside(out, "partial") as partial:
        log.info("writing the bundle into %s; it replaces %s only once every check passed", partial, out)
        drift, calibration = _write_and_check(request, partial)
        _give_group(partial, request.group, out)
        move_into_place(partial, out)
    return ExportResult(read_manifest(out), drift, calibration)


def _check_target_recall(request: ExportRequest) -> None:
    """A recall target outside (0, 1], or one with nothing to calibrate on, fails before the merge."""
    if request.target_recall is None:
        return
    if request.calibration is None:
        raise BundleError(f"target recall {request.target_recall} needs a calibration folder (--calibration) "
                          "to choose the threshold on")
    try:
        check_target_recall(request.target_recall)
    except ValueError as exc:
        raise BundleError(f"{exc} (--target-recall)") from None


def _write_and_check(request: ExportRequest, folder: Path) -> tuple[float, Calibration | None]:
    """Merge, convert and save into ``folder``; round trip, calibrate and write the card there."""
    base_manifest = _base_manifest(request.base)
    processor = ImageOnlyQwenProcessor.from_pretrained(request.base, local_files_only=True)
    merged = _load_merged(request, base_manifest)
    probe = _probe_inputs(processor)
    with torch.inference_mode():
        float_logits = merged(**{k: v.to(merged.device) for k, v in probe.items()}).logits.float().cpu()
    scratch_parent = Path(request.scratch_dir) if request.scratch_dir is not None else Path(request.out).parent
    _check_scratch_space(scratch_parent, _state_bytes(merged), merged.dtype)
    with tempfile.TemporaryDirectory(prefix=f".{Path(request.out).name}.scratch-", dir=scratch_parent) as scratch:
        merged_dir = Path(scratch) / "merged"
        with _naming_full_disk(scratch_parent, "the temporary merged copy", "--scratch-dir"):
            merged.save_pretrained(merged_dir, safe_serialization=True)
            processor.save_pretrained(merged_dir)
        del merged
        model, dtype = _convert(request, merged_dir)
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
        with _naming_full_disk(folder.parent, "the bundle", "--out"):
            save_bundle(model, processor, folder, manifest, model_card(request, manifest, None))
        drift = _check_round_trip(model, folder, request, probe, float_logits)
    calibration = None
    if request.calibration is not None:
        calibration = calibrate_bundle(request, manifest, folder, drift)  # rewrites the card: threshold, drift
    else:
        replace_model_card(folder, model_card(request, manifest, None, drift))
    return drift, calibration


def _convert(request: ExportRequest, merged_dir: Path) -> tuple[Qwen2_5_VLForConditionalGeneration, str]:
    """The merged copy reloaded in the deployment precision, and the compute dtype recorded for it."""
    if request.quantization == "nf4":
        compute = torch.bfloat16 if request.device.startswith("cuda") else torch.float32
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            merged_dir,
            quantization_config=nf4_config(compute),
            dtype=compute,
            device_map=request.device,
            local_files_only=True,
        )
        return model, "bfloat16" if compute == torch.bfloat16 else "float32"
    if request.quantization in QUANTO_SCHEMES:
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            merged_dir, dtype=torch.float32, device_map=request.device, local_files_only=True
        )
        quantize_language_model(model, request.quantization)
        return model, "float32"  # CPU deployment: int weights, float32 activations
    dtype = request.quantization
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        merged_dir, dtype=_DTYPES[dtype], device_map=request.device, local_files_only=True
    )
    return model, dtype


def _state_bytes(model: torch.nn.Module) -> int:
    """Bytes the merged copy takes on disk: every tensor once (tied weights are stored once)."""
    tensors = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
    return sum(tensors.values())


def _check_scratch_space(folder: Path, needed: int, dtype: torch.dtype) -> None:
    """Say where the merged copy goes and refuse now if it cannot fit, not after writing most of it.

    It used to go to ``$TMPDIR``, often a RAM-backed ``/tmp`` far smaller than
    a 7B model (~17 GB in bfloat16, ~33 GB in float32).
    """
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    log.info("temporary merged copy (%s): ~%s in %s (%s free there; --scratch-dir moves it)",
             str(dtype).removeprefix("torch."), _size(needed), folder, _size(free))
    if free < needed:
        raise BundleError(f"{folder}: {_size(free)} free, the temporary merged copy needs ~{_size(needed)}; "
                          "free space there or pass --scratch-dir on a larger disk")


def _size(n: int) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


@contextmanager
def _naming_full_disk(folder: Path, what: str, option: str):
    """A full disk as a BundleError that names the folder (safetensors reports it as its own error type)."""
    try:
        yield
    except Exception as exc:
        full = getattr(exc, "errno", None) == errno.ENOSPC or "No space left on device" in str(exc) \
            or "StorageFull" in str(exc)
        if not full:
            raise
        raise BundleError(f"{folder}: disk full while writing {what} "
                          f"({_size(shutil.disk_usage(folder).free)} free); free space there "
                          f"or pass {option} on a larger disk") from exc


def _give_group(folder: Path, group: str | None, out: Path) -> None:
    """``--group``, else the group of the bundle being replaced, so a re-export keeps the service's access."""
    if group is not None:
        set_bundle_group(folder, group)
        return
    if not out.exists():
        return
    previous = str(out.stat().st_gid)
    try:
        set_bundle_group(folder, previous)
    except BundleError as exc:
        log.warning("%s; the new bundle keeps this user's group (use --group)", exc)


def _check_round_trip(model, folder: Path, request: ExportRequest, probe: dict, float_logits: torch.Tensor) -> float:
    """The bundle saved in ``folder`` must compute what the converted model computes.

    Returns the conversion's drift: the largest logit change on the probe
    image against the float32 model that was exported.
    """
    from inspectd.bundle.load import load_bundle

    inputs = {k: v.to(model.device) for k, v in probe.items()}
    with torch.no_grad():  # quanto int4 refuses inference_mode
        expected = model(**inputs).logits.float().cpu()
    reloaded = load_bundle(folder, request.device)
    with torch.no_grad():
        actual = reloaded.model(**{k: v.to(reloaded.device) for k, v in inputs.items()}).logits.float().cpu()
    difference = float((actual - expected).abs().max())
    if difference > 1e-3:
        raise BundleError(f"{folder}: the exported bundle reloads with logits off by {difference:.3g}; export "
                          f"refused, {request.out} left as it was")
    drift = float((expected - float_logits).abs().max())
    log.info("round trip checked: max logit difference %.2e; %s drift from float32 %.3g",
             difference, request.quantization, drift)
    return drift


def calibrate_bundle(request: ExportRequest, manifest: BundleManifest, bundle_folder: Path,
                     drift: float | None = None) -> Calibration:
    """Sets the threshold of the bundle in ``bundle_folder`` (the export's partial folder, not ``--out``)
    on the calibration folder and rewrites its card.

    A calibration that cannot choose a threshold is a BundleError naming the
    calibration folder, so the export fails and nothing replaces ``--out``.
    """
    import numpy as np

    from inspectd.bundle.load import load_bundle
    from inspectd.inspection.inspector import Inspector, InspectorOptions

    folder = request.calibration
    dataset = read_calibration(folder)
    bundle = load_bundle(bundle_folder, request.device)
    inspector = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=4, threshold=0.5))
    results = inspector.inspect_files([image.path for image in dataset.images])
    scored = [(image.anomalous, result.score) for image, result in zip(dataset.images, results)
              if result.score is not None]
    if not scored:
        raise BundleError(f"{folder}: no calibration image gave a parsable reply; threshold not calibrated")
    labels, scores = (np.array(x) for x in zip(*scored))
    _require_both_labels(folder, labels, "images with a parsable reply")
    calibration = calibrate(labels, scores, len(dataset.images) - len(scored), request.target_recall)
    log.info("calibrated threshold %.4f by %s; balanced accuracy %.3f, image AUROC %.3f on %d images "
             "(%d unparsable); expected there: %s", calibration.threshold, calibration.rule,
             calibration.balanced_accuracy, calibration.image_auroc, calibration.images, calibration.unparsable,
             calibration.expected.describe(intervals=True))
    for warning in calibration.warnings():
        log.warning("%s: %s", folder, warning)
    card = model_card(request, manifest.model_copy(update={"threshold": calibration.threshold}), calibration, drift)
    replace_model_card(bundle_folder, card, threshold=calibration.threshold)  # bundle.json: the threshold only
    return calibration


def read_calibration(folder: Path):
    """The labelled calibration images (MVTec layout, or good/ + defect folders), both kinds required.

    export_bundle reads them before any work too, so a folder that cannot
    calibrate fails in seconds rather than after the merge.
    """
    from inspectd.data.layouts import read_labelled_folder, read_mvtec

    if not Path(folder).is_dir():
        raise BundleError(f"{folder}: calibration folder does not exist")
    dataset = read_mvtec(folder) if (folder / "test").is_dir() or any(
        (p / "test").is_dir() for p in folder.iterdir() if p.is_dir()) else read_labelled_folder(folder)
    _require_both_labels(folder, [image.anomalous for image in dataset.images], "images")
    return dataset


def _require_both_labels(folder: Path, anomalous, what: str) -> None:
    """A threshold needs normal and anomalous examples; say what the folder had."""
    anomalous = [bool(a) for a in anomalous]
    if all(anomalous) or not any(anomalous):
        raise BundleError(
            f"{folder}: calibration needs both normal and anomalous images; its {what}: "
            f"{anomalous.count(False)} normal, {anomalous.count(True)} anomalous; threshold not calibrated"
        )


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
        lines += _calibration_lines(request, calibration)
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


def _calibration_lines(request: ExportRequest, calibration: Calibration) -> list[str]:
    """The card's Threshold line with the rule, the rates expected at it, and the trade-off table.

    The rates are what a plant acts on (how many defects pass, how many good
    parts are flagged); bundle.json keeps only the threshold.
    """
    if calibration.target_recall is None:
        rule = f"by maximum balanced accuracy ({calibration.balanced_accuracy:.3f})"
    else:
        rule = (f"by the recall target {calibration.target_recall:g}: the highest threshold that flags at least "
                f"that share of the defects there (our rule; balanced accuracy {calibration.balanced_accuracy:.3f})")
    lines = [f"- Threshold: {calibration.threshold:.4f}, calibrated on `{request.calibration}` "
             f"({calibration.images} images, {calibration.unparsable} unparsable) {rule}; "
             f"the score's image AUROC there: {calibration.auroc_phrase()}"]
    if calibration.expected is None:  # built by hand with the first five fields only
        return lines
    lines.append(f"- Expected on those images at {calibration.threshold:.4f}: "
                 f"{calibration.expected.describe(intervals=True)}")
    lines += [f"- Warning: {warning}" for warning in calibration.warnings()]
    if calibration.target_recall is not None and calibration.balanced is not None:
        lines.append(f"- At the maximum-balanced-accuracy threshold {calibration.balanced.threshold:.4f} instead: "
                     f"{calibration.balanced.describe()}")
    if calibration.operating_points:
        lines += ["- Operating points on those images (the highest threshold reaching each recall):", "",
                  *operating_points_markdown(calibration)]
    return lines
