"""Champion against challenger: how a bundle run in the shadow compares with the one in charge.

For every (champion bundle, challenger bundle) pair over a window of inspections (``since``/``until`` on the
champion's ``inspections.created_at``, optionally one camera):

- ``images``: images both inspected (a ``challenger_results`` row for the inspection);
- agreement: of the images on which both verdicts are decided (anomalous or normal), the share with the same
  verdict; the disagreements themselves (newest first, at most ``disagreements``);
- on reviewed images (the newest review of the inspection is the truth; ``defect`` is the positive class):
  each model's miss rate (defects it called normal), false-alarm rate (good parts it called anomalous) and
  image AUROC of its score (``inspectd.metrics.ranking.exact_auroc_ap``), with 95 % percentile-bootstrap
  intervals, and the difference challenger - champion with its own interval.

Undecided rows (verdict ``unknown`` or ``failed``, either model) and rows without a score are counted apart
(``champion_verdicts``/``challenger_verdicts``, ``*_null_scores``, ``undecided``) and left out, never guessed:

- agreement and the disagreement list cover the images on which BOTH verdicts are decided;
- miss and false-alarm rates cover the reviewed images on which BOTH verdicts are decided
  (``reviewed_decided``), AUROC the reviewed images on which BOTH scores are present (``reviewed_scored``), so
  that the two models are always measured on the same images and their difference compares like with like.
  A model that often answers ``unknown`` is thus not rewarded or punished in these rates: read its
  ``*_verdicts`` counts beside them.

The bootstrap is paired and seeded: each of ``resamples`` draws picks reviewed images with replacement (one
draw over all reviewed images of the pair, the same for both models and every metric); a draw in which a
metric is undefined (no defect, or no good part, among its eligible images) is skipped for that metric. The
same seed and rows give the same intervals; each pair starts from the seed, so adding a pair changes no other.

Three queries, whatever the row count: the counts per pair, verdicts and newest review (one GROUP BY, also
what the daemon's metrics read each scrape: ``pair_counts``), the reviewed rows (for the bootstrap) and the
newest disagreements per pair (a window function).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from sqlalchemy import Engine, and_, func, select
from sqlalchemy.orm import aliased

from inspectd.metrics.ranking import exact_auroc_ap
from inspectd.store.schema import BundleRow, ChallengerResultRow, InspectionRow, ReviewLabel, ReviewRow
from inspectd.verdict import Verdict

DECIDED = (Verdict.ANOMALOUS.value, Verdict.NORMAL.value)
RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
METRICS = ("miss_rate", "false_alarm_rate", "auroc")


@dataclass(frozen=True)
class BundleRef:
    id: int | None  # None: inspections recorded without a bundle id
    name: str
    sha256: str | None


@dataclass(frozen=True)
class Estimate:
    """A point estimate and its bootstrap interval; all None where undefined (e.g. no defect reviewed)."""

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PairedMetric:
    name: str
    champion: Estimate
    challenger: Estimate
    difference: Estimate  # challenger - champion, paired over the same resamples
    n: int  # reviewed images it is computed on (both models decided, or both scored for AUROC)
    positives: int  # of them, reviewed defect
    negatives: int  # of them, reviewed good


@dataclass(frozen=True)
class Disagreement:
    inspection_id: int
    created_at: datetime
    camera: str
    champion_verdict: str
    champion_score: float | None
    challenger_verdict: str
    challenger_score: float | None
    review: str | None  # newest review label, None when not reviewed


@dataclass
class PairCounts:
    """What one GROUP BY gives per pair: cheap enough for every metrics scrape."""

    champion_id: int | None
    challenger_id: int
    images: int = 0
    decided: int = 0  # both verdicts anomalous/normal
    agreeing: int = 0
    champion_verdicts: dict[str, int] = field(default_factory=dict)
    challenger_verdicts: dict[str, int] = field(default_factory=dict)
    champion_null_scores: int = 0
    challenger_null_scores: int = 0
    reviewed: int = 0  # images with a review (any verdicts)
    # on reviewed images with both verdicts decided: (defects, defects called normal, goods, goods called anomalous)
    champion_confusion: tuple[int, int, int, int] = (0, 0, 0, 0)
    challenger_confusion: tuple[int, int, int, int] = (0, 0, 0, 0)

    @property
    def undecided(self) -> int:
        """Images on which at least one verdict is unknown or failed."""
        return self.images - self.decided

    @property
    def agreement_rate(self) -> float | None:
        return self.agreeing / self.decided if self.decided else None

    def miss_rate(self, model: str) -> float | None:
        defects, missed, _, _ = getattr(self, f"{model}_confusion")
        return missed / defects if defects else None

    def false_alarm_rate(self, model: str) -> float | None:
        _, _, goods, alarms = getattr(self, f"{model}_confusion")
        return alarms / goods if goods else None


@dataclass(frozen=True)
class PairComparison:
    champion: BundleRef
    challenger: BundleRef
    images: int
    decided: int
    agreeing: int
    agreement_rate: float | None
    undecided: int
    champion_verdicts: dict[str, int]
    challenger_verdicts: dict[str, int]
    champion_null_scores: int
    challenger_null_scores: int
    reviewed: int
    reviewed_decided: int
    reviewed_scored: int
    miss_rate: PairedMetric
    false_alarm_rate: PairedMetric
    auroc: PairedMetric
    disagreements_total: int
    disagreements: list[Disagreement]


@dataclass(frozen=True)
class Comparison:
    since: datetime | None
    until: datetime | None
    camera: str | None
    resamples: int
    seed: int
    confidence: float
    pairs: list[PairComparison]


def _newest_review():
    """The ON clause joining ``reviews`` to each inspection's newest review (highest id, as stats.py counts):
    a correlated max per inspection, an index seek on ``reviews.inspection_id`` per row in the window (a
    GROUP BY over every review, joined, made SQLite scan it once per row: 25 s at 100k rows)."""
    older = aliased(ReviewRow)
    newest = select(func.max(older.id)).where(older.inspection_id == InspectionRow.id).scalar_subquery()
    return and_(ReviewRow.inspection_id == InspectionRow.id, ReviewRow.id == newest)


def _where(since: datetime | None, until: datetime | None, camera: str | None) -> list:
    where = []
    if since is not None:
        where.append(InspectionRow.created_at >= since)
    if until is not None:
        where.append(InspectionRow.created_at < until)
    if camera is not None:
        where.append(InspectionRow.camera == camera)
    return where


def pair_counts(engine: Engine, since: datetime | None = None, until: datetime | None = None,
                camera: str | None = None) -> dict[tuple[int | None, int], PairCounts]:
    """Counts per (champion bundle id, challenger bundle id): one GROUP BY over the window's inspections joined
    to their challenger results and newest review."""
    ins, ch = InspectionRow, ChallengerResultRow
    query = (select(ins.bundle_id, ch.bundle_id, ins.verdict, ch.verdict, ReviewRow.label, func.count(),
                    func.count(ins.score), func.count(ch.score))
             .select_from(ch).join(ins, ins.id == ch.inspection_id)
             .outerjoin(ReviewRow, _newest_review())
             .where(*_where(since, until, camera))
             .group_by(ins.bundle_id, ch.bundle_id, ins.verdict, ch.verdict, ReviewRow.label))
    out: dict[tuple[int | None, int], PairCounts] = {}
    confusion: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    for champion_id, challenger_id, v_champion, v_challenger, label, n, champion_scored, challenger_scored in rows:
        key = (champion_id, challenger_id)
        pair = out.setdefault(key, PairCounts(champion_id, challenger_id))
        pair.images += n
        pair.champion_verdicts[v_champion] = pair.champion_verdicts.get(v_champion, 0) + n
        pair.challenger_verdicts[v_challenger] = pair.challenger_verdicts.get(v_challenger, 0) + n
        pair.champion_null_scores += n - champion_scored
        pair.challenger_null_scores += n - challenger_scored
        if label is not None:
            pair.reviewed += n
        if v_champion not in DECIDED or v_challenger not in DECIDED:
            continue
        pair.decided += n
        pair.agreeing += n if v_champion == v_challenger else 0
        if label is None:
            continue
        for model, verdict in (("champion", v_champion), ("challenger", v_challenger)):
            counts = confusion[(key, model)]
            if label == ReviewLabel.DEFECT:
                counts[0] += n
                counts[1] += n if verdict == Verdict.NORMAL else 0
            else:
                counts[2] += n
                counts[3] += n if verdict == Verdict.ANOMALOUS else 0
    for (key, model), counts in confusion.items():
        setattr(out[key], f"{model}_confusion", tuple(counts))
    return out


def _reviewed_rows(engine: Engine, where: list) -> dict[tuple[int | None, int], list[tuple]]:
    ins, ch = InspectionRow, ChallengerResultRow
    query = (select(ins.bundle_id, ch.bundle_id, ins.id, ReviewRow.label, ins.verdict, ins.score, ch.verdict,
                    ch.score)
             .select_from(ch).join(ins, ins.id == ch.inspection_id)
             .join(ReviewRow, _newest_review())
             .where(*where).order_by(ins.id))
    out: dict[tuple[int | None, int], list[tuple]] = defaultdict(list)
    with engine.connect() as connection:
        for champion_id, challenger_id, *row in connection.execute(query):
            out[(champion_id, challenger_id)].append(tuple(row))
    return out


def _disagreements(engine: Engine, where: list, limit: int) -> dict[tuple[int | None, int], list[Disagreement]]:
    if limit <= 0:
        return {}
    ins, ch = InspectionRow, ChallengerResultRow
    rank = func.row_number().over(partition_by=(ins.bundle_id, ch.bundle_id),
                                  order_by=(ins.created_at.desc(), ins.id.desc())).label("rank")
    ranked = (select(ins.bundle_id.label("champion_id"), ch.bundle_id.label("challenger_id"),
                     ins.id.label("inspection_id"), ins.created_at, ins.camera, ins.verdict.label("champion_verdict"),
                     ins.score.label("champion_score"), ch.verdict.label("challenger_verdict"),
                     ch.score.label("challenger_score"), ReviewRow.label.label("review"), rank)
              .select_from(ch).join(ins, ins.id == ch.inspection_id)
              .outerjoin(ReviewRow, _newest_review())
              .where(*where, ins.verdict.in_(DECIDED), ch.verdict.in_(DECIDED), ins.verdict != ch.verdict)
              .subquery("ranked"))
    query = select(ranked).where(ranked.c.rank <= limit).order_by(ranked.c.rank)
    out: dict[tuple[int | None, int], list[Disagreement]] = defaultdict(list)
    with engine.connect() as connection:
        for row in connection.execute(query).mappings():
            out[(row["champion_id"], row["challenger_id"])].append(Disagreement(
                row["inspection_id"], row["created_at"], row["camera"], row["champion_verdict"],
                row["champion_score"], row["challenger_verdict"], row["challenger_score"], row["review"]))
    return out


def _bundles(engine: Engine, ids: set[int]) -> dict[int, BundleRef]:
    if not ids:
        return {}
    with engine.connect() as connection:
        rows = connection.execute(select(BundleRow.id, BundleRow.name, BundleRow.sha256)
                                  .where(BundleRow.id.in_(sorted(ids)))).all()
    return {i: BundleRef(i, name, sha) for i, name, sha in rows}


def _rate(weights: np.ndarray, eligible: np.ndarray, hit: np.ndarray) -> float:
    total = float(weights @ eligible)
    return float(weights @ (eligible & hit)) / total if total else float("nan")


def _auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    if labels.all() or not labels.any():
        return float("nan")
    return exact_auroc_ap(labels, scores)[0]


def _none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def _estimate(point: float, draws: np.ndarray, confidence: float) -> Estimate:
    if np.isnan(point):
        return Estimate(None, None, None)
    defined = draws[~np.isnan(draws)]
    if defined.size == 0:
        return Estimate(float(point), None, None)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(defined, [tail, 100 - tail])
    return Estimate(float(point), float(low), float(high))


def paired_bootstrap(rows: list[tuple], resamples: int = RESAMPLES, seed: int = SEED,
                     confidence: float = CONFIDENCE) -> dict[str, PairedMetric]:
    """The three metrics of both models on reviewed rows ``(inspection_id, label, champion verdict, champion
    score, challenger verdict, challenger score)``, with paired percentile-bootstrap intervals."""
    n = len(rows)
    defect = np.array([r[1] == ReviewLabel.DEFECT for r in rows], dtype=bool)
    verdicts = {"champion": np.array([r[2] for r in rows], dtype=object),
                "challenger": np.array([r[4] for r in rows], dtype=object)}
    scores = {"champion": np.array([np.nan if r[3] is None else r[3] for r in rows], dtype=np.float64),
              "challenger": np.array([np.nan if r[5] is None else r[5] for r in rows], dtype=np.float64)}
    decided = np.isin(verdicts["champion"], DECIDED) & np.isin(verdicts["challenger"], DECIDED)
    scored = ~np.isnan(scores["champion"]) & ~np.isnan(scores["challenger"])
    called_normal = {m: verdicts[m] == Verdict.NORMAL.value for m in verdicts}
    called_anomalous = {m: verdicts[m] == Verdict.ANOMALOUS.value for m in verdicts}
    good = ~defect

    def metrics(weights: np.ndarray, picked: np.ndarray) -> dict[tuple[str, str], float]:
        out = {}
        keep = picked[scored[picked]]
        for model in ("champion", "challenger"):
            out[("miss_rate", model)] = _rate(weights, decided & defect, called_normal[model])
            out[("false_alarm_rate", model)] = _rate(weights, decided & good, called_anomalous[model])
            out[("auroc", model)] = _auroc(defect[keep], scores[model][keep])
        return out

    everything = np.arange(n)
    point = metrics(np.ones(n, dtype=np.int64), everything)
    draws = {key: np.full(resamples, np.nan) for key in point}
    rng = np.random.default_rng(seed)
    if n:
        for b in range(resamples):
            picked = rng.integers(0, n, n)
            for key, value in metrics(np.bincount(picked, minlength=n), picked).items():
                draws[key][b] = value
    sizes = {"miss_rate": decided, "false_alarm_rate": decided, "auroc": scored}
    out = {}
    for name in METRICS:
        champion, challenger = point[(name, "champion")], point[(name, "challenger")]
        eligible = sizes[name]
        out[name] = PairedMetric(
            name, _estimate(champion, draws[(name, "champion")], confidence),
            _estimate(challenger, draws[(name, "challenger")], confidence),
            _estimate(challenger - champion, draws[(name, "challenger")] - draws[(name, "champion")], confidence),
            int(eligible.sum()), int((eligible & defect).sum()), int((eligible & good).sum()))
    return out


def compare(engine: Engine, since: datetime | None = None, until: datetime | None = None,
            camera: str | None = None, disagreements: int = 20, resamples: int = RESAMPLES, seed: int = SEED,
            confidence: float = CONFIDENCE) -> Comparison:
    """Every champion/challenger pair with results in the window (naive UTC times); no pair: ``pairs == []``."""
    where = _where(since, until, camera)
    counts = pair_counts(engine, since, until, camera)
    if not counts:
        return Comparison(since, until, camera, resamples, seed, confidence, [])
    reviewed = _reviewed_rows(engine, where)
    listed = _disagreements(engine, where, disagreements)
    bundles = _bundles(engine, {i for key in counts for i in key if i is not None})

    def ref(bundle_id: int | None) -> BundleRef:
        if bundle_id is None:
            return BundleRef(None, "(no bundle recorded)", None)
        return bundles.get(bundle_id, BundleRef(bundle_id, f"bundle {bundle_id}", None))

    pairs = []
    for key in sorted(counts, key=lambda k: (k[0] is None, k[0] or 0, k[1])):
        c = counts[key]
        rows = reviewed.get(key, [])
        metrics = paired_bootstrap(rows, resamples, seed, confidence)
        pairs.append(PairComparison(
            ref(key[0]), ref(key[1]), c.images, c.decided, c.agreeing, c.agreement_rate, c.undecided,
            dict(sorted(c.champion_verdicts.items())), dict(sorted(c.challenger_verdicts.items())),
            c.champion_null_scores, c.challenger_null_scores, c.reviewed, metrics["miss_rate"].n,
            metrics["auroc"].n, metrics["miss_rate"], metrics["false_alarm_rate"], metrics["auroc"],
            c.decided - c.agreeing, listed.get(key, [])))
    return Comparison(since, until, camera, resamples, seed, confidence, pairs)


__all__ = ["BundleRef", "Comparison", "Disagreement", "Estimate", "PairComparison", "PairCounts", "PairedMetric",
           "compare", "pair_counts", "paired_bootstrap"]
