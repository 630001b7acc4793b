"""MODEL_CARD.md of a recipe-built bundle, written from what the stages recorded.

Every figure in the card comes from a stage's ``stage.json`` or eval report,
so the card cannot drift from the run that produced the bundle.
"""

from __future__ import annotations

import json


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _summary_rows(overall: dict[str, dict[str, float]]) -> list[str]:
    rows = ["| model | test set | img AUROC | img AUPR | img ACC | px AUROC (ReAL) | px AUPR (ReAL) "
            "| px AUROC (all tokens) | px AUPR (all tokens) |",
            "|---|---|---|---|---|---|---|---|---|"]
    labels = {"warmup": "warm-up only", "cgro": "warm-up + CGRO (shipped)"}
    suites = {"synthetic": "synthetic (unseen seeds)", "zero_shot": "real, zero-shot"}
    for name, m in overall.items():
        variant, suite = name.split("-", 1)
        rows.append(f"| {labels[variant]} | {suites[suite]} | {_pct(m.get('image_auroc'))} | "
                    f"{_pct(m.get('image_aupr'))} | {_pct(m.get('image_acc'))} | {_pct(m.get('pixel_auroc'))} | "
                    f"{_pct(m.get('pixel_aupr'))} | {_pct(m.get('pixel_auroc_all_tokens'))} | "
                    f"{_pct(m.get('pixel_aupr_all_tokens'))} |")
    return rows


def recipe_model_card(config, stages: dict) -> str:
    sft, grpo, export, evaluation = (stages[n].record() for n in ("sft", "grpo", "export", "eval"))
    shape, splits = config.model, config.data
    tables = []
    for path in sorted(stages["eval"].dir.glob("*.txt")):
        tables += [f"`{path.stem}`", "", "```", path.read_text(encoding="utf-8").rstrip(), "```", ""]
    rewards = "\n".join(f"| {key} | {first:.3f} | {last:.3f} |" for key, (first, last) in grpo["rewards"].items())
    total = sft["seconds"] + grpo["seconds"] + sum(v["seconds"] for v in export.values())
    missing = evaluation.get("zero_shot_missing") or []
    sft_losses = sft["losses"]
    return "\n".join([
        f"# {config.name}",
        "",
        "**What it is.** A small model of the real Qwen2.5-VL architecture "
        f"({sft['parameters'] / 1e6:.1f}M parameters), trained from scratch on a 2-core CPU by inspectd's own "
        "pipeline: supervised warm-up on reasoning texts, then CGRO on image-level labels only, then export. "
        "It is the default model so that the out-of-the-box run of inspectd shows real verdicts, reasoning, "
        "ReAL maps and alerts, and it is what the end-to-end tests run on. It is **not** a replacement for a "
        "CGRO-tuned Qwen2.5-VL-7B: it has only seen synthetic textures, its vocabulary is a few hundred "
        "inspection words, and its figures on real images (below) are what to expect from it on a real line.",
        "",
        "## Architecture",
        "",
        f"- Text: {shape.text_layers} layers, hidden {shape.text_hidden}, {shape.text_heads} heads / "
        f"{shape.text_kv_heads} KV heads, MLP {shape.text_intermediate}; byte-level BPE vocabulary trained here.",
        f"- Vision: {shape.vision_depth} blocks, hidden {shape.vision_hidden}, {shape.vision_heads} heads, "
        f"full attention in block(s) {list(shape.fullatt_blocks)}, windowed elsewhere; patch 14, merge 2.",
        f"- Input {splits.image_size}x{splits.image_size} px -> {(splits.image_size // 28) ** 2} image tokens. "
        f"Precision: {config.quantization} (see Export).",
        "",
        "## Data",
        "",
        "Synthetic only (`inspectd.data.synthetic`): procedural textures (brushed, granular, woven, rings, "
        "cloudy) with, on half the images, one drawn scratch, spot, crack, hole or stain of varied size, "
        "contrast and place, and its exact mask. Seed ranges never overlap:",
        f"- warm-up: {config.sft.steps * config.sft.batch_size} images from seed {splits.sft_seed_offset}, "
        "each with a reply `<think>there is a <kind> near the <place> of the <texture> surface</think>"
        "<answer>yes</answer>` (place = the mask centroid on a 3x3 grid) or the clean-surface text and `no`;",
        f"- CGRO: {splits.grpo_images} images from seed {splits.grpo_seed_offset}, image-level labels only;",
        f"- threshold calibration: {splits.validation_images} images from seed {splits.validation_seed_offset};",
        f"- test: {splits.test_images} images from seed {splits.test_seed_offset} (never trained on).",
        "",
        "## Recipe and training time",
        "",
        "`inspectd-train recipe models/recipes/tiny-cgro.yaml` (or `make model`), deterministic seeds.",
        f"- Warm-up: {config.sft.steps} steps of {config.sft.batch_size}, AdamW (betas 0.9/0.98, weight decay "
        f"{config.sft.weight_decay}), peak lr {config.sft.learning_rate}, {config.sft.warmup_steps} warm-up "
        f"steps then cosine, clip {config.sft.grad_clip}, vision encoder trained: {_minutes(sft['seconds'])}; "
        f"loss {sum(sft_losses[:20]) / 20:.3f} (first 20 steps) -> {sum(sft_losses[-20:]) / 20:.3f} (last 20).",
        f"- CGRO: {config.grpo.max_steps} GRPO steps of {config.grpo.batch_size} prompts x "
        f"{config.grpo.generations} replies, LoRA r={config.grpo.lora_rank} on the language model, vision "
        f"frozen, lr {config.grpo.learning_rate}, KL beta {config.grpo.kl_beta}, rewards format + accuracy + "
        f"consistency (k={config.grpo.consistency.k}): {_minutes(grpo['seconds'])}.",
        f"- Export (merge, {config.quantization}, round-trip check, calibration; both bundles): "
        f"{_minutes(sum(v['seconds'] for v in export.values()))}.",
        f"- Total training and export: {_minutes(total)} on 2 CPU cores.",
        "",
        "Rewards during CGRO (mean over the first and the last quarter of the steps):",
        "",
        "| reward | first quarter | last quarter |",
        "|---|---|---|",
        rewards,
        "",
        "## Export",
        "",
        f"Precision {config.quantization}; the reload was checked against the exported model's logits; the "
        f"largest logit change against the float32 model on a probe image was {export['cgro']['drift']:.3g}. "
        f"Threshold on P(yes): {export['cgro']['threshold']:.4f} (maximum balanced accuracy on the calibration "
        f"set; the warm-up-only bundle: {export['warmup']['threshold']:.4f}). ReAL parameters: "
        f"`{json.dumps(config.real.model_dump(mode='json'))}`.",
        "",
        "## Evaluation (`inspectd eval`, percentages)",
        "",
        "Warm-up only vs after CGRO (Tab. 6 ablation); pixel scores from the ReAL map vs the map of all "
        "reasoning tokens (Tab. 7, first row vs last). Real = the magnetic-tile subset in `shared/datasets`, "
        "never trained on, images resized to the model's input size.",
        "",
        *_summary_rows(evaluation["overall"]),
        "",
        *(["Zero-shot datasets not found at recipe time (not evaluated): " + ", ".join(missing), ""]
          if missing else []),
        "Per category:",
        "",
        *tables,
        "## Limits",
        "",
        "- Trained on five procedural textures; expect poor verdicts on real parts (see the zero-shot row).",
        "- Replies use a small vocabulary; locations are coarse (3x3 grid).",
        f"- {splits.image_size} px input: defects smaller than a 28 px cell are hard for it to localize.",
        "",
    ])
