"""CPU deployment quantization through optimum-quanto (int8 / int4 weights).

For CPU-only boxes: bitsandbytes NF4 runs on the CPU but is built for GPUs;
optimum-quanto's weight-only int8/int4 keeps the language model's linear
layers quantized in memory on any CPU. Its transformers integration cannot
``save_pretrained`` (0.2.7 raises), so a quanto bundle holds quanto's own
state dict (``model.safetensors``: ``weight._data`` / ``weight._scale`` ...)
beside the usual ``config.json``, and is rebuilt by quantizing a freshly
built model the same way and loading that state dict strictly.

What is quantized is fixed by the scheme name alone: every linear layer of
the language model; the vision encoder and the output head stay in float.
int4 modules refuse ``torch.inference_mode`` (the runtime uses ``no_grad``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from inspectd.errors import BundleError

SCHEMES = {"quanto-int8": "qint8", "quanto-int4": "qint4"}
WEIGHTS_FILE = "model.safetensors"


def _quanto():
    try:
        import optimum.quanto as quanto
    except ImportError as exc:
        raise BundleError(
            "optimum-quanto is not installed; quanto bundles need it: pip install 'inspectd[cpu]'"
        ) from exc
    return quanto


def quantize_language_model(model: Qwen2_5_VLForConditionalGeneration, scheme: str) -> None:
    """Quantize (and freeze) the language model's linear weights in place."""
    if scheme not in SCHEMES:
        raise BundleError(f"unknown quanto scheme {scheme!r}; expected one of {sorted(SCHEMES)}")
    quanto = _quanto()
    quanto.quantize(model.model.language_model, weights=getattr(quanto, SCHEMES[scheme]))
    quanto.freeze(model.model.language_model)


def is_quanto_model(model: torch.nn.Module) -> bool:
    try:
        from optimum.quanto.nn import QModuleMixin
    except ImportError:
        return False
    return any(isinstance(m, QModuleMixin) for m in model.modules())


def save_quanto_model(model: Qwen2_5_VLForConditionalGeneration, folder: Path) -> None:
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(folder)
    model.generation_config.save_pretrained(folder)
    # clone: tied or shared storages would be refused by safetensors
    state = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": "pt", "quantizer": "optimum-quanto"})


def load_quanto_model(folder: Path, scheme: str, dtype: torch.dtype, device: torch.device):
    from safetensors.torch import load_file
    from transformers import GenerationConfig
    from transformers.initialization import no_init_weights

    folder = Path(folder)
    config = Qwen2_5_VLConfig.from_pretrained(folder, local_files_only=True)
    config._attn_implementation = "sdpa"
    with no_init_weights():
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    quantize_language_model(model, scheme)
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)), strict=True)
    except RuntimeError as exc:
        raise BundleError(f"{folder / WEIGHTS_FILE}: does not match a {scheme} Qwen2.5-VL ({exc})") from exc
    if (folder / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(folder, local_files_only=True)
    return model.to(device).eval()
