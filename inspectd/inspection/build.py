"""Settings + a loaded bundle -> the Inspector: the one place every entry point wires it."""

from __future__ import annotations

from inspectd.bundle.load import LoadedBundle
from inspectd.config import Settings
from inspectd.inspection.inspector import Inspector, InspectorOptions


def build_inspector(settings: Settings, bundle: LoadedBundle) -> Inspector:
    """The bundle's ReAL parameters with the config's overrides, the config's batch, token and image limits."""
    return Inspector(
        bundle,
        settings.real.apply(bundle.manifest.real),
        InspectorOptions(
            batch_size=settings.model.batch_size,
            max_new_tokens=settings.model.max_new_tokens,
            threshold=settings.threshold,
            images=settings.images,
        ),
    )
