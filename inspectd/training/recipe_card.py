"""MODEL_CARD.md of a recipe-built bundle, written from what the stages recorded.

Every figure in the card comes from a stage's ``stage.json`` or eval report,
so the card cannot drift from the run that produced the bundle; the split's
facts (and how many validation photos look like a training photo) are read
again from the folder, which the recipe's split is a pure function of.
"""

from __future__ import annotations

import json
import logging

from inspectd.metrics.intervals import percent_interval
from inspectd.training.base_models import is_bundle
from inspectd.training.look_alike import LIKE, look_alike_count
from inspectd.training.train_stages import cgro_base, recipe_tiles

log = logging.getLogger("inspectd.recipe")


def _pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def _calibration_ranking(export: dict) -> str:
    """How well each bundle's score ranks the calibration images (stage records from before have no figure)."""
    if not all("calibration_image_auroc" in export[v] for v in ("warmup", "cgro")):
        return ""
    interval = export["cgro"].get("calibration_image_auroc_interval")  # stage records from before have none
    spread = f"95 % interval {percent_interval(interval)}; " if interval else ""
    return (f"On those {export['cgro']['calibration_images']} calibration images the score's image AUROC is "
            f"{100 * export['cgro']['calibration_image_auroc']:.1f} ({spread}balanced accuracy "
            f"{100 * export['cgro']['calibration_balanced_accuracy']:.1f}); warm-up only: "
            f"{100 * export['warmup']['calibration_image_auroc']:.1f} "
            f"({100 * export['warmup']['calibration_balanced_accuracy']:.1f}). ")


def _expected_rates(export: dict) -> str:
    """What the shipped threshold does on the calibration images (stage records from before have no figure)."""
    expected = export["cgro"].get("calibration_expected")
    return f"Expected there at that threshold: {expected}. " if expected else ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


_SUITES = {
    "synthetic": "synthetic (unseen seeds)",
    "zero_shot": "real, zero-shot",
    "drawn_validation": "held-out good images + drawn defects",
    "dev": "real dev subset (never trained or tuned on)",
}


def _summary_rows(overall: dict[str, dict[str, float]], suites: dict[str, str]) -> list[str]:
    rows = ["| model | test set | img AUROC | img AUPR | img ACC | px AUROC (ReAL) | px AUPR (ReAL) "
            "| px AUROC (all tokens) | px AUPR (all tokens) |",
            "|---|---|---|---|---|---|---|---|---|"]
    labels = {"warmup": "warm-up only", "cgro": "warm-up + CGRO (shipped)"}
    for name, m in overall.items():
        variant, suite = name.split("-", 1)
        rows.append(f"| {labels[variant]} | {suites.get(suite, suite)} | {_pct(m.get('image_auroc'))} | "
                    f"{_pct(m.get('image_aupr'))} | {_pct(m.get('image_acc'))} | {_pct(m.get('pixel_auroc'))} | "
                    f"{_pct(m.get('pixel_aupr'))} | {_pct(m.get('pixel_auroc_all_tokens'))} | "
                    f"{_pct(m.get('pixel_aupr_all_tokens'))} |")
    return rows


