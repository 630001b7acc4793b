"""Settings + a loaded bundle -> the Inspector: the one place every entry point wires it."""

from __future__ import annotations

import logging

from inspectd.bundle.load import LoadedBundle
from inspectd.config import Settings
from inspectd.inspection.inspector import Inspector, InspectorOptions


log = logging.getLogger("inspectd")


def _shown(value) -> str:
    if isinstance(value, (list, tuple)):
        return f"({len(value)} words)" if len(value) > 3 else repr(list(value))
    return repr(value)


def overridden_real(settings: Settings, bundle: LoadedBundle) -> list[str]:
    """The ReAL parameters the config sets to other values than the bundle's, as ``name: bundle -> config``:
    the bundle's card was measured without them, so a reader of figures must know."""
    built, applied = bundle.manifest.real.model_dump(), settings.real.apply(bundle.manifest.real).model_dump()
    return [f"{name}: {_shown(built[name])} -> {_shown(value)}" for name, value in applied.items()
            if value != built[name]]


def build_inspector(settings: Settings, bundle: LoadedBundle) -> Inspector:
    """The bundle's ReAL parameters with the config's overrides, the config's batch, token and image limits."""
    changed = overridden_real(settings, bundle)
    if changed:
        log.info("ReAL parameters from the config instead of bundle %s's: %s", bundle.manifest.name,
                 "; ".join(changed))
    return Inspector(
        bundle,
        settings.real.apply(bundle.manifest.real),
        InspectorOptions(
            batch_size=settings.model.batch_size,
            max_new_tokens=settings.model.max_new_tokens,
            threshold=settings.threshold,
            images=settings.images,
            real_overrides=tuple(changed),
        ),
    )
