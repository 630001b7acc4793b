"""Load a verified bundle onto the configured device, offline, without remote code."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from inspectd.bundle.files import verify_bundle
from inspectd.bundle.manifest import BundleManifest
from inspectd.bundle.quanto import load_quanto_model
from inspectd.errors import BundleError
from inspectd.bundle.processor import ImageOnlyQwenProcessor

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class LoadedBundle:
    path: Path
    manifest: BundleManifest
    digest: str
    model: Qwen2_5_VLForConditionalGeneration
    processor: ImageOnlyQwenProcessor
    device: torch.device


def resolve_device(setting: str) -> torch.device:
    """``auto`` picks the first CUDA GPU when there is one, else the CPU."""
    if setting == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BundleError(f"device {setting!r} was requested but no CUDA GPU is visible to this process")
    return device


def _check_architecture(folder: Path) -> None:
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"{config_path}: unreadable model config ({exc})") from exc
    if config.get("model_type") != "qwen2_5_vl":
        raise BundleError(
            f"{config_path}: model_type {config.get('model_type')!r}; inspectd runs Qwen2.5-VL bundles ('qwen2_5_vl')"
        )


def load_bundle(folder: Path, device: str = "auto", verified: Callable[[], object] | None = None) -> LoadedBundle:
    """``verified``: called once every file's hash matched, before the weights load (the daemon logs the step)."""
    folder = Path(folder).resolve()
    manifest = verify_bundle(folder)
    if verified is not None:
        verified()
    _check_architecture(folder)
    target = resolve_device(device)
    if manifest.quantization == "nf4":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise BundleError(
                f"{folder}: bundle is 4-bit (bitsandbytes NF4) but bitsandbytes is not installed; "
                "install it with: pip install 'inspectd[gpu]'"
            ) from exc
    try:
        if manifest.quantization.startswith("quanto-"):
            model = load_quanto_model(folder, manifest.quantization, _DTYPES[manifest.dtype], target)
        else:
            model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
                folder,
                dtype=_DTYPES[manifest.dtype],
                device_map=str(target),
                use_safetensors=True,
                local_files_only=True,
                attn_implementation="sdpa",
            )
        processor = ImageOnlyQwenProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise BundleError(f"{folder}: model files do not load ({exc})") from exc
    model.eval()
    try:
        manifest.real.layer_slice(model.config.text_config.num_hidden_layers)
    except ValueError as exc:
        raise BundleError(f"{folder / 'bundle.json'}: real: {exc}") from exc
    return LoadedBundle(folder, manifest, manifest.digest, model, processor, target)  # the digest verified above