def _architecture(model_dir, own_tokenizer: bool) -> list[str]:
    """From the trained model's own config.json (an ``init`` fixes the shape, not the recipe). A download's
    config.json keeps the text settings at its top level (the older flat layout)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    text, vision = config.get("text_config") or config, config["vision_config"]
    tokenizer = "byte-level BPE trained by inspectd" if own_tokenizer else "the checkpoint's own tokenizer"
    return [
        f"- Text: {text['num_hidden_layers']} layers, hidden {text['hidden_size']}, {text['num_attention_heads']} "
        f"heads / {text['num_key_value_heads']} KV heads, MLP {text['intermediate_size']}, vocabulary "
        f"{text['vocab_size']} ({tokenizer}).",
        f"- Vision: {vision['depth']} blocks, hidden {vision['hidden_size']}, {vision['num_heads']} heads, full "
        f"attention in block(s) {vision['fullatt_block_indexes']}, windowed elsewhere; patch "
        f"{vision['patch_size']}, merge {vision['spatial_merge_size']}.",
    ]


def _synthetic_sections(config) -> dict[str, list[str]]:
    splits = config.data
    return {
        "intro": [
            "**What it is.** A small model of the real Qwen2.5-VL architecture, trained from scratch on a 2-core "
            "CPU by inspectd's own pipeline: supervised warm-up on reasoning texts, then CGRO on image-level "
            "labels only, then export. It is the default model so that the out-of-the-box run of inspectd shows "
            "real verdicts, reasoning, ReAL maps and alerts, and it is what the end-to-end tests run on. It is "
            "**not** a replacement for a CGRO-tuned Qwen2.5-VL-7B: it has only seen synthetic textures, its "
            "vocabulary is a few hundred inspection words, and its figures on real images (below) are what to "
            "expect from it on a real line."],
        "data": [
            "Synthetic only (`inspectd.data.synthetic`): procedural textures (brushed, granular, woven, rings, "
            "cloudy) with, on half the images, one drawn scratch, spot, crack, hole or stain of varied size, "
            "contrast and place, and its exact mask. Seed ranges never overlap:",
            f"- warm-up: {config.warmup.steps * config.warmup.batch_size} images from seed {splits.warmup_seed_offset}, "
            "each with a reply `<think>there is a <kind> near the <place> of the <texture> surface</think>"
            "<answer>yes</answer>` (place = the mask centroid on a 3x3 grid) or the clean-surface text and `no`;",
            f"- CGRO: {splits.cgro_images} images from seed {splits.cgro_seed_offset}, image-level labels only;",
            f"- threshold calibration: {splits.validation_images} images from seed {splits.validation_seed_offset};",
            f"- test: {splits.test_images} images from seed {splits.test_seed_offset} (never trained on)."],
        "evaluation": [
            "Real = the magnetic-tile evaluation photos (real production parts), never trained on, images resized to the "
            "model's input size."],
        "limits": [
            "- Trained on five procedural textures; expect poor verdicts on real parts (see the zero-shot row).",
            "- Replies use a small vocabulary; locations are coarse (3x3 grid).",
            f"- {splits.image_size} px input: defects smaller than a 28 px cell are hard for it to localize."],
    }


def split_sentence(data, split) -> str:
    """How a labelled folder is split (``split``, from ``split_folder(data)``), with the count of validation photos
    that look like a training photo: the card's data paragraph, and what ``inspectd-train plan`` prints before a
    run. Without a parts file and with look-alikes it also logs a warning."""
    facts = split.facts()
    by_part = (f", by part: {split.parts} parts from `{data.parts_file.name}`, each part's photos on one side"
               if data.parts_file else ", photo by photo: no `data.parts_file`")
    alike = look_alike_count([i.path for i in split.validation], [i.path for i in split.train])
    if not alike:
        meaning = "."
    elif data.parts_file:
        meaning = ": different parts can look alike (plain surfaces)."
    else:
        meaning = (": where that is one part photographed again, validation judged a part the model was trained "
                   "on, and its figures overstate what the model does on a new part (`data.parts_file` keeps a "
                   "part's photos on one side).")
        log.warning("%d of %d validation photos look like a training photo (the same part photographed again?): "
                    "validation figures will overstate new parts; data.parts_file keeps a part's photos on one "
                    "side", alike, len(split.validation))
    return (f"`{data.path.name}/` split once, stratified by folder (seed {data.split_seed}, "
            f"{data.validation_fraction:.0%} held out{by_part}): training {facts['train_good']} good + "
            f"{facts['train_defective']} defective, validation {facts['validation_good']} good + "
            f"{facts['validation_defective']} defective. {alike} of the {len(split.validation)} validation "
            f"photos look like a training photo (48 px grey correlation >= {LIKE}){meaning}")


def _folder_sections(config) -> dict[str, list[str]]:
    from inspectd.data.drawn_defects import DRAWN_KINDS
    from inspectd.training.line_data import AUGMENTATION_WORDS, split_folder

    data = config.data
    split = split_folder(data)
    facts = split.facts()
    rest = 1 - data.clean_share - data.drawn_share
    return {
        "intro": [
            f"**What it is.** A small model of the real Qwen2.5-VL architecture that learnt one production line "
            f"from {_source(data)}: image-level labels only, no pixel label "
            f"anywhere. It starts from `{config.init.name if config.init else 'a fresh small model'}`, is warmed "
            "up on the line's good images with defects drawn onto them (their masks teach where) and on the real "
            "defective images (their folder names teach what), then tuned with CGRO on the real images' labels. "
            "It shows what the method gives on a real line at this model size on a 2-core CPU; a CGRO-tuned "
            "Qwen2.5-VL-7B on a GPU box is the production path."],
        "data": [
            split_sentence(data, split),
            f"- warm-up ({config.warmup.steps * config.warmup.batch_size} examples, augmented: "
            f"{AUGMENTATION_WORDS[data.augmentation]}): {data.clean_share:.0%} good images replied `the "
            f"{data.surface} surface is clean and uniform with no visible defect` / `no`; "
            f"{data.drawn_share:.0%} good images with one drawn defect ({', '.join(DRAWN_KINDS)}) replied "
            f"`there is a <kind> near the <place> of the {data.surface} surface` / `yes` (place = the drawn "
            f"mask's centroid on a 3x3 grid); {rest:.0%} real defective images replied `there is a <folder "
            f"name> on the {data.surface} surface` / `yes` (no place: none is known);",
            "- CGRO: the real training images with their image-level labels"
            + (f", and {data.cgro_drawn_images} good training images with a drawn defect (other draws than the "
               "warm-up's) whose exact mask gives the localization reward;" if data.cgro_drawn_images else ";"),
            "- threshold calibration: the held-out real images (labels only);",
            f"- maps judged on: {data.drawn_validation_images} held-out good images, half with a drawn defect "
            f"(draw seed {data.validation_draw_seed(config.warmup.seed)}; exact masks; no human pixel label is "
            "used anywhere).",
            *_tile_data_lines(config),
            f"- Images are resized to {data.image_size}x{data.image_size} px "
            f"({(data.image_size // 28) ** 2} image tokens) before the model."],
        "evaluation": [
            "Dev = the MVTec-layout subset named under zero-shot in the recipe: never trained on, and the recipe "
            "makes no choice on it (threshold and build are chosen on the validation split; see Notes for how "
            "the recipe's own settings were chosen). Per defect kind, each kind's images are scored against all "
            "good images."],
        "limits": [
            f"- {data.image_size} px input ({data.image_size // 28}x{data.image_size // 28} cells of 28 px): "
            "small pores and thin cracks cover a fraction of a cell, so maps are coarse.",
            "- Capacity: a few million parameters and a vocabulary of inspection words; the reasoning is a "
            "template (kind and place), not free text.",
            "- Data: about 170 real defective images for training; kinds unlike any drawn defect (large, "
            "low-contrast shading) are learnt from labels alone, with no signal for where.",
            f"- Score: `{config.score.method}`{_views_phrase(config.score.views)}{_tiles_phrase(config.score)} "
            "(see the bundle's `score`); "
            f"the threshold was calibrated on "
            f"{facts['validation_good'] + facts['validation_defective']} validation images, so expect it to move "
            "on a larger hold-out."],
    }


def _warmup_line(config, warmup: dict) -> str:
    """What the warm-up did, or that CGRO started from ``init`` as it was (``warmup.steps: 0``)."""
    settings = config.warmup
    if warmup.get("skipped"):
        return (f"- Warm-up: none (`warmup.steps: 0`); CGRO started from `{config.init.name}` as it was, so the "
                "\"warm-up only\" rows below are that model untuned.")
    losses = warmup["losses"]
    head, tail = losses[:20], losses[-20:]
    return (f"- Warm-up (seed {settings.seed}): {settings.steps} steps of {settings.batch_size}, AdamW "
            f"(betas 0.9/0.98, weight decay {settings.weight_decay}), peak lr {settings.learning_rate}, "
            f"{settings.warmup_steps} warm-up steps then cosine, clip {settings.grad_clip}, vision encoder "
            f"{'frozen' if settings.freeze_vision else 'trained'}: {_minutes(warmup['seconds'])}; loss "
            f"{sum(head) / len(head):.3f} (first {len(head)} steps) -> {sum(tail) / len(tail):.3f} "
            f"(last {len(tail)}).")


def _views_phrase(views: int) -> str:
    return "" if views == 1 else f" over {views} mirror views, so {views} model runs per image"


def _tiles_phrase(score) -> str:
    n = score.tiles
    return "" if n == 1 else (f", and {n}x{n} tiles of {score.tile_share:.0%} of the photo's side (tile score "
                              f"`{score.tile_score}`), so {n * n} more model runs per image")


def _tile_data_lines(config) -> list[str]:
    """With tiles only: which examples were tiles, and at what size the drawn validation was drawn."""
    tiles, data = recipe_tiles(config), config.data
    if tiles is None:
        return []
    cgro = " and of CGRO's drawn images" if data.cgro_drawn_images else ""
    return [f"- tile examples (the bundle inspects {tiles.tiles}x{tiles.tiles} tiles of {tiles.tile_share:.0%}): "
            f"{data.tile_examples_share:.0%} of the warm-up's good-image examples (clean and drawn){cgro} were "
            f"{data.image_size} px tiles cut at a random place from the photo at {tiles.source_size} px, as tiled "
            "inspection reads a tile, a drawn defect drawn on the tile and placed within it; the real defective "
            f"images stayed whole (a tile of one has no label); the drawn validation was drawn at "
            f"{tiles.source_size} px, where the tiles read it."]


def _comparisons(overall: dict[str, dict[str, float]], suites: dict[str, str]) -> list[str]:
    """The two questions the Tab. 6 / Tab. 7 ablations answer, per test set, in points of pixel AUROC."""
    lines = []
    for suite in dict.fromkeys(name.split("-", 1)[1] for name in overall):
        cgro, warmup = overall.get(f"cgro-{suite}"), overall.get(f"warmup-{suite}")
        if not cgro or not warmup:
            continue
        gain = 100 * (cgro["pixel_auroc"] - warmup["pixel_auroc"])
        real = 100 * (cgro["pixel_auroc"] - cgro["pixel_auroc_all_tokens"])
        lines.append(f"- {suites.get(suite, suite)}: CGRO vs warm-up only {gain:+.1f} points of pixel AUROC "
                     f"(image {100 * (cgro['image_auroc'] - warmup['image_auroc']):+.1f}); ReAL vs the all-token "
                     f"map {real:+.1f}.")
    return lines


def _reward_names(config) -> str:
    names = f"format + accuracy + consistency (k={config.cgro.consistency.k})"
    if getattr(config.data, "cgro_drawn_images", 0):
        names += " + localization (drawn-defect rows only)"
    return names


def _builds_section(config, builds) -> list[str]:
    """Every seed's figures next to the chosen one's: the spread a rebuild can land in."""
    if not builds:
        return []
    rows = ["## Builds", "",
            f"Warm-up seeds {', '.join(str(b.seed) for b in builds)} were built side by side (`seeds`, "
            f"{config.parallel_builds} at a time); published: seed {config.warmup.seed}, the build whose CGRO "
            "model has the highest pooled pixel AUROC (ReAL) on the held-out good images with drawn defects. "
            "Dev figures are reported, not chosen on.", "",
            "| seed | model | drawn val img AUROC | drawn val px AUROC (ReAL / all tokens) | dev img AUROC "
            "| dev px AUROC (ReAL / all tokens) | dev px AUPR |",
            "|---|---|---|---|---|---|---|"]
    for build in builds:
        for variant, label in (("warmup", "warm-up only"), ("cgro", "+ CGRO")):
            drawn = build.figures.get(f"{variant}-drawn_validation", {})
            dev = build.figures.get(f"{variant}-zero_shot", {})
            rows.append(
                f"| {build.seed}{' (published)' if build.seed == config.warmup.seed else ''} | {label} "
                f"| {_pct(drawn.get('image_auroc'))} | {_pct(drawn.get('pixel_auroc'))} / "
                f"{_pct(drawn.get('pixel_auroc_all_tokens'))} | {_pct(dev.get('image_auroc'))} "
                f"| {_pct(dev.get('pixel_auroc'))} / {_pct(dev.get('pixel_auroc_all_tokens'))} "
                f"| {_pct(dev.get('pixel_aupr'))} |")
    return rows + [""]


def _notes_section(notes: list[str]) -> list[str]:
    """The recipe's ``card_notes``, a paragraph each."""
    if not notes:
        return []
    return ["## Notes", "", *(line for note in notes for line in (note.strip(), ""))]


