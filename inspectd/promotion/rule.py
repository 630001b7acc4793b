"""The rule a promotion passes on the line's reviewed parts (``model.promotion``), and the figures it saw.

The challenger is compared with the champion on the reviewed parts both decided (``store/model_comparison.py``:
the newest review is the truth, a defect the positive class). It is refused when too few reviewed parts were
decided by both, when a rate cannot be compared (no reviewed defect, or no reviewed good part), or when it is
worse than the champion by more than the margin: a higher miss rate or false-alarm rate, or a lower AUROC.
Point estimates are compared; the 95 % intervals are recorded beside them for whoever reads the change later.
"""

from __future__ import annotations

from dataclasses import dataclass

from inspectd.config import PromotionSettings
from inspectd.store.model_comparison import PairComparison, PairedMetric

LABELS = {"miss_rate": "miss rate", "false_alarm_rate": "false-alarm rate", "auroc": "AUROC"}


@dataclass(frozen=True)
class RuleOutcome:
    problems: list[str]  # empty: the challenger may be promoted
    figures: dict  # what the rule saw, recorded with the change (JSON)


def _estimate(estimate) -> dict:
    return {"value": estimate.value, "low": estimate.low, "high": estimate.high}


def _metric(metric: PairedMetric) -> dict:
    return {"champion": _estimate(metric.champion), "challenger": _estimate(metric.challenger),
            "difference": _estimate(metric.difference), "n": metric.n, "positives": metric.positives,
            "negatives": metric.negatives}


def figures_of(pair: PairComparison | None) -> dict:
    if pair is None:
        return {"images": 0, "reviewed_decided": 0}
    return {"champion": {"id": pair.champion.id, "name": pair.champion.name, "sha256": pair.champion.sha256},
            "challenger": {"id": pair.challenger.id, "name": pair.challenger.name, "sha256": pair.challenger.sha256},
            "images": pair.images, "agreement_rate": pair.agreement_rate, "reviewed": pair.reviewed,
            "reviewed_decided": pair.reviewed_decided,
            **{m.name: _metric(m) for m in (pair.miss_rate, pair.false_alarm_rate, pair.auroc)}}


def recorded_figures(comparison: dict | None) -> list[tuple[str, float | None, float | None]]:
    """(metric, champion's value, challenger's value) of a change's recorded figures, for the CLI and the console
    to show; empty when no reviewed part was decided by both."""
    if not comparison or not comparison.get("reviewed_decided"):
        return []
    return [(name, ((comparison.get(name) or {}).get("champion") or {}).get("value"),
             ((comparison.get(name) or {}).get("challenger") or {}).get("value")) for name in LABELS]


def judge(pair: PairComparison | None, rule: PromotionSettings) -> RuleOutcome:
    """Why the challenger of ``pair`` must not replace its champion under ``rule`` (empty list: it may)."""
    figures = {**figures_of(pair), "rule": {"margin": rule.margin, "min_reviewed": rule.min_reviewed}}
    if pair is None:
        return RuleOutcome(["the challenger has not inspected any part beside this champion yet: nothing to compare "
                            "on"], figures)
    problems = []
    if pair.reviewed_decided < rule.min_reviewed:
        problems.append(f"{pair.reviewed_decided} reviewed part(s) decided by both models, fewer than "
                        f"model.promotion.min_reviewed ({rule.min_reviewed}): review more of the line's parts in "
                        "the console")
    for metric, worse_when_higher in ((pair.miss_rate, True), (pair.false_alarm_rate, True), (pair.auroc, False)):
        champion, challenger = metric.champion.value, metric.challenger.value
        label = LABELS[metric.name]
        if champion is None or challenger is None:
            missing = "reviewed defect" if metric.name == "miss_rate" else \
                "reviewed good part" if metric.name == "false_alarm_rate" else "reviewed defect and good part"
            problems.append(f"{label}: cannot be compared (no {missing} that both models "
                            f"{'scored' if metric.name == 'auroc' else 'decided'})")
            continue
        worse_by = challenger - champion if worse_when_higher else champion - challenger
        if worse_by > rule.margin + 1e-12:
            problems.append(f"{label}: challenger {challenger:.3f} vs champion {champion:.3f} on {metric.n} reviewed "
                            f"part(s), worse by {worse_by:.3f} (model.promotion.margin {rule.margin:g})")
    return RuleOutcome(problems, figures)
