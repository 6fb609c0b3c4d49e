"""The updates benchmark's summary: every mean with its bootstrap interval, the targets, the plot.

Targets (issue 9 and 11), computed here and reported, never asserted:
- the incremental pipeline's mean Recall@20 >= 1.2x P-TopFreq's, and above TIFU-KNN's;
- above popularity in every week;
- each explore source's explore Recall@20 >= 2x popularity's, the user's history excluded alike;
- the incremental pipeline at or above the full-retrain pipeline, within the interval;
- training cost of an incremental update <= 1/20 of a full retrain, in the second half of the
  timeline, on weeks with the CPUs to themselves.
"""
from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pandas as pd

from freshrec.bench.meter import CLEAN_OTHER_CPU
from freshrec.bench.metrics import METRICS, as_interval, bootstrap, ratio_interval

EXPLORE_SOURCES = ("tower-explore", "copurchase-explore")


def _cost_ratios(costs: pd.DataFrame, strategy: str) -> dict:
    inc = costs[costs["arm"] == f"pipeline-incremental-{strategy}"].set_index("week")
    full = costs[costs["arm"] == f"pipeline-full-retrain-{strategy}"].set_index("week")
    weeks = [w for w in full.index if w in inc.index]
    steady = weeks[len(weeks) // 2 :] if len(weeks) > 1 else weeks
    ratios = [inc.at[w, "train_s"] / full.at[w, "train_s"] for w in steady if full.at[w, "train_s"]]
    clean = [inc.at[w, "train_s"] / full.at[w, "train_s"] for w in steady if full.at[w, "train_s"]
             and max(inc.at[w, "other_cpu"], full.at[w, "other_cpu"]) <= CLEAN_OTHER_CPU]
    gated = inc["promoted"].iloc[1:].dropna() if "promoted" in inc else pd.Series(dtype=float)  # v1 has no gate
    return {"weeks_compared": len(steady), "median_train_ratio": statistics.median(ratios) if ratios else None,
            "clean_weeks": len(clean), "median_train_ratio_clean": statistics.median(clean) if clean else None,
            "median_incremental_train_s": float(inc["train_s"].iloc[1:].median()) if len(inc) > 1 else None,
            "median_full_train_s": float(full["train_s"].median()) if len(full) else None,
            "gate_passed": f"{int(gated.astype(bool).sum())}/{len(gated)}"}


def seed_spread(arms: dict, main: str, others: list[str]) -> dict:
    """How far the training seed moves the mean Recall@20, beside the user-bootstrap interval's width."""
    means = [arms[a]["recall"]["mean"] for a in [main, *others]]
    interval = arms[main]["recall"]
    return {"arms": [main, *others], "recall_means": means, "range": max(means) - min(means),
            "sd": float(np.std(means, ddof=1)) if len(means) > 1 else 0.0,
            "bootstrap_interval_width": interval["hi"] - interval["lo"]}


def summarise(frame: pd.DataFrame, costs: pd.DataFrame, strategies: list[str], seed_arms: list[str] = ()) -> dict:
    arms = {}
    for arm, rows in frame.groupby("arm"):
        arms[arm] = {m: as_interval(bootstrap(rows, m)) for m in METRICS}
        arms[arm]["users"] = int(rows["user"].nunique())
        if "coverage" in rows and rows["coverage"].notna().any():  # a pipeline ranked in full
            arms[arm]["coverage"] = as_interval(bootstrap(rows, "coverage"))
            arms[arm]["candidates"] = float(rows["candidates"].mean())
    weekly = frame.groupby(["test_week", "arm"])["recall"].mean().unstack()
    targets = {}
    for s in strategies:
        main, full = f"pipeline-incremental-{s}", f"pipeline-full-retrain-{s}"
        targets[s] = {
            "recall_vs_p_topfreq": as_interval(ratio_interval(frame, main, "p-topfreq", "recall")),
            "recall_vs_tifu_knn": as_interval(ratio_interval(frame, main, "tifu-knn", "recall")),
            "recall_vs_full_retrain": as_interval(ratio_interval(frame, main, full, "recall")),
            "weeks_above_popularity": f"{int((weekly[main] > weekly['popularity']).sum())}/{len(weekly)}",
            "cost": _cost_ratios(costs, s) if len(costs) else {},
        }
    explore = {src: as_interval(ratio_interval(frame, src, "popularity-explore", "recall_explore"))
               for src in EXPLORE_SOURCES if src in set(frame["arm"])}
    out = {"arms": arms, "targets": targets, "explore_vs_popularity": explore}
    if seed_arms:
        out["seeds"] = seed_spread(arms, f"pipeline-incremental-{strategies[0]}", list(seed_arms))
    return out


def _fmt(x: dict) -> str:
    if x["mean"] is None or np.isnan(x["mean"]):
        return ""
    return f"{x['mean']:.3f} [{x['lo']:.3f}, {x['hi']:.3f}]"


def summary_table(summary: dict) -> str:
    lines = ["| arm | Recall@20 | NDCG@20 | Recall@20 repeat | Recall@20 explore | NDCG@20 repeat | NDCG@20 explore | users |",
             "|---|---|---|---|---|---|---|---|"]
    order = sorted(summary["arms"], key=lambda a: -summary["arms"][a]["recall"]["mean"])
    for arm in order:
        a = summary["arms"][arm]
        lines.append(f"| {arm} | {_fmt(a['recall'])} | {_fmt(a['ndcg'])} | {_fmt(a['recall_repeat'])} | "
                     f"{_fmt(a['recall_explore'])} | {_fmt(a['ndcg_repeat'])} | {_fmt(a['ndcg_explore'])} | {a['users']} |")
    sized = [a for a in order if "coverage" in summary["arms"][a]]
    if sized:
        lines += ["", "| pipeline | candidates per user (mean) | coverage: share of the week's items among them | Recall@20 |",
                  "|---|---|---|---|"]
        for arm in sorted(sized, key=lambda a: summary["arms"][a]["candidates"]):
            a = summary["arms"][arm]
            lines.append(f"| {arm} | {a['candidates']:.0f} | {_fmt(a['coverage'])} | {_fmt(a['recall'])} |")
    lines += ["", "| target | measured | 95% interval |", "|---|---|---|"]
    for s, t in summary["targets"].items():
        for name in ("recall_vs_p_topfreq", "recall_vs_tifu_knn", "recall_vs_full_retrain"):
            x = t[name]
            lines.append(f"| {s}: {name} (ratio of means) | {x['mean']:.3f} | [{x['lo']:.3f}, {x['hi']:.3f}] |")
        lines.append(f"| {s}: weeks above popularity | {t['weeks_above_popularity']} | |")
        cost = t.get("cost") or {}
        if cost.get("median_train_ratio") is not None:
            clean = cost["median_train_ratio_clean"]
            lines.append(f"| {s}: incremental / full-retrain training seconds, 2nd half (median) | "
                         f"{cost['median_train_ratio']:.3f} | clean weeks: {cost['clean_weeks']}"
                         f"{f', median {clean:.3f}' if clean is not None else ''} |")
        if cost:
            lines.append(f"| {s}: gate passed | {cost['gate_passed']} | |")
    for src, x in summary["explore_vs_popularity"].items():
        lines.append(f"| {src} / popularity-explore, explore Recall@20 | {x['mean']:.3f} | [{x['lo']:.3f}, {x['hi']:.3f}] |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, costs: pd.DataFrame, path: Path, title: str, strategies: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    main = [f"pipeline-incremental-{s}" for s in strategies]
    shown = [a for a in [*main, f"pipeline-full-retrain-{strategies[0]}", "tifu-knn", "p-topfreq", "popularity",
                         "stale", f"tower-incremental-{strategies[0]}"] if a in set(frame["arm"])]
    fig, (weekly_ax, split_ax, cost_ax) = plt.subplots(1, 3, figsize=(19, 5))
    weekly = frame.groupby(["test_week", "arm"])["recall"].mean().unstack()
    for arm in shown:
        series = weekly[arm].dropna()
        weekly_ax.plot(pd.to_datetime(series.index), series.to_numpy(), marker="o", ms=3, label=arm)
    weekly_ax.set(title=f"Recall@20 on the week after ({title})", xlabel="test week", ylabel="Recall@20")
    parts = [("recall", "all"), ("recall_repeat", "repeat"), ("recall_explore", "explore")]
    width = 0.8 / len(shown)
    for n, arm in enumerate(shown):
        rows = frame[frame["arm"] == arm]
        stats = [bootstrap(rows, m, draws=300) for m, _ in parts]
        means = [s[0] for s in stats]
        errors = [[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]]
        split_ax.bar(np.arange(3) + n * width, means, width, yerr=errors, capsize=2, label=arm)
    split_ax.set_xticks(np.arange(3) + 0.4 - width / 2, [label for _, label in parts])
    split_ax.set(title="mean Recall@20, repeat and explore items (95% CI over users)", ylabel="Recall@20")
    for arm, rows in costs.groupby("arm"):
        rows = rows.iloc[1:] if arm.startswith("pipeline-incremental") else rows  # version 1 is not an update
        # Dates, not labels: a full retrain every N weeks must not reorder the incremental weeks.
        cost_ax.plot(pd.to_datetime(rows["week"]), np.maximum(rows["train_s"], 1e-3), marker="o", ms=3, label=arm)
    cost_ax.set(title="training seconds per week (towers + ranker)", xlabel="week", ylabel="seconds (log)", yscale="log")
    for ax in (weekly_ax, split_ax, cost_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in (weekly_ax, cost_ax):
        ax.tick_params(axis="x", labelrotation=70, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
