"""``inspectd inspect`` and ``inspectd eval``: the model on files, without the store.

The settings (pydantic) and the model code are imported by the commands, so that building the whole parser
(``inspectd history``) loads neither."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from inspectd.cli.common import EXIT_OK, EXIT_SOME_FAILED
from inspectd.errors import ImageError
from inspectd.inspection.view_votes import view_votes

log = logging.getLogger("inspectd")


def _unique_stem(path: Path, taken: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in taken:
        n += 1
        stem = f"{path.stem}-{n}"
    taken.add(stem)
    return stem


def cmd_inspect(args: argparse.Namespace) -> int:
    from inspectd.bundle.load import load_bundle  # torch and transformers: loaded by the commands that run a model
    from inspectd.config import config_path, load_settings
    from inspectd.model.cpu_threads import limit_cpu_threads
    from inspectd.inspection.build import build_inspector
    from inspectd.inspection.images import load_image
    from inspectd.inspection.render import map_image, mask_image, overlay_image, verdict_label

    settings = load_settings(config_path(args.config), require_paths=args.bundle is None)
    bundle_dir = Path(args.bundle) if args.bundle else settings.model.bundle
    limit_cpu_threads(settings.model.threads)
    bundle = load_bundle(bundle_dir, args.device or settings.model.device)
    inspector = build_inspector(settings, bundle)
    paths = [Path(p) for p in args.images]
    results = inspector.inspect_files(paths)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    taken: set[str] = set()
    report = []
    for path, result in zip(paths, results):
        entry = result.summary()
        if out and result.anomaly_map is not None:
            stem = _unique_stem(path, taken)
            files = {
                "map": out / f"{stem}_map.png",
                "mask": out / f"{stem}_mask.png",
                "overlay": out / f"{stem}_overlay.png",
            }
            map_image(result.anomaly_map).save(files["map"])
            mask_image(result.mask).save(files["mask"])
            try:
                photo = load_image(path, settings.images.max_pixels, settings.images.max_file_bytes)
                label = verdict_label(result.verdict.value, result.score, result.threshold)
                overlay_image(photo, result.anomaly_map, result.mask, label).save(files["overlay"])
            except ImageError as exc:
                log.warning("overlay not written: %s", exc)
                files.pop("overlay")
            entry["outputs"] = {k: str(v) for k, v in files.items()}
        report.append(entry)
    if args.json:
        json.dump({"bundle": bundle.manifest.name, "bundle_sha256": bundle.digest, "results": report}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for entry in report:
            _print_entry(entry)
    failed = [e for e in report if e["verdict"] == "failed"]
    for entry in failed:
        print(f"error: {entry['source']}: {entry['error']}", file=sys.stderr)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _print_entry(entry: dict) -> None:
    verdict = entry["verdict"].upper()
    if entry["verdict"] == "failed":
        print(f"{entry['source']}  FAILED  {entry['error']}")
        return
    score = "n/a" if entry["score"] is None else f"{entry['score']:.3f}"
    timings = ", ".join(f"{k} {v:.0f} ms" for k, v in entry["timings_ms"].items())
    print(f"{entry['source']}  {verdict}  score {score} (threshold {entry['threshold']:.2f})  [{timings}]")
    if entry["reasoning"] is not None:
        print(f"  reasoning: {entry['reasoning']}")
    else:
        print(f"  reply did not parse ({entry['parse_status']}): {entry['reply']!r}")
    if entry["real_fallback"]:
        print("  ReAL: no reasoning token passed both filters; map uses all reasoning tokens")
    votes = view_votes(entry)
    if votes is not None:
        print(f"  views: {votes.sentence()}")
    for kind, path in entry.get("outputs", {}).items():
        print(f"  {kind}: {path}")


def at_least_two(text: str) -> int:
    """``--limit``: AUROC needs a normal and an anomalous image, so fewer than 2 is refused up front."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 2:
        raise argparse.ArgumentTypeError(f"{value} is too few: at least 2 images (one normal, one anomalous)")
    return value


def cmd_eval(args: argparse.Namespace) -> int:
    from inspectd.bundle.load import load_bundle
    from inspectd.config import config_path, load_settings
    from inspectd.model.cpu_threads import limit_cpu_threads
    from inspectd.data.layouts import read_dataset
    from inspectd.evaluation.runner import evaluate, format_table
    from inspectd.inspection.build import build_inspector

    path = config_path(args.config)
    settings = load_settings(path, require_paths=args.bundle is None)
    limit_cpu_threads(settings.model.threads)
    bundle = load_bundle(Path(args.bundle) if args.bundle else settings.model.bundle,
                         args.device or settings.model.device)
    inspector = build_inspector(settings, bundle)
    datasets = [read_dataset(Path(p)) for p in args.datasets]
    for dataset in datasets:
        for path in dataset.skipped:
            log.warning("skipped %s (not an image file)", path)

    def progress(report) -> None:
        m = report.metrics
        pixel = f"{m['pixel_auroc']:.3f}" if report.masks else "n/a (no masks)"
        log.info("%s/%s: %d images in %.0f s, %d unparsed, image AUROC %.3f, pixel AUROC %s",
                 report.dataset, report.category, report.images, report.seconds, report.unknown, m["image_auroc"],
                 pixel)

    report = evaluate(inspector, datasets, bins=args.bins, limit=args.limit, progress=progress,
                      by_defect=args.by_defect)
    print(format_table(report))
    changed = inspector.options.real_overrides
    if changed:
        print(f"maps made with {path}'s ReAL overrides ({'; '.join(changed)}): the figures are the daemon's with "
              f"that config, not those on {bundle.manifest.name}'s card (a config without `real:` scores the bundle "
              "as built)")
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