def _source(data) -> str:
    """Where a line recipe's labelled photos came from, as the card's first paragraph says it."""
    if getattr(data, "kind", None) == "reviewed_store":
        since = f" since {data.since:%Y-%m-%d %H:%M} UTC" if data.since else ""
        camera = f", camera {data.camera}" if data.camera else ""
        return (f"the inspections its engineers reviewed in the console (the store of `{data.config.name}`{since}"
                f"{camera}; label = the newest review, exported to `{data.path.name}/`)")
    return f"its operators' OK/NG photos (`{data.path.name}`)"


def recipe_model_card(config, stages: dict, builds=()) -> str:
    """``builds``: every seed's figures when the recipe built several (``seeds``); ``config`` is the chosen one's."""
    warmup, cgro, export, evaluation = (stages[n].record() for n in ("warmup", "cgro", "export", "eval"))
    folder = getattr(config.data, "kind", "synthetic") in ("labelled_folder", "reviewed_store")
    sections = _folder_sections(config) if folder else _synthetic_sections(config)
    suites = {**_SUITES, "zero_shot": _SUITES["dev"] if folder else _SUITES["zero_shot"]}
    tables = []
    for path in sorted(stages["eval"].dir.glob("*.txt")):
        tables += [f"`{path.stem}`", "", "```", path.read_text(encoding="utf-8").rstrip(), "```", ""]
    rewards = "\n".join(f"| {key} | {first:.3f} | {last:.3f} |" for key, (first, last) in cgro["rewards"].items())
    total = warmup["seconds"] + cgro["seconds"] + sum(v["seconds"] for v in export.values())
    missing = evaluation.get("zero_shot_missing") or []
    size = config.data.image_size
    return "\n".join([
        f"# {config.name}",
        "",
        *sections["intro"],
        "",
        "## Architecture",
        "",
        f"- {warmup['parameters'] / 1e6:.2f}M parameters"
        + (f", started from the weights of `{config.init.name}`." if config.init else ", trained from scratch."),
        *_architecture(cgro_base(config), own_tokenizer=config.init is None or is_bundle(config.init)),
        f"- Input {size}x{size} px -> {(size // 28) ** 2} image tokens. Precision: {config.quantization} "
        "(see Export).",
        "",
        "## Data",
        "",
        *sections["data"],
        "",
        "## Recipe and training time",
        "",
        f"`inspectd-train recipe --config models/recipes/{config.name}.yaml`, deterministic seeds, "
        f"{config.threads} torch thread(s).",
        _warmup_line(config, warmup),
        f"- CGRO: {config.cgro.max_steps} GRPO steps of {config.cgro.batch_size} prompts x "
        f"{config.cgro.generations} replies, LoRA r={config.cgro.lora_rank} on the language model, vision "
        f"frozen, lr {config.cgro.learning_rate}, KL beta {config.cgro.kl_beta}, sampling temperature "
        f"{config.cgro.temperature}, rewards {_reward_names(config)}: {_minutes(cgro['seconds'])}.",
        f"- Export (merge, {config.quantization}, round-trip check, calibration; both bundles): "
        f"{_minutes(sum(v['seconds'] for v in export.values()))}.",
        f"- Total training and export: {_minutes(total)} on "
        + ("2 CPU cores" if config.device == "cpu" and config.cgro.use_cpu else "the GPU box")
        + (f" (this build; {len(builds)} were built side by side)." if builds else "."),
        "",
        "Rewards during CGRO (mean over the first and the last quarter of the steps):",
        "",
        "| reward | first quarter | last quarter |",
        "|---|---|---|",
        rewards,
        "",
        *_builds_section(config, builds),
        "## Export",
        "",
        f"Precision {config.quantization}; the reload was checked against the exported model's logits; the "
        f"largest logit change against the float32 model on a probe image was {export['cgro']['drift']:.3g}. "
        f"Threshold on the score: {export['cgro']['threshold']:.4f} "
        f"({export['cgro'].get('calibration_rule', 'maximum balanced accuracy')} on the "
        f"calibration set; the warm-up-only bundle: {export['warmup']['threshold']:.4f}). "
        f"{_expected_rates(export)}{_calibration_ranking(export)}Score: "
        f"`{json.dumps(config.score.model_dump(mode='json'))}`. ReAL parameters: "
        f"`{json.dumps(config.real.model_dump(mode='json'))}`.",
        "",
        "## Evaluation (`inspectd eval`, percentages)",
        "",
        "Warm-up only vs after CGRO (Tab. 6 ablation); pixel scores from the ReAL map vs the map of all "
        "reasoning tokens (Tab. 7, first row vs last).",
        *sections["evaluation"],
        "",
        *_summary_rows(evaluation["overall"], suites),
        "",
        *_comparisons(evaluation["overall"], suites),
        "",
        *(["Zero-shot datasets not found at recipe time (not evaluated): " + ", ".join(missing), ""]
          if missing else []),
        "Per category" + (" and defect kind:" if folder else ":"),
        "",
        *tables,
        "## Limits",
        "",
        *sections["limits"],
        "",
        *_notes_section(config.card_notes),
    ])
