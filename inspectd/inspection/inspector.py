"""Images in, inspection results out: model, verdict and ReAL, per batch."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from PIL import Image

from inspectd.bundle.load import LoadedBundle
from inspectd.config import ImageSettings, ModelSettings
from inspectd.errors import ImageError
from inspectd.inspection.images import load_image
from inspectd.inspection.result import InspectionResult
from inspectd.verdict import Verdict
from inspectd.inspection.named_image import NamedImage
from inspectd.inspection.tiles import combine_tiles, tile_boxes, tile_images
from inspectd.inspection.views import combine_views, view_images
from inspectd.model.reply import ParseStatus
from inspectd.model.runtime import InspectionModel, ModelReply
from inspectd.real.localize import localize, shown_mask
from inspectd.real.params import RealParams


@dataclass(frozen=True)
class InspectorOptions:
    """What the config adds to a bundle (``build_inspector`` fills it from the settings); defaults are the config's."""

    batch_size: int = ModelSettings.model_fields["batch_size"].default
    max_new_tokens: int | None = None  # None: the bundle's
    threshold: float | None = None  # None: the bundle's calibrated threshold
    images: ImageSettings = ImageSettings()
    # the config's ReAL parameters that differ from the bundle's, as "name: bundle -> config": figures made with
    # them are not the bundle card's, and whoever reports figures must say so
    real_overrides: tuple[str, ...] = ()


class Inspector:
    def __init__(self, bundle: LoadedBundle, real: RealParams, options: InspectorOptions) -> None:
        self.options = options
        self.real = real
        self.threshold = options.threshold if options.threshold is not None else bundle.manifest.threshold
        self.score = bundle.manifest.score  # how views and tiles make one verdict
        self.model = InspectionModel(bundle, real, options.max_new_tokens)

    def inspect_files(self, paths: list[Path]) -> list[InspectionResult]:
        """Inspect files in order; a bad file becomes a failed result, not an exception."""
        results: dict[int, InspectionResult] = {}
        loaded: list[tuple[int, NamedImage]] = []
        for index, path in enumerate(paths):
            started = time.perf_counter()
            try:
                image = load_image(path, self.options.images.max_pixels, self.options.images.max_file_bytes)
            except ImageError as exc:
                results[index] = self.failed(str(path), exc.reason)
                continue
            loaded.append((index, NamedImage(str(path), image, time.perf_counter() - started)))
        for start in range(0, len(loaded), self.options.batch_size):
            chunk = loaded[start : start + self.options.batch_size]
            for (index, _), result in zip(chunk, self.inspect_images([item for _, item in chunk])):
                results[index] = result
        return [results[i] for i in range(len(paths))]

    def failed(self, source: str, reason: str) -> InspectionResult:
        return InspectionResult(source=source, verdict=Verdict.FAILED, threshold=self.threshold, error=reason)

    def inspect_images(self, images: list[NamedImage]) -> list[InspectionResult]:
        """Verdict and ReAL per image; with mirror views or tiles, each view and tile is a row of the batch, and an
        image's rows are combined into its result."""
        if self.score.views == 1 and self.score.tiles == 1:
            return self._inspect_batch(images)
        rows = [self._rows(item) for item in images]
        flat = [row for image_rows in rows for row in image_rows]
        results = []
        for start in range(0, len(flat), self.options.batch_size):  # batch_size bounds one generate call
            results += self._inspect_batch(flat[start : start + self.options.batch_size])
        combined, start = [], 0
        for item, image_rows in zip(images, rows):
            combined.append(self._combined(item, results[start : start + len(image_rows)]))
            start += len(image_rows)
        return combined

    def _rows(self, item: NamedImage) -> list[NamedImage]:
        """An image's rows of the batch: its views (the image as it came first), then its tiles."""
        images = view_images(item.image, self.score.views)
        if self.score.tiles > 1:
            images += tile_images(item.image, self.score.tiles, self.score.tile_share)
        return [NamedImage(item.source, image, item.load_s / len(images)) for image in images]

    def _combined(self, item: NamedImage, results: list[InspectionResult]) -> InspectionResult:
        """An image's result from its rows' results, in the order of ``_rows``."""
        views = self.score.views
        whole = combine_views(results[:views], self.threshold, self.real) if views > 1 else results[0]
        if self.score.tiles == 1:
            return whole
        boxes = tile_boxes(item.image.size, self.score.tiles, self.score.tile_share)
        return combine_tiles(whole, results[views:], boxes, self.score.tile_score, self.threshold, self.real)

    def _inspect_batch(self, images: list[NamedImage]) -> list[InspectionResult]:
        """One generate call for the batch, then verdict and ReAL per image."""
        if not images:
            return []
        replies, timings = self.model.run([item.image for item in images])
        share = 1.0 / len(images)
        results = []
        for item, reply in zip(images, replies):
            started = time.perf_counter()
            result = self._result(item, reply)
            stage = {
                "load": item.load_s,
                "preprocess": timings.preprocess_s * share,
                "generate": timings.generate_s * share,
                "decode": timings.postprocess_s * share,
                "real": time.perf_counter() - started,
            }
            results.append(replace(result, timings=stage))
        return results

    def _result(self, item: NamedImage, reply: ModelReply) -> InspectionResult:
        size = item.image.size
        common = dict(
            source=item.source,
            threshold=self.threshold,
            reply=reply.text,
            parse_status=reply.parsed.status.value,
            image_size=size,
            generated_tokens=reply.generated_tokens,
        )
        if reply.parsed.status is ParseStatus.UNPARSABLE or reply.score is None:
            return InspectionResult(verdict=Verdict.UNKNOWN, **common)
        verdict = Verdict.ANOMALOUS if reply.score >= self.threshold else Verdict.NORMAL
        if reply.evidence is None:
            return InspectionResult(verdict=verdict, score=reply.score, reasoning=reply.parsed.reasoning, **common)
        located = localize(reply.evidence, self.real, size, reply.score)
        mask = shown_mask(located.mask, self.real, flagged=verdict is Verdict.ANOMALOUS)
        return InspectionResult(
            verdict=verdict,
            score=reply.score,
            reasoning=reply.parsed.reasoning,
            anomaly_map=located.anomaly_map,
            mask=mask,
            real_fallback=located.scores.fallback,
            reasoning_tokens=int(reply.evidence.maps.shape[0]),
            tokens_used=located.tokens_used,
            evidence=reply.evidence,
            kept_tokens=located.scores.kept,
            **common,
        )
