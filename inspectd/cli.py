"""``inspectd`` command line: the daemon, one-off inspection and the history."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from inspectd import __version__
from inspectd.errors import InspectdError

log = logging.getLogger("inspectd")

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2


class JournalFormatter(logging.Formatter):
    """journald reads a "<priority>" prefix as the syslog level of the line."""

    _PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        priority = self._PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{record.name}: {super().format(record)}"


def _quiet_libraries() -> None:
    """No network, no progress bars: the daemon's logs are for operators."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _config_path(arg: str | None) -> Path:
    from inspectd.config import config_path

    return config_path(arg)


def _unique_stem(path: Path, taken: set[str]) -> str:
    stem, n = path.stem, 1
    while stem in taken:
        n += 1
        stem = f"{path.stem}-{n}"
    taken.add(stem)
    return stem


def cmd_inspect(args: argparse.Namespace) -> int:
    from inspectd.bundle.load import load_bundle
    from inspectd.model.cpu_threads import limit_cpu_threads
    from inspectd.config import load_settings
    from inspectd.errors import ImageError
    from inspectd.inspection.images import load_image
    from inspectd.inspection.build import build_inspector
    from inspectd.inspection.render import map_image, mask_image, overlay_image, verdict_label

    settings = load_settings(_config_path(args.config), require_paths=args.bundle is None)
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
                photo = load_image(path, inspector.options.max_pixels, inspector.options.max_file_bytes)
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
    for kind, path in entry.get("outputs", {}).items():
        print(f"  {kind}: {path}")


def cmd_run(args: argparse.Namespace) -> int:
    from inspectd.config import load_settings
    from inspectd.daemon.service import run_daemon

    settings = load_settings(_config_path(args.config))
    if args.log_level is None:
        logging.getLogger().setLevel(settings.log_level)
    return run_daemon(settings)


def _at_least_two(text: str) -> int:
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
    from inspectd.model.cpu_threads import limit_cpu_threads
    from inspectd.config import load_settings
    from inspectd.data.layouts import read_mvtec
    from inspectd.evaluation.runner import evaluate, format_table
    from inspectd.inspection.build import build_inspector

    settings = load_settings(_config_path(args.config), require_paths=args.bundle is None)
    limit_cpu_threads(settings.model.threads)
    bundle = load_bundle(Path(args.bundle) if args.bundle else settings.model.bundle,
                         args.device or settings.model.device)
    inspector = build_inspector(settings, bundle)
    datasets = [read_mvtec(Path(p)) for p in args.datasets]
    for dataset in datasets:
        for path in dataset.skipped:
            log.warning("skipped %s (not an image file)", path)

    def progress(report) -> None:
        m = report.metrics
        log.info("%s/%s: %d images in %.0f s, image AUROC %.3f, pixel AUROC %.3f",
                 report.dataset, report.category, report.images, report.seconds, m["image_auroc"], m["pixel_auroc"])

    report = evaluate(inspector, datasets, bins=args.bins, limit=args.limit, progress=progress,
                      by_defect=args.by_defect)
    print(format_table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    from inspectd.config import load_settings
    from inspectd.doctor import Check, diagnose

    path = _config_path(args.config)
    try:
        settings = load_settings(path, require_paths=False)
    except InspectdError as exc:
        print(f"FAIL  config: {exc}")
        return EXIT_SOME_FAILED
    checks: list[Check] = diagnose(settings)
    for check in checks:
        print(f"{check.status:<5} {check.name}: {check.detail}")
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    print(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_demo_feed(args: argparse.Namespace) -> int:
    from inspectd.config import load_settings
    from inspectd.demo_feed import feed

    if args.folder:
        folder = Path(args.folder)
    else:
        settings = load_settings(_config_path(args.config), require_paths=False)
        if not settings.watch.folders:
            print("error: no --folder given and watch.folders is empty", file=sys.stderr)
            return EXIT_USAGE
        folder = settings.watch.folders[0].path
    feed(folder, args.count, args.interval, size=args.size, start_delay_s=args.delay)
    return EXIT_OK


def cmd_tiny_bundle(args: argparse.Namespace) -> int:
    from inspectd.model.tiny import TinySpec, save_tiny_bundle

    manifest = save_tiny_bundle(Path(args.destination), TinySpec(seed=args.seed), name=args.name)
    print(f"wrote bundle {manifest.name!r} to {args.destination} ({len(manifest.files)} files)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspectd", description=__doc__.replace("``", ""))
    parser.add_argument("--version", action="version", version=f"inspectd {__version__}")
    parser.add_argument("--config", help="YAML settings (default: $INSPECTD_CONFIG or the shipped config)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    inspect = sub.add_parser("inspect", help="inspect image files once and print verdicts")
    inspect.add_argument("images", nargs="+", help="image files")
    inspect.add_argument("--bundle", help="model bundle folder (overrides model.bundle)")
    inspect.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides model.device)")
    inspect.add_argument("--json", action="store_true", help="print one JSON document")
    inspect.add_argument("--out", help="folder for <name>_map.png, <name>_mask.png and <name>_overlay.png")
    inspect.set_defaults(handler=cmd_inspect)

    run = sub.add_parser("run", help="run the daemon: watch folders, inspect, record, alert")
    run.set_defaults(handler=cmd_run)

    from inspectd.cli_console import add_commands as add_console_commands
    from inspectd.cli_history import add_commands

    add_commands(sub)
    add_console_commands(sub)

    evaluation = sub.add_parser("eval", help="score a bundle on MVTec-layout datasets (image and pixel metrics)")
    evaluation.add_argument("datasets", nargs="+", help="dataset roots or category folders (MVTec layout)")
    evaluation.add_argument("--bundle", help="model bundle folder (overrides model.bundle)")
    evaluation.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    evaluation.add_argument("--bins", type=int, default=65536, help="pixel-score bins (exact for scores on the grid)")
    evaluation.add_argument("--limit", type=_at_least_two, help="at most this many images per category (half normal)")
    evaluation.add_argument("--by-defect", action="store_true",
                            help="also a row per defect kind (its images and all good ones of the category)")
    evaluation.add_argument("--out", help="write the report as JSON here")
    evaluation.set_defaults(handler=cmd_eval)

    doctor = sub.add_parser("doctor", help="check config, bundle, device, folders, store and alert channels")
    doctor.set_defaults(handler=cmd_doctor)

    demo = sub.add_parser("demo-feed", help="drop fresh synthetic sample images into a watched folder")
    demo.add_argument("--folder", help="default: the first of watch.folders")
    demo.add_argument("--count", type=int, default=8)
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between files")
    demo.add_argument("--delay", type=float, default=0.0, help="seconds to wait before the first file")
    demo.add_argument("--size", type=int, default=168, help="image side in pixels (the shipped model's input size)")
    demo.set_defaults(handler=cmd_demo_feed)

    tiny = sub.add_parser("tiny-bundle", help="build an untrained tiny Qwen2.5-VL bundle (tests, benchmarks)")
    tiny.add_argument("destination")
    tiny.add_argument("--name", default="tiny-random")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=cmd_tiny_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JournalFormatter() if os.environ.get("JOURNAL_STREAM") else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, (args.log_level or "INFO").upper(), logging.INFO), handlers=[handler])
    _quiet_libraries()
    try:
        return args.handler(args)
    except InspectdError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
