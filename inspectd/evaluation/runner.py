"""Run a bundle over labelled datasets and score it the way the paper does.

Image level: AUROC, AUPR (average precision) and ACC over P(yes). Pixel
level: AUROC, AUPR and ACC over every pixel of every test image (normal
images count with an all-zero ground truth), streamed through fixed bins.
Per category, per dataset (macro over categories) and overall (macro over
datasets), with the Tab. 7 ablation: the map from all reasoning tokens next
to the ReAL-selected one.

Choices: an image whose reply does not parse (verdict unknown) or that fails
scores 0.5 (no information), counts as wrong for ACC, and has an all-zero
map; their counts are reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from inspectd.data.layouts import Dataset, LabelledImage
from inspectd.inspection.inspector import Inspector
from inspectd.inspection.result import InspectionResult, Verdict
from inspectd.inspection.views import all_token_view_map
from inspectd.metrics.ranking import BinnedCurve, accuracy, exact_auroc_ap

METRICS = ("image_auroc", "image_aupr", "image_acc", "pixel_auroc", "pixel_aupr", "pixel_acc",
           "pixel_auroc_all_tokens", "pixel_aupr_all_tokens")


@dataclass
class CategoryReport:
    dataset: str
    category: str
    images: int
    anomalous: int
    unknown: int = 0
    failed: int = 0
    real_fallbacks: int = 0
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    pixel_tie_error: float = 0.0


@dataclass
class EvalReport:
    bundle: str
    bundle_sha256: str
    categories: list[CategoryReport]
    datasets: dict[str, dict[str, float]]
    overall: dict[str, float]

    def to_json(self) -> dict:
        return {
            "bundle": self.bundle,
            "bundle_sha256": self.bundle_sha256,
            "categories": [asdict(c) for c in self.categories],
            "datasets": self.datasets,
            "overall": self.overall,
        }


def _mask(image: LabelledImage, size: tuple[int, int]) -> np.ndarray:
    if image.mask_path is None:
        return np.zeros((size[1], size[0]), dtype=bool)
    with Image.open(image.mask_path) as mask:
        return np.asarray(mask.convert("L")) > 127


def _macro(reports: list[dict[str, float]]) -> dict[str, float]:
    out = {}
    for metric in METRICS:
        values = [r[metric] for r in reports if not math.isnan(r.get(metric, float("nan")))]
        out[metric] = float(np.mean(values)) if values else float("nan")
    return out


def evaluate_category(
    inspector: Inspector, dataset: str, category: str, images: list[LabelledImage], bins: int,
    by_defect: bool = False,
) -> list[CategoryReport]:
    """The category's report; with ``by_defect`` also one per defect kind (its images + all good ones)."""
    started = time.perf_counter()
    results: list[InspectionResult] = inspector.inspect_files([i.path for i in images])
    seconds = time.perf_counter() - started
    pairs = list(zip(images, results))
    reports = [_report(inspector, dataset, category, pairs, bins, seconds)]
    if by_defect:
        good = [(i, r) for i, r in pairs if not i.anomalous]
        for defect in sorted({i.defect for i in images if i.anomalous}):
            subset = good + [(i, r) for i, r in pairs if i.defect == defect]
            reports.append(_report(inspector, dataset, f"{category}/{defect}", subset, bins, 0.0))
    return reports


