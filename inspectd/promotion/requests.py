"""Asking the daemon for a promotion or a rollback: checked here, recorded as a ``requested`` change, applied
by the daemon through its reload path (``daemon/model_selection.py``).

One function for the CLI and the console, so both refuse for the same reasons and record the same facts.

- **promote**: the challenger becomes the champion and the champion the challenger (it keeps inspecting in the
  shadow, so the comparison goes on and a rollback has its figures). Refused without a challenger, while
  another change waits for the daemon, or when the rule on reviewed parts (``rule.py``) says no, unless forced.
- **rollback**: the pair before the newest applied change comes back. Refused when the daemon runs its config
  file's own pair (nothing to roll back) or when a bundle of that pair was re-published since.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Engine

from inspectd.bundle.files import manifest_digest
from inspectd.config import Settings
from inspectd.errors import InspectdError
from inspectd.promotion.rule import figures_of, judge
from inspectd.promotion.selection import (ModelPair, Selection, config_key, config_pair, digest_problem,
                                          pair_before, select_pair)
from inspectd.store.model_changes import ModelChange, add_change, change, changes_for, newest_requested_id
from inspectd.store.model_comparison import PairComparison, compare
from inspectd.store.schema import ModelChangeStatus

Action = Literal["promote", "rollback"]


class ChangeRefused(InspectdError):
    """A promotion or rollback not recorded, with every reason."""

    def __init__(self, action: str, problems: list[str], forcible: bool) -> None:
        self.problems = problems
        self.forcible = forcible
        hint = "\n(--force promotes anyway and records that it was forced)" if forcible else ""
        super().__init__(f"{action} refused:\n  - " + "\n  - ".join(problems) + hint)


def current_selection(engine: Engine, settings: Settings) -> Selection:
    """The pair the daemon of ``settings`` runs once every requested change is decided: applied changes only."""
    return select_pair(settings, changes_for(engine, config_key(settings.source)), include_requested=False)


def _digests(pair: ModelPair) -> tuple[str, str | None]:
    """The manifest digests of ``pair``'s bundles, read once per request."""
    return manifest_digest(pair.champion), None if pair.challenger is None else manifest_digest(pair.challenger)


def pair_comparison(engine: Engine, pair: ModelPair,
                    digests: tuple[str, str | None] | None = None) -> PairComparison | None:
    """The comparison of ``pair``'s champion and challenger (by manifest digest) over every stored result."""
    if pair.challenger is None:
        return None
    champion, challenger = digests or _digests(pair)
    for candidate in compare(engine, disagreements=0).pairs:
        if (candidate.champion.sha256, candidate.challenger.sha256) == (champion, challenger):
            return candidate
    return None


@dataclass(frozen=True)
class Request:
    action: Action
    actor: str
    force: bool = False
    reason: str | None = None


def request_change(engine: Engine, settings: Settings, request: Request) -> ModelChange:
    """Check and record ``request``; raises ChangeRefused with every reason it must not be recorded."""
    selection = current_selection(engine, settings)
    waiting = newest_requested_id(engine, config_key(settings.source))
    if waiting is not None:
        raise ChangeRefused(request.action, [f"change {waiting} is still waiting for the daemon to apply it "
                                             "(inspectd models changes)"], forcible=False)
    pair = selection.pair
    before = _digests(pair)
    if request.action == "promote":
        if pair.challenger is None:
            raise ChangeRefused("promote", ["no challenger: set model.challenger.bundle in "
                                            f"{settings.source} and let it inspect in the shadow first"], False)
        outcome = judge(pair_comparison(engine, pair, before), settings.model.promotion)
        if outcome.problems and not request.force:
            raise ChangeRefused("promote", outcome.problems, forcible=True)
        after, after_digests = ModelPair(pair.challenger, pair.champion), (before[1], before[0])
        comparison = {**outcome.figures, "problems": outcome.problems}
    else:
        if selection.change is None:
            raise ChangeRefused("rollback", [f"nothing to roll back: the daemon runs the pair "
                                             f"{settings.source} names ({pair.describe()})"], False)
        after = pair_before(selection.change)
        problem = digest_problem(after.champion, selection.change.previous_champion_digest, "champion") or \
            digest_problem(after.challenger, selection.change.previous_challenger_digest, "challenger")
        if problem is not None:
            raise ChangeRefused("rollback", [problem], False)
        after_digests = (selection.change.previous_champion_digest, selection.change.previous_challenger_digest)
        comparison = figures_of(pair_comparison(engine, pair, before))
    own = config_pair(settings)
    return add_change(
        engine, action=request.action, actor=request.actor, config_path=config_key(settings.source),
        config_champion=str(own.champion), config_challenger=None if own.challenger is None else str(own.challenger),
        champion_path=str(after.champion), champion_digest=after_digests[0],
        challenger_path=None if after.challenger is None else str(after.challenger),
        challenger_digest=after_digests[1],
        previous_champion_path=str(pair.champion), previous_champion_digest=before[0],
        previous_challenger_path=None if pair.challenger is None else str(pair.challenger),
        previous_challenger_digest=before[1],
        forced=bool(request.force and request.action == "promote" and comparison.get("problems")),
        reason=request.reason, comparison=comparison)


def wait_for_decision(engine: Engine, change_id: int, timeout_s: float, poll_s: float = 0.5) -> ModelChange:
    """The change once the daemon applied or refused it, or as it is after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = change(engine, change_id)
        if now is None or now.status != ModelChangeStatus.REQUESTED.value or time.monotonic() >= deadline:
            return now
        time.sleep(poll_s)
