"""inspectd-export: LoRA merge, NF4 on the CPU, calibration; the daemon's loader accepts the result."""

from __future__ import annotations

import grp
import os
import shutil
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from inspectd.bundle.files import verify_bundle
from inspectd.bundle.load import load_bundle
from inspectd.data.synthetic import make_sample
from inspectd.export.calibrate import balanced_accuracy_threshold
from inspectd.export.exporter import ExportRequest, _probe_inputs, export_bundle
from inspectd.inspection.inspector import Inspector, InspectorOptions
from inspectd.metrics.ranking import exact_auroc_ap
from tests.conftest import REPO

pytest.importorskip("bitsandbytes")


def test_nf4_export_reloads_with_the_exported_models_outputs(format_bundle, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(tmp_path / "nf4"),
         "--name", "tiny-nf4", "--quantization", "nf4", "--base-model-name", "tiny test model"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "round trip checked: max logit difference" in done.stderr
    manifest = verify_bundle(tmp_path / "nf4")
    assert manifest.quantization == "nf4" and manifest.base_model == "tiny test model"
    bundle = load_bundle(tmp_path / "nf4", "cpu")
    import bitsandbytes

    assert isinstance(bundle.model.model.language_model.layers[0].self_attn.q_proj, bitsandbytes.nn.Linear4bit)
    # The frozen vision tower and the output head stay in the compute dtype.
    four_bit = [name for name, module in bundle.model.named_modules() if isinstance(module, bitsandbytes.nn.Linear4bit)]
    assert four_bit and not any("visual" in name or "lm_head" in name for name in four_bit)
    # Close to the full-precision model it came from (NF4 error, not a broken checkpoint).
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.inference_mode():
        reference = full.model(**inputs).logits
        quantized = bundle.model(**inputs).logits
    agreement = (reference[0, -1].argmax() == quantized[0, -1].argmax()).item()
    assert agreement and torch.nn.functional.cosine_similarity(reference.flatten(), quantized.flatten(), dim=0) > 0.9


def test_lora_adapter_is_merged(format_bundle, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(format_bundle)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    torch.manual_seed(0)
    for name, parameter in lora.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.05)  # a trained adapter, not the zero init
    lora.save_pretrained(tmp_path / "adapter")
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.inference_mode():
        expected = lora.eval()(**inputs).logits
        untouched = full.model(**inputs).logits
    assert (expected - untouched).abs().max() > 1e-3, "the adapter must change the outputs"
    export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "merged", name="merged", quantization="float32",
                                adapter=tmp_path / "adapter"))
    merged = load_bundle(tmp_path / "merged", "cpu")
    with torch.inference_mode():
        actual = merged.model(**inputs).logits
    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)
    assert "adapter" in (tmp_path / "merged" / "MODEL_CARD.md").read_text()


@pytest.mark.parametrize("scheme", ["quanto-int8", "quanto-int4"])
def test_quanto_cpu_export_reloads_exactly_and_stays_close_to_float(format_bundle, tmp_path, scheme):
    pytest.importorskip("optimum.quanto")
    from optimum.quanto.nn import QLinear

    from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage

    result = export_bundle(ExportRequest(base=format_bundle, out=tmp_path / scheme, name=scheme, quantization=scheme))
    assert result.manifest.quantization == scheme and verify_bundle(tmp_path / scheme) == result.manifest
    assert f"{result.drift:.3g}" in (tmp_path / scheme / "MODEL_CARD.md").read_text()
    bundle = load_bundle(tmp_path / scheme, "cpu")
    assert isinstance(bundle.model.model.language_model.layers[0].mlp.up_proj, QLinear)
    assert not any(isinstance(m, QLinear) for m in bundle.model.model.visual.modules())
    full = load_bundle(format_bundle, "cpu")
    inputs = _probe_inputs(full.processor)
    with torch.no_grad():
        reference = full.model(**inputs).logits
        quantized = bundle.model(**inputs).logits
    assert (quantized - reference).abs().max().item() == pytest.approx(result.drift, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(reference.flatten(), quantized.flatten(), dim=0) > 0.95
    # The daemon's inspection path runs it (no_grad, capture, ReAL) and still reads its replies.
    sample = make_sample(81_000, 112, defect="hole")
    inspected = Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_images(
        [NamedImage("hole.png", sample.image)])[0]
    assert inspected.parse_status == "ok" and inspected.anomaly_map is not None, inspected.reply


def test_a_tampered_quanto_weights_file_is_refused(format_bundle, tmp_path):
    pytest.importorskip("optimum.quanto")
    from inspectd.errors import BundleError

    export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "q", name="q", quantization="quanto-int8"))
    weights = tmp_path / "q" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(tmp_path / "q", "cpu")


