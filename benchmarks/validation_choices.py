"""Choices for a labelled-folder recipe, measured on its validation split only.

    python benchmarks/validation_choices.py models/recipes/magnetic-tile-cgro.yaml \
        var/recipe/magnetic-tile-cgro/warmup/model [--threads 1]

Prints, for each score method, the image AUROC on the held-out real images
(labels only) and, for each map scaling and ReAL filter setting, the pixel
AUROC / AUPR of ReAL and of the all-token map on held-out good images with
drawn defects (exact masks). This is how magnetic-tile-cgro's `score`,
`real.map_scaling` and `real.use_relevance_filter` were chosen: no figure of
the dev subset enters.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from inspectd.bundle.load import load_bundle
from inspectd.bundle.manifest import ScoreSpec
from inspectd.data.layouts import read_mvtec
from inspectd.evaluation.runner import evaluate
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.metrics.ranking import exact_auroc_ap
from inspectd.training.line_data import split_folder, write_drawn_validation
from inspectd.training.recipe import load_recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe")
    parser.add_argument("bundle", help="a bundle of the recipe's model, e.g. its warmup/model")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_recipe(Path(args.recipe))
    split = split_folder(config.data)
    base = load_bundle(Path(args.bundle), "cpu")
    with tempfile.TemporaryDirectory() as scratch:
        drawn = read_mvtec(write_drawn_validation(config.data, split, Path(scratch),
                                                  config.data.validation_draw_seed(config.warmup.seed),
                                                  tiles=None))  # its score specs inspect whole photos
        labels = np.array([image.anomalous for image in split.validation])
        for method, branches in (("answer", 1), ("reasoning_branch", 1), ("reasoning_branch", 3)):
            spec = ScoreSpec(method=method, branches=branches)
            bundle = dataclasses.replace(base, manifest=base.manifest.model_copy(update={"score": spec}))
            started = time.perf_counter()
            results = Inspector(bundle, bundle.manifest.real, InspectorOptions(batch_size=8)).inspect_files(
                [image.path for image in split.validation])
            scores = np.array([r.score if r.score is not None else 0.5 for r in results])
            auroc, ap = exact_auroc_ap(labels, scores)
            print(f"score {method} (branches {branches}): real validation image AUROC {auroc:.3f}, AP {ap:.3f} "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
            for scaling in ("min_max", "score_gated"):
                _maps(bundle, drawn, scaling, {"map_scaling": scaling})
        # ReAL's filters and layers, with the chosen score and scaling
        bundle = dataclasses.replace(base, manifest=base.manifest.model_copy(update={"score": ScoreSpec(
            method="reasoning_branch", branches=3)}))
        for name, update in (("both filters", {}), ("no relevance filter", {"use_relevance_filter": False}),
                             ("no entropy filter", {"use_entropy_filter": False}),
                             ("layer_start 0", {"layer_start": 0}), ("layer_start 2", {"layer_start": 2}),
                             ("high_factor 1", {"high_factor": 1.0})):
            _maps(bundle, drawn, name, {"map_scaling": "score_gated", **update})


def _maps(bundle, drawn, label: str, update: dict) -> None:
    real = bundle.manifest.real.model_copy(update=update)
    m = evaluate(Inspector(bundle, real, InspectorOptions(batch_size=8)), [drawn]).overall
    print(f"    {label:<19}: drawn validation pixel AUROC ReAL {m['pixel_auroc']:.3f} AUPR {m['pixel_aupr']:.3f}"
          f" | all tokens {m['pixel_auroc_all_tokens']:.3f} {m['pixel_aupr_all_tokens']:.3f}", flush=True)


if __name__ == "__main__":
    main()
