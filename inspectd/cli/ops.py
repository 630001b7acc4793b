"""``inspectd run``, ``doctor``, ``demo-feed`` and ``tiny-bundle``: operating the box.

Each command imports the settings (pydantic) itself, so that the reader commands' parser is built without them."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from inspectd.cli.common import EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE
from inspectd.errors import InspectdError

log = logging.getLogger("inspectd")


def cmd_run(args: argparse.Namespace) -> int:
    from inspectd.config import config_path, load_settings
    from inspectd.daemon.service import run_daemon

    settings = load_settings(config_path(args.config))
    if args.log_level is None:
        logging.getLogger().setLevel(settings.log_level)
    return run_daemon(settings)


def cmd_doctor(args: argparse.Namespace) -> int:
    from inspectd.config import config_path, load_settings
    from inspectd.doctor import Check, diagnose

    path = config_path(args.config)
    try:
        settings = load_settings(path, require_paths=False)
    except InspectdError as exc:
        print(f"FAIL  config: {exc}")
        return EXIT_SOME_FAILED
    checks: list[Check] = diagnose(settings, args.service_user)
    for check in checks:
        print(f"{check.status:<5} {check.name}: {check.detail}")
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "warn" for c in checks)
    print(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_demo_feed(args: argparse.Namespace) -> int:
    from inspectd.config import config_path, load_settings
    from inspectd.demo_feed import feed, wait_for_daemon  # scipy, for this command only

    settings = None
    if args.wait_ready or not args.folder:
        settings = load_settings(config_path(args.config), require_paths=False)
    if args.folder:
        folder = Path(args.folder)
    else:
        if not settings.watch.folders:
            print("error: no --folder given and watch.folders is empty", file=sys.stderr)
            return EXIT_USAGE
        folder = settings.watch.folders[0].path
    if args.wait_ready:
        wait_for_daemon(settings, args.wait_timeout)
    feed(folder, args.count, args.interval, size=args.size, start_delay_s=args.delay)
    return EXIT_OK


def cmd_tiny_bundle(args: argparse.Namespace) -> int:
    from inspectd.model.tiny import save_tiny_bundle
    from inspectd.model.tiny_spec import TinySpec

    manifest = save_tiny_bundle(Path(args.destination), TinySpec(seed=args.seed), name=args.name)
    print(f"wrote bundle {manifest.name!r} to {args.destination} ({len(manifest.files)} files)")
    return EXIT_OK