def test_calibration_writes_threshold_and_keeps_bundle_valid(format_bundle, tmp_path):
    folder = tmp_path / "val"
    for kind, anomalous in (("good", False), ("defect", True)):
        (folder / kind).mkdir(parents=True)
        for i in range(4):
            make_sample(80_000 + 10 * anomalous + i, 96, anomalous=anomalous).image.save(folder / kind / f"{i}.png")
    result = export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "cal", name="cal",
                                         quantization="float32", calibration=folder))
    manifest = result.manifest
    assert 0.0 <= manifest.threshold <= 1.0
    assert verify_bundle(tmp_path / "cal").threshold == manifest.threshold
    card = (tmp_path / "cal" / "MODEL_CARD.md").read_text()
    assert "calibrated on" in card
    # The card also says how well the score ranks those images: the AUROC of the exported bundle's own scores.
    bundle = load_bundle(tmp_path / "cal", "cpu")
    paths = [folder / kind / f"{i}.png" for kind in ("good", "defect") for i in range(4)]
    scores = [r.score for r in Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_files(paths)]
    labels = np.array([False] * 4 + [True] * 4)
    expected, _ = exact_auroc_ap(labels[[s is not None for s in scores]], [s for s in scores if s is not None])
    assert result.calibration.images == 8 and result.calibration.image_auroc == pytest.approx(expected)
    assert f"image AUROC there: {expected:.3f}" in card


def test_balanced_accuracy_threshold_rule():
    labels = np.array([0, 0, 0, 1, 1, 1], bool)
    threshold, value = balanced_accuracy_threshold(labels, np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9]))
    assert threshold == pytest.approx(0.5) and value == 1.0
    threshold, value = balanced_accuracy_threshold(labels, np.array([0.90, 0.91, 0.92, 0.95, 0.96, 0.97]))
    assert threshold == pytest.approx(0.935) and value == 1.0
    with pytest.raises(ValueError, match="both normal and anomalous"):
        balanced_accuracy_threshold(np.ones(3, bool), np.array([0.1, 0.2, 0.3]))


def test_calibration_to_a_recall_target_prints_and_records_its_rates(format_bundle, tmp_path):
    """--target-recall: the threshold is the recall rule's on the bundle's own scores; the console and the card
    say the rule, the rates expected there and the trade-off; bundle.json keeps the threshold alone."""
    from inspectd.bundle.manifest import BundleManifest
    from inspectd.export.calibrate import calibrate

    folder = _labelled_folder(tmp_path / "val", good=4, defect=4)
    out = tmp_path / "cal"
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(out),
         "--name", "cal", "--quantization", "float32", "--calibration", str(folder), "--target-recall", "0.75"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    bundle = load_bundle(out, "cpu")
    paths = [folder / kind / f"{i}.png" for kind in ("good", "defect") for i in range(4)]
    scores = [r.score for r in Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_files(paths)]
    parsed = [s is not None for s in scores]
    labels = np.array([False] * 4 + [True] * 4)[parsed]
    expected = calibrate(labels, np.array([s for s in scores if s is not None]), parsed.count(False), 0.75)
    assert expected.expected.recall >= 0.75
    manifest = verify_bundle(out)
    assert manifest.threshold == pytest.approx(expected.threshold)
    assert set(manifest.model_dump()) == set(BundleManifest.model_fields)  # no new manifest field
    # Printed: rule, threshold, expected rates, the balanced-accuracy alternative and the table.
    assert (f"threshold {expected.threshold:.4f} by recall target 0.75 (the highest threshold that flags "
            f">= 75 % of the defects)") in done.stdout
    assert f"expected there: {expected.expected.describe(intervals=True)}" in done.stdout
    assert (f"maximum balanced accuracy would set {expected.balanced.threshold:.4f}: "
            f"{expected.balanced.describe()}") in done.stdout
    for row in expected.operating_points:
        assert f"recall >= {row.target_recall:.2f}: threshold {row.point.threshold:.4f}, {row.point.describe()}" \
            in done.stdout
    # Recorded in the card.
    card = (out / "MODEL_CARD.md").read_text()
    assert f"- Threshold: {expected.threshold:.4f}, calibrated on `{folder}`" in card
    assert "by the recall target 0.75: the highest threshold that flags at least that share" in card
    assert f"- Expected on those images at {expected.threshold:.4f}: {expected.expected.describe(intervals=True)}" \
        in card
    assert f"- At the maximum-balanced-accuracy threshold {expected.balanced.threshold:.4f} instead" in card
    assert "| recall target | threshold | defects missed | good parts flagged |" in card
    assert f"| 0.95 | {expected.operating_points[2].point.threshold:.4f} |" in card


