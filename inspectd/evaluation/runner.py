"""Run a bundle over labelled datasets and score it the way the paper does.

Image level: AUROC, AUPR (average precision) and ACC over P(yes), and at the
inspector's threshold the miss rate (defect images not flagged) and the
false-alarm rate (good images flagged), each with its 95 % interval
(metrics/intervals.py; the pooled pixel AUROC and AUPR too). Pixel level: AUROC, AUPR and ACC
over every pixel of every test image (normal images count with an all-zero
ground truth), streamed through fixed bins; only where masks exist: a
labelled folder (``good/`` + one folder per defect kind, image-level labels
only) gets no pixel figures (NaN, printed n/a), never figures made up from
missing masks. Per category, per dataset (macro over categories) and overall
(macro over datasets, each figure over the datasets that have it), with the
Tab. 7 ablation: the map from all reasoning tokens next to the ReAL-selected
one. Per defect kind (that kind's images against all the category's good
ones): with ``by_defect``, and always for a labelled folder with several
kinds. Two figures an engineer reads off each result: where masks exist, the
share of defect images whose map's hottest point lies on the defect or
within one token cell of it (``peak_on_defect``, metrics/localization.py);
and the share of decided images whose shown reply answers as the verdict
does (``reply_agreement``: its yes/no against ANOMALOUS/NORMAL, so a reply
shown beside a verdict it contradicts counts against it).

Choices: an image whose reply does not parse (verdict unknown) or that fails
scores 0.5 (no information), counts as wrong for ACC (so as a miss for a
defect image and a false alarm for a good one) and has an all-zero map;
their counts are reported, and the printed table shows the unparsed count.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
from PIL import Image

from inspectd.data.layouts import LABELLED, Dataset, LabelledImage
from inspectd.inspection.inspector import Inspector
from inspectd.inspection.result import InspectionResult
from inspectd.verdict import Verdict
from inspectd.inspection.tiles import all_token_result_map, photo_grid
from inspectd.metrics.intervals import PixelCounts, auroc_interval, percent_interval, rate_interval
from inspectd.metrics.localization import peak_on_defect
from inspectd.metrics.ranking import BinnedCurve, accuracy, exact_auroc_ap
from inspectd.model.reply import reply_says

PIXEL_METRICS = ("pixel_auroc", "pixel_aupr", "pixel_acc", "pixel_auroc_all_tokens", "pixel_aupr_all_tokens",
                 "peak_on_defect")
METRICS = ("image_auroc", "image_aupr", "image_acc", *PIXEL_METRICS, "image_miss_rate", "image_false_alarm_rate",
           "reply_agreement")


@dataclass
class CategoryReport:
    dataset: str
    category: str
    images: int
    anomalous: int
    unknown: int = 0
    failed: int = 0
    real_fallbacks: int = 0
    peaks_on_defect: int = 0  # defect images whose map peaks on (or a cell from) the defect ...
    peaks_checked: int = 0  # ... of those with a mask and a map
    replies_disagreeing: int = 0  # decided images whose shown reply answers against the verdict
    views_disagreeing: int = 0  # decided images whose mirror views fell on both sides of the threshold
    seconds: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)
    pixel_tie_error: float = 0.0
    masks: bool = True  # every defect image has a mask: pixel figures exist (reports from before: MVTec, True)
    # 95 % intervals (metrics/intervals.py): image_auroc, image_miss_rate, image_false_alarm_rate and, with
    # masks, pixel_auroc and pixel_aupr: [low, high]
    intervals: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class EvalReport:
    bundle: str
    bundle_sha256: str
    categories: list[CategoryReport]
    datasets: dict[str, dict[str, float]]
    overall: dict[str, float]
    threshold: float | None = None  # the verdicts' threshold (reports from before: not recorded)
    real: dict | None = None  # the ReAL parameters the maps were made with (a config can override the bundle's)

    def to_json(self) -> dict:
        return {
            "bundle": self.bundle,
            "bundle_sha256": self.bundle_sha256,
            "threshold": self.threshold,
            "real": self.real,
            "categories": [asdict(c) for c in self.categories],
            "datasets": self.datasets,
            "overall": self.overall,
        }


def _mask(image: LabelledImage, size: tuple[int, int]) -> np.ndarray:
    if image.mask_path is None:
        return np.zeros((size[1], size[0]), dtype=bool)
    with Image.open(image.mask_path) as mask:
        return np.asarray(mask.convert("L")) > 127


class _PixelCurves:
    """The ReAL map's and the all-token map's pixel curves, one image at a time (only rows that have masks)."""

    def __init__(self, inspector: Inspector, bins: int) -> None:
        self.real = inspector.real
        self.real_curve = BinnedCurve(bins, self.real.mask_threshold)
        self.all_curve = BinnedCurve(bins, self.real.mask_threshold)
        self.peaks: list[bool] = []  # per defect image with a mask: does the map peak on the defect
        self.counts = PixelCounts()  # the ReAL map's, per image: its figures' intervals

    def add(self, image: LabelledImage, result: InspectionResult) -> None:
        truth = _mask(image, result.image_size)
        if result.anomaly_map is None:
            blank = np.zeros(truth.shape, dtype=np.float32)
            self.real_curve.add(blank, truth)
            self.all_curve.add(blank, truth)
            self.counts.add(blank, truth, image.anomalous)
            if truth.any():
                self.peaks.append(False)  # no map points nowhere
            return
        self.real_curve.add(result.anomaly_map, truth)
        self.counts.add(result.anomaly_map, truth, image.anomalous)
        self.all_curve.add(all_token_result_map(result, self.real), truth)
        if truth.any():
            self.peaks.append(peak_on_defect(result.anomaly_map, truth, map_grid(result)))

    def figures(self) -> dict[str, float]:
        pixel_auroc, pixel_aupr = self.real_curve.auroc_ap()
        all_auroc, all_aupr = self.all_curve.auroc_ap()
        return {"pixel_auroc": pixel_auroc, "pixel_aupr": pixel_aupr, "pixel_acc": self.real_curve.accuracy(),
                "pixel_auroc_all_tokens": all_auroc, "pixel_aupr_all_tokens": all_aupr,
                "peak_on_defect": _rate(np.array(self.peaks, dtype=bool))}

    def tie_error(self) -> float:
        return max(self.real_curve.max_tie_error(), self.all_curve.max_tie_error())


def map_grid(result: InspectionResult) -> tuple[int, int]:
    """The token grid over the photo that the result's map resolves, whose cell "within one cell" means: the
    token maps' grid, or with tiles the tiles' grid carried over the photo (a tiled map is that much finer,
    whichever run's explanation is shown)."""
    for tile in result.tiles:
        if tile.evidence is not None:
            return photo_grid(tile.evidence.maps.shape[-2:], tile.image_size, result.image_size)
    for run in (result, *result.views):
        if run.evidence is not None:
            rows, columns = run.evidence.maps.shape[-2:]
            return int(rows), int(columns)
    raise ValueError(f"{result.source}: a map without token evidence to tell its grid")


def _rate(hits: np.ndarray) -> float:
    return float(hits.mean()) if hits.size else float("nan")


def _image_intervals(labels: list[bool], scores: list[float], flagged: list[bool]) -> dict[str, list[float]]:
    """How far the image AUROC and the two rates may move on more images of the same kind (95 %)."""
    truth, called = np.array(labels, dtype=bool), np.array(flagged, dtype=bool)
    return {
        "image_auroc": list(auroc_interval(truth, np.array(scores))),
        "image_miss_rate": list(rate_interval(int((~called[truth]).sum()), int(truth.sum()))),
        "image_false_alarm_rate": list(rate_interval(int(called[~truth].sum()), int((~truth).sum()))),
    }


def _image_figures(labels: list[bool], scores: list[float], flagged: list[bool]) -> dict[str, float]:
    """Ranking over P(yes), and at the threshold: ACC, misses among defect images, alarms among good ones."""
    truth, called = np.array(labels, dtype=bool), np.array(flagged, dtype=bool)
    auroc, aupr = exact_auroc_ap(truth, np.array(scores))
    return {
        "image_auroc": auroc,
        "image_aupr": aupr,
        "image_acc": accuracy(truth, called),
        "image_miss_rate": _rate(~called[truth]),
        "image_false_alarm_rate": _rate(called[~truth]),
    }


def _reply_agrees(result: InspectionResult) -> bool:
    """The shown reply's own yes/no says what the verdict says (a reply without one does not)."""
    return reply_says(result.reply, result.verdict is Verdict.ANOMALOUS)


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
    masks = all(image.mask_path is not None for image, _ in pairs if image.anomalous)
    report = CategoryReport(dataset, category, len(pairs), sum(i.anomalous for i, _ in pairs), seconds=seconds,
                            masks=masks)
    pixels = _PixelCurves(inspector, bins) if masks else None
    labels, scores, flagged, agree = [], [], [], []
    for image, result in pairs:
        labels.append(image.anomalous)
        if result.verdict is Verdict.FAILED or result.score is None:
            report.failed += result.verdict is Verdict.FAILED
            report.unknown += result.verdict is Verdict.UNKNOWN
            scores.append(0.5)
            flagged.append(not image.anomalous)  # counted wrong: a miss or a false alarm
        else:
            scores.append(result.score)
            flagged.append(result.verdict is Verdict.ANOMALOUS)
            agree.append(_reply_agrees(result))
            report.views_disagreeing += bool(result.views_disagree)
        if result.verdict is Verdict.FAILED:
            continue
        report.real_fallbacks += result.anomaly_map is not None and bool(result.real_fallback)
        if pixels is not None:
            pixels.add(image, result)
    no_pixels = dict.fromkeys(PIXEL_METRICS, float("nan"))
    report.metrics = {**_image_figures(labels, scores, flagged), **(pixels.figures() if pixels else no_pixels),
                      "reply_agreement": _rate(np.array(agree, dtype=bool))}
    report.intervals = {**_image_intervals(labels, scores, flagged), **(pixels.counts.intervals() if pixels else {})}
    report.replies_disagreeing = agree.count(False)
    if pixels is not None:
        report.peaks_on_defect, report.peaks_checked = sum(pixels.peaks), len(pixels.peaks)
    report.pixel_tie_error = pixels.tie_error() if pixels else 0.0
    return report


def _per_kind_rows(dataset: Dataset, by_defect: bool) -> bool:
    """Asked for, or a labelled folder with several defect kinds (its per-kind table is what a plant reads)."""
    kinds = {image.defect for image in dataset.images if image.anomalous}
    return by_defect or (dataset.layout == LABELLED and len(kinds) > 1)


def evaluate(inspector: Inspector, datasets: list[Dataset], bins: int = 65536, limit: int | None = None,
             progress=None, by_defect: bool = False) -> EvalReport:
    """Per category (and per defect kind with ``by_defect`` or for a labelled folder with several kinds; those
    rows stay out of the averages)."""
    categories = []
    for dataset in datasets:
        for category in dataset.categories():
            images = [i for i in dataset.images if i.category == category]
            if limit is not None:
                normal = [i for i in images if not i.anomalous][: limit // 2]
                anomalous = [i for i in images if i.anomalous][: limit - len(normal)]
                images = normal + anomalous
            reports = evaluate_category(inspector, dataset.name, category, images, bins,
                                        _per_kind_rows(dataset, by_defect))
            categories += reports
            if progress is not None:
                for report in reports:
                    progress(report)
    per_dataset = {
        name: _macro([c.metrics for c in categories if c.dataset == name and "/" not in c.category])
        for name in dict.fromkeys(c.dataset for c in categories)
    }
    bundle = inspector.model.bundle
    return EvalReport(bundle.manifest.name, bundle.digest, categories, per_dataset, _macro(list(per_dataset.values())),
                      inspector.threshold, inspector.real.model_dump(mode="json"))


# (metric, header, width): image figures, then pixel figures (n/a without masks), all in percent.
_COLUMNS = (
    ("image_auroc", "img AUROC", 10), ("image_aupr", "img AUPR", 9), ("image_acc", "img ACC", 8),
    ("image_miss_rate", "miss", 6), ("image_false_alarm_rate", "false alarm", 12),
    ("pixel_auroc", "px AUROC", 9), ("pixel_aupr", "px AUPR", 8), ("pixel_acc", "px ACC", 7),
    ("pixel_auroc_all_tokens", "all-tok AUROC", 14), ("pixel_aupr_all_tokens", "all-tok AUPR", 13),
    ("peak_on_defect", "peak on defect", 15), ("reply_agreement", "reply agrees", 13),
)


def _cell(value: float | None, width: int) -> str:
    """A percentage; n/a for a figure that does not exist (NaN), or that a report from before did not have."""
    if value is None or math.isnan(value):
        return f"{'n/a':>{width}}"
    return f"{100 * value:>{width}.1f}"


def format_table(report: EvalReport) -> str:
    """Percentages in the layout of the supplement's Tab. 6 / Tab. 7, with each row's count of unparsed replies."""
    labels = [f"{c.dataset}/{c.category}" for c in report.categories] + [f"{n} (mean)" for n in report.datasets]
    label_width = max([28, *(len(label) + 2 for label in labels)])
    header = f"{'dataset/category':<{label_width}}{'n':>5}{'unparsed':>9}" + "".join(
        f"{title:>{width}}" for _, title, width in _COLUMNS)
    lines = [header, "-" * len(header)]

    def row(label: str, n: str, unparsed: int, m: dict[str, float]) -> str:
        cells = "".join(_cell(m.get(key), width) for key, _, width in _COLUMNS)
        return f"{label:<{label_width}}{n:>5}{unparsed:>9}{cells}"

    def main_rows(name: str | None = None) -> list[CategoryReport]:
        return [c for c in report.categories if "/" not in c.category and name in (None, c.dataset)]

    for name, metrics in report.datasets.items():
        for c in (c for c in report.categories if c.dataset == name):
            lines.append(row(f"{name}/{c.category}", str(c.images), c.unknown, c.metrics))
        lines.append(row(f"{name} (mean)", "", sum(c.unknown for c in main_rows(name)), metrics))
    lines.append(row("macro average", "", sum(c.unknown for c in main_rows()), report.overall))
    return "\n".join(lines + _notes(report, main_rows()) + _interval_lines(report))


def _interval_lines(report: EvalReport) -> list[str]:
    """Each row's 95 % intervals under the table: what its image figures may become on more images."""
    rows = [c for c in report.categories if c.intervals]
    if not rows:
        return []  # a report from before intervals were kept
    width = max(len(f"{c.dataset}/{c.category}") for c in rows) + 2
    lines = ["95 % intervals (AUROC and AUPR: bootstrap over the images; miss and false alarm: Wilson):"]
    for c in rows:
        cells = ", ".join(f"{title} {percent_interval(c.intervals[key])}" for key, title in (
            ("image_auroc", "img AUROC"), ("image_miss_rate", "miss"), ("image_false_alarm_rate", "false alarm"),
            ("pixel_auroc", "px AUROC"), ("pixel_aupr", "px AUPR")) if key in c.intervals)
        lines.append(f"  {c.dataset + '/' + c.category:<{width}}{cells}")
    return lines


def _notes(report: EvalReport, rows: list[CategoryReport]) -> list[str]:
    """What the reader needs to trust the table: unparsed or unreadable images, and why pixel figures are n/a."""
    notes = []
    unknown, failed = sum(c.unknown for c in rows), sum(c.failed for c in rows)
    if unknown or failed:
        notes.append(f"{unknown} unparsed replies (verdict unknown) and {failed} unreadable images score 0.5 and "
                     "count wrong (a miss or a false alarm)")
    split = sum(c.views_disagreeing for c in rows)
    if split:
        notes.append(f"the mirror views fell on both sides of the threshold in {split} of {sum(c.images for c in rows)} "
                     "images: those verdicts depend on how the part lay")
    without = sorted({c.dataset for c in report.categories if not c.masks})
    if without:
        notes.append(f"no masks in {', '.join(without)} (image-level labels): pixel figures n/a")
    return notes
