"""The NF4 4-bit settings a bundle is quantized with (export) and a training base is loaded with (QLoRA).

One place, so the modules kept in full precision cannot differ between the two.
"""

from __future__ import annotations

# transformers 5 matches skip patterns from the start of the full module name (or as a suffix): "visual"
# alone never matched "model.visual.blocks.0...", so NF4 bundles had a 4-bit vision tower. The vision
# encoder stays in the compute dtype (it is frozen in CGRO and small next to the language model).
NF4_SKIPPED_MODULES = ("model.visual", "visual", "lm_head")


def nf4_config(compute_dtype, double_quant: bool = False):
    """bitsandbytes NF4 for the language-model linears; ``double_quant`` also quantizes the block scales
    (QLoRA's choice for training: ~0.4 bit a weight less)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=compute_dtype,
                              bnb_4bit_use_double_quant=double_quant,
                              llm_int8_skip_modules=list(NF4_SKIPPED_MODULES))
