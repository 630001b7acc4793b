"""``inspectd-train``: one training door, the recipe (data, warm-up, CGRO, export, eval, publish) from one YAML.

    inspectd-train recipe --config RECIPE [--stop-after STAGE]   # every unfinished stage; a rerun resumes
    inspectd-train plan   --config RECIPE [--base FOLDER] [--measure]
                                            # the folder's split, CGRO's peak memory by component, before a run
    accelerate launch --num_processes N -m inspectd.training.cli recipe --config RECIPE [--stop-after cgro]
                                            # several GPUs: warm-up and CGRO data parallel, batch sizes per
                                            # process (cgro: use_cpu: false); one process exports and evaluates

A recipe starts from a fresh small model, an inspectd bundle or a downloaded Qwen2.5-VL checkpoint folder
(init), on synthetic images, a labelled folder or the console's reviewed inspections (data.kind).
Deprecated: warmup and cgro are the recipe stopped after that stage (recipe --stop-after warmup|cgro), with a
warning; sft and grpo, their older names, too. A training config of the old warmup|cgro commands (keys base,
output_dir) is refused with the recipe that does the same run.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inspectd.cli.common import run_command
from inspectd.logs import offline, setup_logging
from inspectd.training.recipe_config import STAGES, load_recipe
from inspectd.training.stage_names import OLD_STAGE_NAMES, stage_name

log = logging.getLogger("inspectd.train")

ALIASES = ("warmup", "cgro")  # the recipe stopped after that stage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="inspectd-train", description=__doc__.replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("recipe", "plan", *ALIASES, *OLD_STAGE_NAMES),
                        help="recipe (the stages), or plan (the folder's split, CGRO's memory); warmup and cgro "
                             "(deprecated): recipe --stop-after warmup|cgro; sft and grpo: their old names")
    parser.add_argument("--config", required=True, help="the recipe YAML (e.g. models/recipes/tiny-cgro.yaml)")
    parser.add_argument("--stop-after", choices=(*STAGES, *OLD_STAGE_NAMES),
                        help="recipe: finish this stage, then stop")
    parser.add_argument("--resume", action="store_true",
                        help="deprecated, changes nothing: every stage resumes (cgro from its newest checkpoint)")
    parser.add_argument("--base", type=Path, help="plan: this checkpoint folder instead of the one the recipe's CGRO "
                                                  "stage loads (its config.json and processor files are enough)")
    parser.add_argument("--measure", action="store_true",
                        help="plan: also run two real CGRO steps on the base (weights needed) and print the "
                             "measured peak of each phase beside the plan")
    args = parser.parse_args(argv)
    setup_logging()
    offline(quiet_transformers=False)
    return run_command(lambda: _train(args))


def _stop_after(args) -> str | None:
    """The stage the command stops after; the deprecated commands name it themselves."""
    if args.command in ("recipe", "plan"):
        return args.stop_after and stage_name(args.stop_after)
    stage = stage_name(args.command)
    log.warning("`inspectd-train %s` is deprecated: it runs the recipe up to its %s stage, as `inspectd-train recipe "
                "--config %s --stop-after %s` does; use that (docs/training.md)", args.command, stage, args.config,
                stage)
    if args.stop_after and stage_name(args.stop_after) != stage:
        log.warning("--stop-after %s ignored: `%s` stops after %s", args.stop_after, args.command, stage)
    return stage


def _train(args) -> int:
    recipe = load_recipe(Path(args.config))
    if args.resume:
        log.warning("--resume is the default now: every stage resumes (cgro from its newest checkpoint)")
    if args.command == "plan":
        from inspectd.training.recipe_plan import print_plan

        return print_plan(recipe, args.base, args.measure)
    stop_after = _stop_after(args)
    import torch

    from inspectd.training.recipe import run_recipe
    from inspectd.training.stage_record import leave_the_processes

    torch.set_num_threads(recipe.threads)
    run_recipe(recipe, stop_after)
    leave_the_processes()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
