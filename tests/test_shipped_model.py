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
from inspectd.verdict import Verdict

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


def test_the_demo_shows_no_heat_on_passed_parts_and_keeps_words_that_name_the_defect():
    """``make run``'s demo as the default config runs it (its ReAL overrides on the shipped bundle), on the
    images the demo feed draws (half defective): a passed part has no outline and only a map as faint as its
    score; a flagged part's kept words are content words, at least one naming the defect's kind or place."""
    from inspectd.data.synthetic import DEFECTS
    from inspectd.real.params import FUNCTION_WORDS

    settings = load_settings(REPO / "config" / "inspectd.yaml")
    bundle = load_bundle(settings.model.bundle, "cpu")
    demo = Inspector(bundle, settings.real.apply(bundle.manifest.real), InspectorOptions(batch_size=8))
    samples = [make_sample(seed, 168, anomalous=seed % 2 == 0) for seed in range(16)]
    results = demo.inspect_images([NamedImage(f"demo-{seed}.png", s.image) for seed, s in enumerate(samples)])
    passed = [r for r in results if r.verdict is Verdict.NORMAL]
    flagged = [r for r in results if r.verdict is Verdict.ANOMALOUS]
    assert len(passed) >= 6 and len(flagged) >= 5, [r.verdict for r in results]
    for result in passed:
        assert not result.mask.any(), f"{result.source}: an outline on a part the model passed"
        assert result.anomaly_map.max() <= result.score + 1e-6 < 0.5, result.source
    naming = set(DEFECTS) | {"upper", "middle", "lower", "left", "center", "right"}
    for result in flagged:
        kept = [result.reasoning[a:b].strip().lower() for (a, b), k in
                zip(result.evidence.spans, result.kept_tokens) if k]
        assert kept and not set(kept) & set(FUNCTION_WORDS), (result.source, result.reasoning, kept)
        assert set(kept) & naming, (result.source, result.reasoning, kept)
