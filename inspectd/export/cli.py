"""``inspectd-export``: a trained model folder (+ LoRA adapter) -> a verified bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from inspectd.cli.common import offline, run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inspectd-export", description=__doc__.replace("``", ""))
    parser.add_argument("--base", required=True, help="model folder: a bundle or a local Qwen2.5-VL checkpoint")
    parser.add_argument("--adapter", help="LoRA adapter folder to merge (peft)")
    parser.add_argument("--out", required=True, help="bundle folder to write (replaced atomically)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--quantization", choices=("nf4", "quanto-int8", "quanto-int4", "bfloat16", "float32"),
                        default="nf4", help="nf4: GPU boxes (bitsandbytes); quanto-int8/int4: CPU-only boxes "
                        "(optimum-quanto); bfloat16/float32: no quantization")
    parser.add_argument("--base-model-name", help="recorded in bundle.json, e.g. Qwen/Qwen2.5-VL-7B-Instruct")
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"))
    parser.add_argument("--max-new-tokens", type=int)
    parser.add_argument("--threshold", type=float, help="fixed threshold (else the base's, or calibrated)")
    parser.add_argument("--calibration", help="labelled validation folder (good/ + defect folders, or MVTec)")
    parser.add_argument("--real-json", help='ReAL parameters as JSON, e.g. \'{"layer_start": 2}\'')
    parser.add_argument("--score-json", help='score method as JSON, e.g. \'{"method": "reasoning_branch", '
                                             '"branches": 3}\' (default: the base bundle\'s, else answer)')
    parser.add_argument("--device", default="cpu", help="where to quantize: cpu or cuda:N")
    parser.add_argument("--eval-report", help="JSON from 'inspectd eval --out' to put in the model card")
    parser.add_argument("--card-notes", default="", help="text for the model card (data, caveats)")
    args = parser.parse_args(argv)
    setup_logging()
    offline(quiet_transformers=False)
    return run_command(lambda: _export(args), also=(ValueError, OSError))  # bad JSON options, unreadable files


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
        device=args.device, card_notes=args.card_notes,
        eval_report=Path(args.eval_report) if args.eval_report else None,
    )
    manifest = export_bundle(request).manifest
    print(f"wrote {args.out}: {manifest.name}, {manifest.quantization}/{manifest.dtype}, threshold {manifest.threshold}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
