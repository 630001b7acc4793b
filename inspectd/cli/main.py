"""``inspectd`` command line: the daemon, one-off inspection, the history and the console."""

from __future__ import annotations

import argparse

from inspectd import __version__
from inspectd.cli import console, history, inspect, models, ops
from inspectd.cli.common import run_command
from inspectd.logs import offline, setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inspectd", description=__doc__.replace("``", ""))
    parser.add_argument("--version", action="version", version=f"inspectd {__version__}")
    parser.add_argument("--config", help="YAML settings (default: $INSPECTD_CONFIG or the shipped config)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    once = sub.add_parser("inspect", help="inspect image files once and print verdicts")
    once.add_argument("images", nargs="+", help="image files")
    once.add_argument("--bundle", help="model bundle folder (overrides model.bundle)")
    once.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides model.device)")
    once.add_argument("--json", action="store_true", help="print one JSON document")
    once.add_argument("--out", help="folder for <name>_map.png, <name>_mask.png and <name>_overlay.png")
    once.set_defaults(handler=inspect.cmd_inspect)

    run = sub.add_parser("run", help="run the daemon: watch folders, inspect, record, alert")
    run.set_defaults(handler=ops.cmd_run)

    history.add_commands(sub)
    models.add_commands(sub)
    console.add_commands(sub)

    evaluation = sub.add_parser(
        "eval", help="score a bundle on labelled folders (OK/NG: image metrics) or MVTec-layout datasets (+ pixel)")
    evaluation.add_argument("datasets", nargs="+",
                            help="labelled folders (good/ + one folder per defect kind, no masks) or MVTec-layout "
                                 "dataset roots / category folders (test/, ground_truth/ masks)")
    evaluation.add_argument("--bundle", help="model bundle folder (overrides model.bundle)")
    evaluation.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    evaluation.add_argument("--bins", type=int, default=65536, help="pixel-score bins (exact for scores on the grid)")
    evaluation.add_argument("--limit", type=inspect.at_least_two, help="at most this many images per category (half normal)")
    evaluation.add_argument("--by-defect", action="store_true",
                            help="also a row per defect kind (its images and all good ones of the category); "
                                 "always on for a labelled folder with several kinds")
    evaluation.add_argument("--out", help="write the report as JSON here")
    evaluation.set_defaults(handler=inspect.cmd_eval)

    doctor = sub.add_parser("doctor", help="check config, bundle, device, folders, store and alert channels")
    doctor.add_argument("--service-user", metavar="NAME",
                        help="check that this user can read the bundle and config (default: inspectd when run "
                             "as root and that user exists, else the current user)")
    doctor.set_defaults(handler=ops.cmd_doctor)

    demo = sub.add_parser("demo-feed", help="drop fresh synthetic sample images into a watched folder")
    demo.add_argument("--folder", help="default: the first of watch.folders")
    demo.add_argument("--count", type=int, default=8)
    demo.add_argument("--interval", type=float, default=2.0, help="seconds between files")
    demo.add_argument("--delay", type=float, default=0.0,
                      help="seconds to wait before the first file (after the daemon is ready, with --wait-ready)")
    demo.add_argument("--wait-ready", action="store_true",
                      help="drop the first file only once the daemon of this config is ready (its ready file "
                           "beside the store, from a running daemon): the files are then seen arriving")
    demo.add_argument("--wait-timeout", type=float, default=600.0, metavar="SECONDS",
                      help="with --wait-ready: give up (exit 2) when the daemon is not ready after this long")
    demo.add_argument("--size", type=int, default=168, help="image side in pixels (the shipped model's input size)")
    demo.set_defaults(handler=ops.cmd_demo_feed)

    tiny = sub.add_parser("tiny-bundle", help="build an untrained tiny Qwen2.5-VL bundle (tests, benchmarks)")
    tiny.add_argument("destination")
    tiny.add_argument("--name", default="tiny-random")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(handler=ops.cmd_tiny_bundle)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    offline()
    return run_command(lambda: args.handler(args))