def _report(inspector: Inspector, dataset: str, category: str, pairs, bins: int, seconds: float) -> CategoryReport:
    report = CategoryReport(dataset, category, len(pairs), sum(i.anomalous for i, _ in pairs), seconds=seconds)
    mask_threshold = inspector.real.mask_threshold
    real_curve = BinnedCurve(bins, mask_threshold)
    all_curve = BinnedCurve(bins, mask_threshold)
    labels, scores, predictions = [], [], []
    for image, result in pairs:
        labels.append(image.anomalous)
        if result.verdict is Verdict.FAILED or result.score is None:
            report.failed += result.verdict is Verdict.FAILED
            report.unknown += result.verdict is Verdict.UNKNOWN
            scores.append(0.5)
            predictions.append(not image.anomalous)  # counted wrong
        else:
            scores.append(result.score)
            predictions.append(result.verdict is Verdict.ANOMALOUS)
        if result.verdict is Verdict.FAILED:
            continue
        size = result.image_size
        truth = _mask(image, size)
        if result.anomaly_map is not None:
            report.real_fallbacks += bool(result.real_fallback)
            real_curve.add(result.anomaly_map, truth)
            baseline = all_token_view_map(result, inspector.real)
            all_curve.add(baseline, truth)
        else:
            blank = np.zeros(truth.shape, dtype=np.float32)
            real_curve.add(blank, truth)
            all_curve.add(blank, truth)
    image_auroc, image_aupr = exact_auroc_ap(np.array(labels), np.array(scores))
    pixel_auroc, pixel_aupr = real_curve.auroc_ap()
    all_auroc, all_aupr = all_curve.auroc_ap()
    report.metrics = {
        "image_auroc": image_auroc,
        "image_aupr": image_aupr,
        "image_acc": accuracy(np.array(labels), np.array(predictions)),
        "pixel_auroc": pixel_auroc,
        "pixel_aupr": pixel_aupr,
        "pixel_acc": real_curve.accuracy(),
        "pixel_auroc_all_tokens": all_auroc,
        "pixel_aupr_all_tokens": all_aupr,
    }
    report.pixel_tie_error = max(real_curve.max_tie_error(), all_curve.max_tie_error())
    return report


def evaluate(inspector: Inspector, datasets: list[Dataset], bins: int = 65536, limit: int | None = None,
             progress=None, by_defect: bool = False) -> EvalReport:
    """Per category (and per defect kind with ``by_defect``; those rows stay out of the averages)."""
    categories = []
    for dataset in datasets:
        for category in dataset.categories():
            images = [i for i in dataset.images if i.category == category]
            if limit is not None:
                normal = [i for i in images if not i.anomalous][: limit // 2]
                anomalous = [i for i in images if i.anomalous][: limit - len(normal)]
                images = normal + anomalous
            reports = evaluate_category(inspector, dataset.name, category, images, bins, by_defect)
            categories += reports
            if progress is not None:
                for report in reports:
                    progress(report)
    per_dataset = {
        name: _macro([c.metrics for c in categories if c.dataset == name and "/" not in c.category])
        for name in dict.fromkeys(c.dataset for c in categories)
    }
    bundle = inspector.model.bundle
    return EvalReport(bundle.manifest.name, bundle.digest, categories, per_dataset, _macro(list(per_dataset.values())))


def format_table(report: EvalReport) -> str:
    """Percentages in the layout of the supplement's Tab. 6 / Tab. 7."""
    header = (f"{'dataset/category':<28}{'n':>5}{'img AUROC':>10}{'img AUPR':>9}{'img ACC':>8}"
              f"{'px AUROC':>9}{'px AUPR':>8}{'px ACC':>7}{'all-tok AUROC':>14}{'all-tok AUPR':>13}")
    lines = [header, "-" * len(header)]

    def row(label: str, n: str, m: dict[str, float]) -> str:
        cells = "".join(f"{100 * m[k]:>{w}.1f}" if not math.isnan(m[k]) else f"{'n/a':>{w}}"
                        for k, w in zip(METRICS, (10, 9, 8, 9, 8, 7, 14, 13)))
        return f"{label:<28}{n:>5}{cells}"

    for name, metrics in report.datasets.items():
        for c in (c for c in report.categories if c.dataset == name):
            lines.append(row(f"{name}/{c.category}", str(c.images), c.metrics))
        lines.append(row(f"{name} (mean)", "", metrics))
    lines.append(row("macro average", "", report.overall))
    return "\n".join(lines)