@pytest.mark.parametrize("target", ["0", "1.5", "-0.2", "nan", "most"])
def test_a_target_recall_outside_zero_one_is_refused_naming_the_option(target, tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(tmp_path / "base"), "--out", str(tmp_path / "b"),
         "--name", "b", "--calibration", str(tmp_path / "val"), "--target-recall", target],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2
    assert "argument --target-recall: target recall must be" in done.stderr and "(0, 1]" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_bad_target_recall_fails_before_any_work(format_bundle, tmp_path):
    from inspectd.errors import BundleError

    site = tmp_path / "site"
    site.mkdir()
    folder = _labelled_folder(tmp_path / "val", good=2, defect=2)
    with pytest.raises(BundleError, match=r"in \(0, 1\] .*got 1\.2 \(--target-recall\)"):
        export_bundle(ExportRequest(base=format_bundle, out=site / "b", name="b", quantization="float32",
                                    calibration=folder, target_recall=1.2))
    with pytest.raises(BundleError, match=r"target recall 0\.9 needs a calibration folder \(--calibration\)"):
        export_bundle(ExportRequest(base=format_bundle, out=site / "b", name="b", quantization="float32",
                                    target_recall=0.9))
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(site / "b"),
         "--name", "b", "--target-recall", "0.9"],
        capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2 and "--target-recall needs --calibration FOLDER" in done.stderr
    assert list(site.iterdir()) == []


# --- a failed export leaves --out as it was; bundles a service user in their group can read -------------


def _snapshot(folder) -> dict:
    """Every file under ``folder`` with its sha256 and mode, and the folder's own mode: byte-for-byte identity."""
    from inspectd.bundle.files import sha256_file

    files = {p.relative_to(folder).as_posix(): (sha256_file(p), p.stat().st_mode)
             for p in sorted(folder.rglob("*")) if p.is_file()}
    return {"folder_mode": folder.stat().st_mode, "files": files}


def _labelled_folder(folder, good: int, defect: int):
    for kind, count, anomalous in (("good", good, False), ("defect", defect, True)):
        if count:
            (folder / kind).mkdir(parents=True)
        for i in range(count):
            make_sample(80_000 + 10 * anomalous + i, 96, anomalous=anomalous).image.save(folder / kind / f"{i}.png")
    return folder


def test_a_failed_calibration_leaves_the_previous_bundle_byte_identical(random_bundle, format_bundle, tmp_path):
    """The issue's case: the untrained model's replies never parse, so no threshold can be chosen."""
    site = tmp_path / "site"
    live = site / "live"
    shutil.copytree(format_bundle, live)  # the bundle a daemon is serving
    before = _snapshot(live)
    calibration = _labelled_folder(tmp_path / "val", good=2, defect=2)
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(random_bundle), "--out", str(live),
         "--name", "new", "--quantization", "float32", "--max-new-tokens", "8", "--calibration", str(calibration)],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2, done.stderr
    assert "round trip checked" in done.stderr, "the failure must come after the new bundle was written"
    assert f"error: {calibration}: no calibration image gave a parsable reply" in done.stderr
    assert _snapshot(live) == before
    assert sorted(p.name for p in site.iterdir()) == ["live"], "no partial or scratch folder is left beside it"
    verify_bundle(live)


