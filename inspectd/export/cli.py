"""``inspectd-export``: a trained model folder (+ LoRA adapter) -> a verified bundle.

``inspectd-export seal FOLDER`` seals a bundle's ``bundle.json`` as it stands (its bundle digest written, after
every file was checked): for a bundle exported before manifests carried a digest, or a manifest edit that is wanted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inspectd.cli.common import run_command
from inspectd.logs import offline, setup_logging


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["seal"]:
        return _seal_main(argv[1:])
    parser = argparse.ArgumentParser(prog="inspectd-export", description=__doc__.replace("``", ""))
    parser.add_argument("--base", required=True, help="model folder: a bundle or a local Qwen2.5-VL checkpoint")
    parser.add_argument("--adapter", help="LoRA adapter folder to merge (peft)")
    parser.add_argument("--out", required=True, help="bundle folder to write: written beside it as "
                        ".NAME.partial-*, checked, then renamed into place (a failed export leaves it as it was)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--quantization", choices=("nf4", "quanto-int8", "quanto-int4", "bfloat16", "float32"),
                        default="nf4", help="nf4: GPU boxes (bitsandbytes); quanto-int8/int4: CPU-only boxes "
                        "(optimum-quanto); bfloat16/float32: no quantization")
    parser.add_argument("--base-model-name", help="recorded in bundle.json, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--threshold", type=float, help="fixed threshold (else the base's, or calibrated)")
    parser.add_argument("--calibration", help="labelled validation folder (good/ + defect folders, or MVTec)")
    parser.add_argument("--target-recall", type=_target_recall, metavar="SHARE",
                        help="with --calibration: the highest threshold that flags at least this share of the "
                        "folder's defects, e.g. 0.95 (default: the threshold of maximum balanced accuracy)")
    parser.add_argument("--real-json", help='ReAL parameters as JSON, e.g. \'{"layer_start": 2}\'')
    parser.add_argument("--score-json", help='score method as JSON, e.g. \'{"method": "reasoning_branch", '
                                             '"branches": 3}\' (default: the base bundle\'s, else answer)')
    parser.add_argument("--device", default="cpu", help="where to quantize: cpu or cuda:N")
    parser.add_argument("--eval-report", help="JSON from 'inspectd eval --out' to put in the model card")
    parser.add_argument("--card-notes", default="", help="text for the model card (data, caveats)")
    parser.add_argument("--group", help="group to give the bundle (modes 0750/0640: it and the owner read it), "
                        "e.g. the service's inspectd; default: the replaced bundle's group, else the user's")
    parser.add_argument("--scratch-dir", help="folder for the temporary merged copy (a 7B: ~17 GB in bfloat16, "
                        "~33 GB in float32); default: beside --out")
    args = parser.parse_args(argv)
    if args.target_recall is not None and not args.calibration:
        parser.error("--target-recall needs --calibration FOLDER: the threshold is chosen on that folder's defects")
    setup_logging()
    offline(quiet_transformers=False)
    return run_command(lambda: _export(args), also=(ValueError, OSError))  # bad JSON options, unreadable files


def _seal_main(argv: list[str]) -> int:
    """``inspectd-export seal FOLDER``: a subcommand of its own, since an export's options do not apply to it."""
    parser = argparse.ArgumentParser(prog="inspectd-export seal", description=(
        "Write the bundle digest of FOLDER's bundle.json as it stands, after checking every file it lists. Check "
        "its settings first: the daemon will run with them."))
    parser.add_argument("folder", help="the bundle folder")
    args = parser.parse_args(argv)
    setup_logging()
    return run_command(lambda: _seal(Path(args.folder)), also=(OSError,))


def _seal(folder: Path) -> int:
    from inspectd.bundle.files import seal_bundle

    manifest = seal_bundle(folder)
    print(f"sealed {folder}: {manifest.name}, {len(manifest.files)} files checked, digest {manifest.digest}")
    return 0


def _target_recall(text: str) -> float:
    """--target-recall as a share of defects in (0, 1]; argparse names the option in its error."""
    from inspectd.export.calibrate import check_target_recall

    try:
        return check_target_recall(float(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc) if "target recall" in str(exc) else
                                         f"target recall must be a number in (0, 1], e.g. 0.95; got {text!r}") from None


def _export(args) -> int:
    from inspectd.bundle.manifest import ScoreSpec
    from inspectd.export.exporter import ExportRequest, export_bundle
    from inspectd.real.params import RealParams

    request = ExportRequest(
        base=Path(args.base), out=Path(args.out), name=args.name, quantization=args.quantization,
        adapter=Path(args.adapter) if args.adapter else None, base_model_name=args.base_model_name,
        real=RealParams.model_validate(json.loads(args.real_json)) if args.real_json else None,
        score=ScoreSpec.model_validate(json.loads(args.score_json)) if args.score_json else None,
        image_size=tuple(args.image_size) if args.image_size else None, max_new_tokens=args.max_new_tokens,
        threshold=args.threshold, calibration=Path(args.calibration) if args.calibration else None,
        target_recall=args.target_recall,
        device=args.device, card_notes=args.card_notes,
        eval_report=Path(args.eval_report) if args.eval_report else None,
        group=args.group, scratch_dir=Path(args.scratch_dir) if args.scratch_dir else None,
    )
    result = export_bundle(request)
    manifest = result.manifest
    print(f"wrote {args.out}: {manifest.name}, {manifest.quantization}/{manifest.dtype}, threshold {manifest.threshold}")
    if result.calibration is not None:
        from inspectd.export.calibrate import calibration_report

        print("\n".join(calibration_report(result.calibration)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
