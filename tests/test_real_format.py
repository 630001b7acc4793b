"""The plant's path on a checkpoint in the real Qwen2.5-VL-7B-Instruct format (scaled down, random weights).

Export from the checkpoint, inspect, eval, the daemon, the recipe's warm-up
and CGRO stages from the checkpoint folder on a labelled folder of mixed-size
images, export with the adapter to NF4 / bf16 / quanto, reload. The tiny model keeps the rest of the
suite fast; this module guards the real format (right-padding tokenizer,
yes / Ġyes / Yes ids, repetition_penalty 1.05, 12.8 MP processor, bf16 hub
weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inspectd.bundle.files import verify_bundle
from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample, write_mvtec_layout
from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage
from inspectd.verdict import Verdict
from tests import real_format
from tests.daemon_harness import DaemonProcess, db_rows, wait_for, write_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not real_format.available(), reason="shared/qwen2.5-vl-7b-instruct is absent")]

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}


def _run(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env=ENV)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return real_format.build_checkpoint(tmp_path_factory.mktemp("real-format") / "Qwen2.5-VL-7B-Instruct-scaled")


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("real-format-bundle") / "bf16"
    _run("inspectd.export.cli", "--base", str(checkpoint), "--out", str(out), "--name", "real-format",
         "--quantization", "bfloat16", "--base-model-name", "Qwen/Qwen2.5-VL-7B-Instruct (scaled down)",
         "--image-size", "112", "112", "--max-new-tokens", "24", "--real-json", '{"layer_start": 1}',
         "--score-json", '{"method": "reasoning_branch", "branches": 2}')
    return out


@pytest.fixture(scope="module")
def mixed_size_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("line")
    sizes = [(90, 140), (160, 120), (112, 112), (200, 96)]
    for kind, seeds in (("good", range(4)), ("scratch", range(4, 8))):
        (root / kind).mkdir()
        for i, seed in enumerate(seeds):
            image = make_sample(seed, 112, anomalous=kind != "good").image.resize(sizes[i % len(sizes)])
            image.save(root / kind / f"{seed}.png")
    return root


def test_export_keeps_the_real_tokenizer_template_and_generation_config(checkpoint, bundle):
    manifest = verify_bundle(bundle)
    assert manifest.dtype == "bfloat16" and manifest.image_size == (112, 112)
    assert (manifest.score.method, manifest.score.branches) == ("reasoning_branch", 2)
    loaded = load_bundle(bundle, "cpu")
    tokenizer = loaded.processor.tokenizer
    assert len(tokenizer) > 150_000 and tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert loaded.model.generation_config.repetition_penalty == pytest.approx(1.05)


def test_an_untuned_checkpoint_runs_and_its_free_text_is_recorded_not_guessed(bundle):
    loaded = load_bundle(bundle, "cpu")
    inspector = Inspector(loaded, loaded.manifest.real, InspectorOptions(batch_size=2))
    images = [NamedImage("a.png", make_sample(1, 112).image), NamedImage("b.png", make_sample(2, 140).image)]
    results = inspector.inspect_images(images)
    for result in results:  # random weights: free text, kept verbatim, verdict unknown, no map
        assert result.verdict is Verdict.UNKNOWN and result.reply and result.anomaly_map is None


@pytest.mark.parametrize("reply, answer, mapped", [
    ("<answer>Yes</answer>", "yes", False),
    ("Yes.", "yes", False),
    ("The surface shows a dark crack near the top left corner.\nAnswer: No", "no", True),
    ("There is a scratch across the middle. <answer> yes </answer>", "yes", True),
    ("I cannot tell from this picture.", None, False),
    # A leading answer: scored at the first token, its map from the text after it.
    ("Yes, there is a crack near the top left corner of the tile.", "yes", True),
    ("No, there are no visible defects on the surface of the tile.", "no", True),
    ("<answer>no.</answer>", "no", False),
    ("<answer>Yes, there is a defect near the top left corner.</answer>", "yes", True),
    ("Yes, there is a crack. Answer: no", None, False),  # both: never resolved
])
def test_a_lenient_bundle_scores_an_untuned_models_reply_at_its_answer(bundle, reply, answer, mapped):
    """Zero-shot on the real tokenizer: where the answer word sits, which ids it is, the verdict and the map."""
    import torch

    from inspectd.bundle.manifest import ScoreSpec

    loaded = load_bundle(bundle, "cpu")
    lenient = dataclasses.replace(loaded, manifest=loaded.manifest.model_copy(
        update={"score": ScoreSpec(replies="lenient")}))
    inspector = Inspector(lenient, lenient.manifest.real, InspectorOptions())
    model = inspector.model
    encoded = model.tokenizer(reply, add_special_tokens=False, return_offsets_mapping=True)
    ids = encoded["input_ids"]
    # The answer's token found independently of the parser: the first token whose text is yes / no when the reply
    # opens with it (a leading answer), else the last one.
    words = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if reply[a:b].strip().lower() in ("yes", "no")]
    leading = reply.removeprefix("<answer>").lower().startswith(("yes,", "no,", "no."))
    answer_at = (words[0] if leading else words[-1]) if words else None
    columns = len(model.answers.columns)
    yes_no = torch.zeros(len(ids), 1, columns)
    favour = torch.tensor([3.0] * len(model.answers.yes) + [-3.0] * len(model.answers.no))
    yes_no[:, 0] = -favour if answer == "yes" else favour  # every other step says the opposite
    if answer_at is not None:
        yes_no[answer_at, 0] = favour if answer == "yes" else -favour
    grid, image_keys = (4, 4), 16
    attention = torch.rand(len(ids), model.num_layers, 1, image_keys + 2)
    reply_out, _ = model._reply(0, ids, attention, yes_no, grid, image_keys, image_keys)
    result = inspector._result(NamedImage("x.png", make_sample(1, 112).image), reply_out)
    if answer is None:
        assert result.verdict is Verdict.UNKNOWN and result.parse_status == "unparsable"
        return
    assert result.parse_status == "lenient"
    assert result.verdict is (Verdict.ANOMALOUS if answer == "yes" else Verdict.NORMAL)
    assert (result.score > 0.9) if answer == "yes" else (result.score < 0.1)
    assert (result.anomaly_map is not None) is mapped and (result.reasoning is not None) is mapped
    if mapped:
        assert result.reasoning_tokens > 3 and result.anomaly_map.shape == (112, 112)
        assert result.reasoning in reply and not result.reasoning.lower().startswith(("yes", "no,"))


def test_eval_and_the_daemon_run_on_the_real_format(bundle, tmp_path):
    write_mvtec_layout(tmp_path / "synth", "tiles", range(6), size=112)
    done = _run("inspectd.cli", "eval", str(tmp_path / "synth"), "--bundle", str(bundle), "--device", "cpu")
    assert "macro average" in done.stdout
    config = write_config(tmp_path, bundle)
    daemon = DaemonProcess(config)
    try:
        daemon.wait_ready()
        for seed in range(3):
            make_sample(seed, 150).image.save(tmp_path / "drop-line1" / f"{seed}.png")
        query = "SELECT i.verdict, b.name FROM inspections i JOIN bundles b ON b.id = i.bundle_id"
        rows = wait_for(lambda: (lambda r: r if len(r) == 3 else None)(db_rows(tmp_path / "var" / "inspectd.db",
                                                                              query)), 180, "3 rows")
        assert {name for _, name in rows} == {"real-format"} and {v for v, _ in rows} == {"unknown"}
    finally:
        assert daemon.stop() == 0, daemon.output()


def test_warmup_and_cgro_on_mixed_size_images_then_export_the_adapter(checkpoint, mixed_size_folder, tmp_path):
    recipe = {
        "name": "real-format-line", "output": str(tmp_path / "published"), "work_dir": str(tmp_path / "train"),
        "init": str(checkpoint),  # the checkpoint folder as downloaded, not a bundle
        "data": {"kind": "labelled_folder", "path": str(mixed_size_folder), "image_size": 112,
                 "validation_fraction": 0.25},
        "warmup": {"steps": 2, "batch_size": 4},
        "cgro": {"max_steps": 2, "batch_size": 2, "generations": 2, "max_completion_length": 48, "save_steps": 1,
                 "gradient_checkpointing": False},
        "max_new_tokens": 48, "real": {"layer_start": 1},
    }
    config = tmp_path / "recipe.yaml"
    config.write_text(yaml.safe_dump(recipe))
    _run("inspectd.training.cli", "recipe", "--config", str(config), "--stop-after", "warmup")
    warmup = json.loads((tmp_path / "train" / "warmup" / "stage.json").read_text())
    assert len(warmup["losses"]) == 2 and all(loss == loss for loss in warmup["losses"])
    from safetensors import safe_open

    model = tmp_path / "train" / "warmup" / "model"
    with safe_open(str(model / "model.safetensors"), "pt") as weights:
        # trained on float32 master weights, saved as the checkpoint came (bf16: half of a float32 copy)
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"BF16"}
    plan = _run("inspectd.training.cli", "plan", "--config", str(config)).stdout
    assert "peak (" in plan and "KV cache" in plan and "float32 base weights" in plan and str(model) in plan
    _run("inspectd.training.cli", "recipe", "--config", str(config), "--stop-after", "cgro")
    bundle = model  # the warm-up's bundle is the base the adapter merges into
    adapter = tmp_path / "train" / "cgro" / "adapter"
    assert (adapter / "adapter_config.json").is_file()
    image = make_sample(3, 130).image
    for quantization in ("nf4", "bfloat16", "quanto-int8"):
        out = tmp_path / f"bundle-{quantization}"
        _run("inspectd.export.cli", "--base", str(bundle), "--adapter", str(adapter), "--out", str(out),
             "--name", f"real-format-{quantization}", "--quantization", quantization)
        loaded = load_bundle(out, "cpu")
        assert verify_bundle(out).name == f"real-format-{quantization}"
        result = Inspector(loaded, loaded.manifest.real, InspectorOptions()).inspect_images(
            [NamedImage("x.png", image)])[0]
        assert result.verdict is not Verdict.FAILED and result.generated_tokens > 0
