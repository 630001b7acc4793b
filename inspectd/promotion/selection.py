"""The champion/challenger pair a daemon runs: its config file's, or the newest change applied against it.

Services cannot write ``/etc``, so a promotion is not a config edit: it is a row in ``model_changes`` recorded
against the config file and the pair that file names. The daemon runs the pair of the newest applied change whose
config file and config pair are today's; a config whose ``model.bundle`` or ``model.challenger.bundle`` was
edited since names a pair no change was recorded against, and the file wins. A change's bundles must still have
the manifest digests recorded with it: a bundle re-published in place since is not run under an old promotion.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from inspectd.bundle.files import manifest_digest
from inspectd.config import Settings
from inspectd.errors import BundleError
from inspectd.store.model_changes import ModelChange
from inspectd.store.schema import ModelChangeStatus


@dataclass(frozen=True)
class ModelPair:
    champion: Path
    challenger: Path | None

    def describe(self) -> str:
        return f"champion {self.champion}, challenger {self.challenger or '(none)'}"


def config_key(source: Path) -> str:
    """The config file (``settings.source``) as changes are recorded against it (resolved: a daemon, the CLI and
    the console name it alike)."""
    return str(Path(source).resolve())


def config_pair(settings: Settings) -> ModelPair:
    challenger = settings.model.challenger
    return ModelPair(Path(settings.model.bundle).resolve(),
                     None if challenger is None else Path(challenger.bundle).resolve())


def _text(path: Path | None) -> str | None:
    return None if path is None else str(path)


def recorded_against(change: ModelChange, pair: ModelPair) -> bool:
    """Whether ``change`` was asked while the config file named ``pair``."""
    return (change.config_champion, change.config_challenger) == (_text(pair.champion), _text(pair.challenger))


def pair_after(change: ModelChange) -> ModelPair:
    return ModelPair(Path(change.champion_path),
                     None if change.challenger_path is None else Path(change.challenger_path))


def pair_before(change: ModelChange) -> ModelPair:
    return ModelPair(Path(change.previous_champion_path),
                     None if change.previous_challenger_path is None else Path(change.previous_challenger_path))


def digest_problem(path: Path | None, recorded: str | None, role: str,
                   digest: Callable[[Path], str] = manifest_digest) -> str | None:
    """Why the bundle at ``path`` is not the one recorded, or None."""
    if path is None:
        return None
    try:
        now = digest(path)
    except (BundleError, OSError) as exc:
        return f"{role} {path}: {exc}"
    if now != recorded:
        return f"{role} {path} was re-published since (manifest digest {now[:12]}, recorded {str(recorded)[:12]})"
    return None


@dataclass(frozen=True)
class Selection:
    """The pair to run, the change that chose it (None: the config file's own), a requested change it is (to be
    marked once applied), and the requested changes that cannot be applied, with why."""

    pair: ModelPair
    change: ModelChange | None = None
    pending: ModelChange | None = None
    refused: list[tuple[ModelChange, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # applied changes no longer run, with why (for the log)


def select_pair(settings: Settings, changes: list[ModelChange], include_requested: bool,
                digest: Callable[[Path], str] = manifest_digest) -> Selection:
    """From the changes recorded against this config file (newest first): the pair to run.

    With ``include_requested`` (the daemon reading its config for a reload) the newest requested change is taken
    when it can be run, older requested ones are refused as superseded; without it (start-up, the CLI's and the
    console's view) only applied changes count.
    """
    own = config_pair(settings)
    refused: list[tuple[ModelChange, str]] = []
    problems: list[str] = []
    chosen: Selection | None = None
    for change in changes:
        requested = change.status == ModelChangeStatus.REQUESTED.value
        if change.status == ModelChangeStatus.FAILED.value or (requested and not include_requested):
            continue
        if chosen is not None:
            if requested:
                refused.append((change, f"superseded by change {chosen.change.id}" if chosen.change is not None
                                else "superseded"))
            continue
        if not recorded_against(change, own):
            if requested:
                refused.append((change, f"the configuration file names another pair now ({own.describe()}); "
                                        "the file wins"))
            continue
        pair = pair_after(change)
        problem = digest_problem(pair.champion, change.champion_digest, "champion", digest) or \
            digest_problem(pair.challenger, change.challenger_digest, "challenger", digest)
        if problem is not None:
            if requested:
                refused.append((change, problem))
                continue
            problems.append(f"change {change.id} ({change.action}) is no longer run: {problem}; running the "
                            f"configuration file's pair ({own.describe()})")
            chosen = Selection(own)
            continue
        chosen = Selection(pair, change, change if requested else None)
    chosen = chosen or Selection(own)
    return Selection(chosen.pair, chosen.change, chosen.pending, refused, problems)


def with_pair(settings: Settings, pair: ModelPair) -> Settings:
    """``settings`` running ``pair``: the challenger keeps the config's mode, fraction and device."""
    challenger = settings.model.challenger
    if pair.challenger is None:
        challenger = None
    elif challenger is not None:
        challenger = challenger.model_copy(update={"bundle": pair.challenger})
    model = settings.model.model_copy(update={"bundle": pair.champion, "challenger": challenger})
    return settings.model_copy(update={"model": model})
