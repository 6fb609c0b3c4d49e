"""Search over the whole timeline: every version ``bench updates`` makes, scored week by week.

- **Forgetting**: the fixed known-item set (1,000 items, never trained on), each week through the
  version's search pipeline, day one's, full text alone, the pre-trained encoder alone and the
  user tower (how search ranked before it had a side of its own).
- **Learning from searches**: the next week's query events (not loaded yet), the version's
  pipeline against the pre-trained encoder alone and against day one's pipeline, per query, so the
  difference can be paired.
"""
from __future__ import annotations

import pandas as pd
import torch

from freshrec.search import evaluate
from freshrec.search.index import ItemVectors, catch_up
from freshrec.updater.search_stage import QUERY_TOKENS, base_side, popularity_at

KNOWN_ARMS = ("pipeline", "day one", "full-text", "pre-trained encoder", "user tower (record)")
EVENT_ARMS = ("pipeline", "day one", "pre-trained encoder")


class SearchWeeks:
    def __init__(self, engine, base_model: str):
        self.engine = engine
        self.side = base_side(engine, base_model, torch.device("cpu"))

    def _refresh(self) -> None:
        """New items of the week: their vectors, and the index (the known-item set stays as it was)."""
        side = self.side
        if catch_up(self.engine, side.encoder, side.digest, QUERY_TOKENS):
            side.items = ItemVectors.load(self.engine, side.digest)

    def score(self, snap, week: str, next_rows: pd.DataFrame) -> tuple[list[dict], list[dict]]:
        """(known-item means per arm and query kind, per-query rows of next week's query events)."""
        self._refresh()
        side, engine = self.side, self.engine
        adapter = snap.loaded.search[0] if snap.loaded and snap.loaded.search else None
        pop = popularity_at(engine, side, pd.Timestamp(week, tz="UTC").to_pydatetime())
        popularity = lambda ids: {i: pop.get(i, 0.0) for i in ids}  # noqa: E731
        known = side.known.queries
        events = next_rows[next_rows["query"].notna() & next_rows["item_id"].isin(side.items.row_of)]
        lex_known = evaluate.lexical_results(engine, side.pipeline(None), known["query"].tolist())
        lex_events = evaluate.lexical_results(engine, side.pipeline(None), events["query"].tolist())
        summaries = []
        for arm, lists in self._arms(snap, adapter, known["query"].tolist(), lex_known, popularity).items():
            rows = pd.DataFrame([evaluate.query_metrics(r, set(rel)) for r, rel in zip(lists, known["relevant"])])
            for variant, part in rows.groupby(known["variant"].to_numpy()):
                summaries.append({"week": week, "arm": arm, "variant": variant, "queries": len(part),
                                  **part[["hit", "rr", "ndcg"]].mean().to_dict()})
        per_query = []
        arms = self._arms(snap, adapter, events["query"].tolist(), lex_events, popularity, EVENT_ARMS)
        for arm, lists in arms.items():
            for n, (ranked, item, user) in enumerate(zip(lists, events["item_id"], events["user_id"])):
                per_query.append({"week": week, "arm": arm, "query_id": f"{week}:{n}", "user": user,
                                  **evaluate.query_metrics(ranked, {item})})
        return summaries, per_query

    def _arms(self, snap, adapter, queries: list[str], lexical: list[list[str]], popularity,
              arms=KNOWN_ARMS) -> dict[str, list[list[str]]]:
        side = self.side
        if not queries:
            return {arm: [] for arm in arms}
        base = side.pipeline(None)
        vecs = base.query_vectors(queries)
        out = {}
        for arm in arms:
            if arm == "pipeline":
                out[arm] = [[h.item_id for h in hits] for hits in side.pipeline(adapter).rank(queries, lexical, popularity)]
            elif arm == "day one":
                out[arm] = [[h.item_id for h in hits] for hits in base.rank(queries, lexical, popularity, vecs=vecs)]
            elif arm == "full-text":
                out[arm] = [lst[:10] for lst in lexical]
            elif arm == "pre-trained encoder":
                out[arm] = [lst[:10] for lst in base.dense(vecs)]
            else:
                out[arm] = [[h.item_id for h in snap.top_k(v, 10)] for v in snap.embed(queries)]
        return out


def search_targets(known: pd.DataFrame, events: pd.DataFrame) -> dict:
    """The issue's targets, measured: known-item hit@10 per kind against the better single leg, week by
    week; and the paired difference in reciprocal rank on next week's query events."""
    from freshrec.bench.metrics import as_interval, bootstrap

    out: dict = {"known_items": {}, "query_events": {}}
    if len(known):
        wide = known.pivot_table(index=["week", "variant"], columns="arm", values="hit")
        for variant, part in wide.groupby(level="variant"):
            measure = part if variant != "head" else known[known["variant"] == "head"].pivot_table(
                index=["week", "variant"], columns="arm", values="ndcg")
            better = measure[["full-text", "pre-trained encoder"]].max(axis=1)
            out["known_items"][variant] = {
                "measure": "hit@10" if variant != "head" else "NDCG@10",
                "pipeline_mean": float(measure["pipeline"].mean()),
                "pipeline_min": float(measure["pipeline"].min()),
                "weeks_below_better_single_leg": int((measure["pipeline"] < better - 1e-12).sum()),
                "weeks": int(len(measure))}
    if len(events):
        wide = events.pivot_table(index=["week", "query_id", "user"], columns="arm", values="rr").reset_index()
        for reference in ("pre-trained encoder", "day one"):
            diff = wide.assign(diff=wide["pipeline"] - wide[reference])
            # Resampled by customer: one customer's searches are not independent draws.
            weekly = {w: as_interval(bootstrap(part, "diff")) for w, part in diff.groupby("week")}
            out["query_events"][f"pipeline minus {reference}"] = {
                "pooled": as_interval(bootstrap(diff, "diff")),
                "weeks_wholly_below_zero": int(sum(v["hi"] < 0 for v in weekly.values())),
                "weeks": len(weekly), "weekly": weekly}
    return out


def forgetting_plot(summaries: list[dict], path) -> None:
    """Known-item hit@10 (three-word queries) of every arm, version by version."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weeks = pd.DataFrame(summaries)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
    for ax, variant in zip(axes, ("three", "two", "typo")):
        part = weeks[weeks["variant"] == variant]
        for arm, style in zip(KNOWN_ARMS, ("-o", "--", ":", "-.", "-x")):
            line = part[part["arm"] == arm]
            ax.plot(pd.to_datetime(line["week"]), line["hit"], style, label=arm, markersize=3)
        ax.set(title=f"known items, {variant}-word queries" if variant != "typo" else "known items, one typo",
               ylabel="hit@10", ylim=(0, 1.02))
        ax.tick_params(axis="x", labelrotation=45)
    axes[0].legend(loc="lower left", fontsize=8)
    fig.suptitle("search of every version of the timeline (the fixed known-item set never trains)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
