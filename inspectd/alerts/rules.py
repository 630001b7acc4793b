"""Which inspections raise which alerts."""

from __future__ import annotations

from dataclasses import dataclass

from inspectd.config import AlertRule


@dataclass(frozen=True)
class AlertDraft:
    rule: str
    channel: str
    cooldown_s: float


def matching_alerts(rules: tuple[AlertRule, ...], camera: str, verdict: str, score: float | None) -> list[AlertDraft]:
    drafts = []
    for rule in rules:
        if rule.cameras and camera not in rule.cameras:
            continue
        if verdict not in rule.verdicts:
            continue
        if rule.min_score is not None and (score is None or score < rule.min_score):
            continue
        drafts.extend(AlertDraft(rule.name, channel, rule.cooldown_s) for channel in rule.channels)
    return drafts
