"""The shipped default model really finds and localizes defects (issue: shipped default model).

Runs the bundle the README's main command runs, loaded as the daemon loads it
(hashes verified), on generated samples from seeds it was never trained on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from inspectd.bundle.load import load_bundle
from inspectd.config import load_settings
from inspectd.data.synthetic import TEXTURES, make_sample
from inspectd.inspection.inspector import Inspector, InspectorOptions, NamedImage
from inspectd.inspection.result import Verdict

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "models" / "tiny-cgro"


@pytest.fixture(scope="module")
def inspector() -> Inspector:
    bundle = load_bundle(SHIPPED, "cpu")
    return Inspector(bundle, bundle.manifest.real, InspectorOptions(threshold=bundle.manifest.threshold))


def test_default_config_runs_the_shipped_model():
    settings = load_settings(REPO / "config" / "inspectd.yaml")
    assert settings.model.bundle.resolve() == SHIPPED.resolve()


CLOUDY_MISS = pytest.mark.xfail(strict=True, reason="known weakness of this small model (model card: cloudy pixel "
                                "AUROC 62.6): it names the hole but its ReAL mask misses it on the cloudy texture")


@pytest.mark.parametrize("texture", [t if t != "cloudy" else pytest.param(t, marks=CLOUDY_MISS) for t in TEXTURES])
def test_shipped_model_flags_and_localizes_a_hole_on_every_texture(inspector, texture):
    # A hole (a near-black pit) is the clearest defect the generator draws; seeds from the evaluation range.
    sample = make_sample(21, 168, defect="hole", texture_kind=texture)
    result = inspector.inspect_images([NamedImage(f"{texture}-hole.png", sample.image)])[0]
    assert result.verdict is Verdict.ANOMALOUS, result.reply
    assert result.reasoning and "hole" in result.reasoning
    assert result.mask is not None and result.mask.shape == sample.mask.shape
    covered = (result.mask & sample.mask).sum() / sample.mask.sum()
    assert covered > 0.3, f"mask covers {covered:.0%} of the drawn hole"
    assert result.mask.sum() < 0.25 * result.mask.size  # a region, not the whole image


def test_shipped_model_passes_clean_samples(inspector):
    samples = [make_sample(seed, 168, anomalous=False) for seed in (22, 23, 24)]
    results = inspector.inspect_images([NamedImage(f"clean-{i}.png", s.image) for i, s in enumerate(samples)])
    assert [r.verdict for r in results] == [Verdict.NORMAL] * 3, [r.reply for r in results]
    assert all("no visible defect" in r.reasoning for r in results)


def test_score_gated_maps_mark_only_flagged_parts():
    bundle = load_bundle(SHIPPED, "cpu")
    gated = Inspector(bundle, bundle.manifest.real.model_copy(update={"map_scaling": "score_gated"}),
                      InspectorOptions(threshold=bundle.manifest.threshold))
    hole = make_sample(21, 168, defect="hole", texture_kind="woven")
    clean = make_sample(22, 168, anomalous=False)
    flagged, passed = gated.inspect_images([NamedImage("hole.png", hole.image), NamedImage("clean.png", clean.image)])
    assert flagged.verdict is Verdict.ANOMALOUS and flagged.mask.any()
    assert passed.verdict is Verdict.NORMAL and not passed.mask.any()
    assert passed.anomaly_map.max() <= passed.score + 1e-6  # faint: scaled by its (low) score