def test_a_failed_export_to_a_new_folder_creates_none(random_bundle, tmp_path):
    from inspectd.errors import BundleError

    site = tmp_path / "site"
    site.mkdir()
    calibration = _labelled_folder(tmp_path / "val", good=2, defect=2)
    with pytest.raises(BundleError, match=f"{calibration}: no calibration image gave a parsable reply"):
        export_bundle(ExportRequest(base=random_bundle, out=site / "new", name="new", quantization="float32",
                                    max_new_tokens=8, calibration=calibration))
    assert list(site.iterdir()) == []


def test_a_calibration_folder_of_one_kind_fails_before_any_work(format_bundle, tmp_path):
    from inspectd.errors import InspectdError

    site = tmp_path / "site"
    site.mkdir()
    for good, defect in ((3, 0), (0, 3)):
        folder = _labelled_folder(tmp_path / f"val-{good}-{defect}", good=good, defect=defect)
        with pytest.raises(InspectdError, match=f"{folder}: .*(needs both normal|no good/)"):
            export_bundle(ExportRequest(base=format_bundle, out=site / "new", name="new", quantization="float32",
                                        calibration=folder))
    assert list(site.iterdir()) == []


def test_an_interrupted_export_leaves_the_previous_bundle(format_bundle, tmp_path):
    """Ctrl-C (SIGINT) once the new bundle is written, while it is checked: the old one stays, nothing else."""
    site = tmp_path / "site"
    live = site / "live"
    shutil.copytree(format_bundle, live)
    before = _snapshot(live)
    # Checking 48 images takes seconds even on an idle machine (8 took 0.3 s in a CI run, which the poll below
    # missed); one thread, so the export's spinning threads cannot starve this process's polling.
    calibration = _labelled_folder(tmp_path / "val", good=24, defect=24)
    export = subprocess.Popen(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(live),
         "--name", "new", "--quantization", "float32", "--calibration", str(calibration)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        # A CI started in the background without job control ignores SIGINT, and the child would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 240
    while not list(site.glob(".live.partial-*/bundle.json")) and export.poll() is None:
        assert time.monotonic() < deadline, "the partial bundle never appeared"
        time.sleep(0.01)
    assert export.poll() is None, "the export finished before it could be interrupted:\n" + export.stderr.read()
    export.send_signal(signal.SIGINT)
    _, stderr = export.communicate(timeout=240)
    assert export.returncode != 0 and "KeyboardInterrupt" in stderr, stderr
    assert _snapshot(live) == before
    assert sorted(p.name for p in site.iterdir()) == ["live"]


def test_exports_replace_the_bundle_and_keep_its_group(format_bundle, tmp_path):
    site = tmp_path / "site"
    result = export_bundle(ExportRequest(base=format_bundle, out=site / "b", name="first", quantization="float32"))
    assert result.manifest.name == "first"
    group = (site / "b").stat().st_gid
    second = export_bundle(ExportRequest(base=format_bundle, out=site / "b", name="second", quantization="float32"))
    assert second.manifest.name == "second" and verify_bundle(site / "b").name == "second"
    assert sorted(p.name for p in site.iterdir()) == ["b"]
    assert {p.stat().st_gid for p in (site / "b").rglob("*")} == {group}


def test_an_unknown_group_is_refused_before_any_work(format_bundle, tmp_path):
    from inspectd.errors import BundleError

    with pytest.raises(BundleError, match="group 'no-such-group-x' does not exist"):
        export_bundle(ExportRequest(base=format_bundle, out=tmp_path / "b", name="b", quantization="float32",
                                    group="no-such-group-x"))
    assert list(tmp_path.iterdir()) == []


def _other_group() -> grp.struct_group:
    """A group that is not root's, for the bundle and the other user to share."""
    for name in ("users", "nogroup", "staff"):
        try:
            return grp.getgrnam(name)
        except KeyError:
            pass
    candidates = [g for g in grp.getgrall() if g.gr_gid != 0]
    if not candidates:
        pytest.skip("no group other than root's on this machine")
    return candidates[0]


def _load_as(uid: int, gid: int, folder) -> str:
    """Load ``folder`` with ``load_bundle`` in a child process that runs as ``uid`` with only group ``gid``.

    A forked child rather than a fresh interpreter: the interpreter and its
    packages may sit where the other user cannot read (here: under /root),
    which is the machine's business, not the bundle's. The parent has already
    loaded a bundle, so the child imports nothing new and reads only the
    bundle. Returns "ok" or the child's error.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            os.close(read_end)
            os.setgroups([gid])
            os.setgid(gid)
            os.setuid(uid)
            torch.set_num_threads(1)
            load_bundle(folder, "cpu")
            message, code = "ok", 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write_end, message.encode()[:60_000])
        os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + 120
    while os.waitpid(pid, os.WNOHANG) == (0, 0):
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("loading the bundle as another user hung")
        time.sleep(0.05)
    with os.fdopen(read_end, "rb") as reader:
        return reader.read().decode()


def test_a_bundle_exported_by_root_loads_as_another_user_of_its_group(format_bundle, open_folder):
    from inspectd.doctor import Reader, check_readable

    if os.geteuid() != 0:
        pytest.skip("needs root: exports as root and loads as uid 65534 (CI runs as root)")
    group = _other_group()
    out = open_folder / "bundle"
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(format_bundle), "--out", str(out),
         "--name", "shared", "--quantization", "float32", "--group", group.gr_name],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    for path in out.rglob("*"):
        assert (stat.S_IMODE(path.stat().st_mode), path.stat().st_gid) == (0o640, group.gr_gid), path
    load_bundle(out, "cpu")  # as root, so that the child needs no import of its own
    assert _load_as(65534, group.gr_gid, out) == "ok"
    # Not world-readable: a user outside the group is refused.
    outsider = next(g.gr_gid for g in grp.getgrall() if g.gr_gid not in (0, group.gr_gid))
    assert "cannot be read by uid 65534" in _load_as(65534, outsider, out)
    # The weights as they used to be written (0600): the group member cannot load it, and doctor says which file.
    weights = out / "model.safetensors"
    weights.chmod(0o600)
    failure = _load_as(65534, group.gr_gid, out)
    assert failure.startswith("BundleError:") and f"{weights}: cannot be read by uid 65534" in failure, failure
    check = check_readable("bundle access", out, Reader("nobody", 65534, frozenset({group.gr_gid})), "FIX")
    assert check.status == "FAIL" and f"{weights} (owner root, group {group.gr_name}, mode 0600)" in check.detail


def test_a_deployed_4bit_bundle_is_recalibrated_to_a_recall_target(format_bundle, tmp_path):
    """A plant recalibrates its deployed nf4 bundle on its own photos (the README's way to miss fewer defects):
    the export starts from the bundle's dequantized weights (saving its 4-bit model again failed inside
    transformers), keeps its prompt, score and ReAL, and its scores are the deployed bundle's, so only the
    threshold moves; the deployed bundle is left as it was."""
    from inspectd.bundle.files import read_manifest, sha256_file

    deployed = tmp_path / "deployed"
    export_bundle(ExportRequest(base=format_bundle, out=deployed, name="deployed", quantization="nf4"))
    before = {p.name: sha256_file(p) for p in deployed.iterdir()}
    folder = _labelled_folder(tmp_path / "own-photos", good=4, defect=4)
    out = tmp_path / "recalibrated"
    done = subprocess.run(
        [sys.executable, "-m", "inspectd.export.cli", "--base", str(deployed), "--out", str(out),
         "--name", "recalibrated", "--calibration", str(folder), "--target-recall", "1.0"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "threshold" in done.stdout and "by recall target 1" in done.stdout
    assert {p.name: sha256_file(p) for p in deployed.iterdir()} == before
    old, new = read_manifest(deployed), verify_bundle(out)
    assert new.quantization == "nf4" and (new.prompt, new.score, new.real) == (old.prompt, old.score, old.real)
    paths = sorted(folder.rglob("*.png"))
    scores = {}
    for name, bundle_folder in (("deployed", deployed), ("recalibrated", out)):
        bundle = load_bundle(bundle_folder, "cpu")
        results = Inspector(bundle, bundle.manifest.real, InspectorOptions()).inspect_files(paths)
        scores[name] = [r.score for r in results]
    assert scores["recalibrated"] == pytest.approx(scores["deployed"], abs=0.02)
    defects = [s for p, s in zip(paths, scores["recalibrated"]) if p.parent.name == "defect" and s is not None]
    assert all(s >= new.threshold for s in defects)  # recall 1.0 on the folder it was calibrated on
