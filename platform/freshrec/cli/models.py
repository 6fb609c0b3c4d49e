"""freshrec update, versions, lineage, promote, rollback: model versions and their lineage."""
from __future__ import annotations

import json

import typer

from freshrec.cli._common import echo_table, migrated_engine, user_errors


def _option(name: str, *flags: str, source: str = "train"):
    """A typer option whose default and help come from the arguments dataclass: one source of truth."""
    from dataclasses import fields

    if source == "watch":
        from freshrec.updater.args import WatchArguments as spec_class
    else:
        from freshrec.training.args import TrainingArguments as spec_class

    spec = next(f for f in fields(spec_class) if f.name == name)
    return typer.Option(spec.default, *flags, help=spec.metadata["help"])


def _candidate_counts(text: str):
    from freshrec.ranking.candidates import CandidateConfig

    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"--candidates: {text!r} is not four counts repeat,tower,copurchase,popular (e.g. 100,30,30,20)")
    return CandidateConfig(*(int(p) for p in parts))


def update(
    strategy: str = _option("strategy"),
    base_model: str = typer.Option(None, help="local Hugging Face encoder directory; default: MiniLM"),
    epochs: int = _option("epochs"),
    batch_size: int = _option("batch_size"),
    learning_rate: float = _option("learning_rate"),
    l2_to_parent: float = _option("l2_to_parent"),
    negatives: int = _option("negatives"),
    negative_sampler: str = _option("negative_sampler"),
    replay_fraction: float = _option("replay_fraction"),
    lora_rank: int = _option("lora_rank"),
    device: str = _option("device"),
    seed: int = _option("seed"),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="compare with the parent before promoting"),
    tolerance: float = typer.Option(0.1, help="a candidate may trail its parent (and the best promoted version) by this fraction of its score"),
    min_gate_baskets: int = typer.Option(10, help="held-out baskets each gate slice needs; with fewer, no version is made and the rows wait"),
    candidates: str = typer.Option("100,30,30,20", help="candidates per user from each source: repeat,tower,copurchase,popular"),
    watch: bool = typer.Option(False, "--watch", help="keep running: update whenever enough new rows are in"),
    min_rows: int = _option("min_rows", source="watch"),
    max_age: float = _option("max_age", source="watch"),
    poll: float = _option("poll", source="watch"),
    backoff: float = _option("backoff", source="watch"),
) -> None:
    """Fine-tune on the rows past the watermark and publish a new version (or, with --watch, keep doing so).

    Under `torchrun --nproc-per-node N -m freshrec update ...` the ranks train together (DDP) and rank 0 publishes.
    """
    from freshrec.logs import configure
    from freshrec.training.args import GateArguments, TrainingArguments
    from freshrec.updater import run_update

    with user_errors():
        migrated_engine()
        args = TrainingArguments(strategy=strategy, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                 l2_to_parent=l2_to_parent, negatives=negatives, negative_sampler=negative_sampler,
                                 replay_fraction=replay_fraction, lora_rank=lora_rank, device=device, seed=seed)
        gating = GateArguments(enabled=gate, tolerance=tolerance, min_baskets=min_gate_baskets)
        counts = _candidate_counts(candidates)
        configure()
        if watch:
            from freshrec.updater.args import WatchArguments
            from freshrec.updater.watch import watch as run_watch

            raise typer.Exit(run_watch(args, gating, WatchArguments(min_rows, max_age, poll, backoff), base_model,
                                       candidates=counts))
        outcome = run_update(args, gating, base_model=base_model, candidates=counts)
    typer.echo(outcome.message)


def versions(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version with its parent, status, strategy and watermark."""
    from freshrec.registry.versions import list_versions

    with user_errors(), migrated_engine().connect() as conn:
        rows = list_versions(conn)
    typer.echo(json.dumps(rows, default=str, indent=2)) if as_json else echo_table(rows)


def lineage(
    version: int = typer.Argument(None, help="a version: its parent chain"),
    user: str = typer.Option(None, "--user", help="a customer: every live version that learned from their rows"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """A version's parent chain (watermarks, row counts, feature refs, metrics, artifact and sha256), or with
    --user which live versions learned from a customer's rows (what an erasure would replay)."""
    from freshrec.registry.versions import chain

    if (version is None) == (user is None):
        typer.secho("error: give a VERSION or --user USER_ID", fg="red", err=True)
        raise typer.Exit(2)
    if user is not None:
        from freshrec.erasure import versions_that_saw

        with user_errors(), migrated_engine().connect() as conn:
            rows = versions_that_saw(conn, user)
        typer.echo(json.dumps({"user_id": user, "versions": rows}, default=str, indent=2)) if as_json else echo_table(rows)
        return
    with user_errors(), migrated_engine().connect() as conn:
        rows = chain(conn, version)
    if as_json:
        typer.echo(json.dumps({"version": version, "parent": rows[-1]["parent"], "chain": rows}, default=str, indent=2))
        return
    echo_table([{k: r[k] for k in ("version", "parent", "status", "strategy", "xid_from", "xid_to", "row_count")} for r in rows])
    last = rows[-1]
    ranker = last["metrics"].get("ranker") or {}
    typer.echo(f"\nartifact {last['artifact_uri']}\nsha256   {last['artifact_sha256']}\nfeatures {', '.join(last['feature_refs'])}")
    if ranker:  # the ranker trains on the same cut as the towers: one watermark covers both
        typer.echo(f"ranker   {ranker.get('examples', 0):,} candidates of {ranker.get('train_baskets', 0):,} baskets, "
                   f"{ranker.get('epochs', 0)} epochs; gate: {last['metrics'].get('gate_reason', '-')}")


def promote(version: int, reason: str = typer.Option("manual promotion")) -> None:
    """Make VERSION the serving version."""
    from freshrec.registry.versions import promote as do_promote

    with user_errors():
        do_promote(migrated_engine(), version, reason=reason)
    typer.echo(f"version {version} is current")


def rollback(reason: str = typer.Option("manual rollback")) -> None:
    """Undo the newest promotion still in effect: each call walks one step back through the history."""
    from freshrec.registry.versions import rollback as do_rollback

    with user_errors():
        version = do_rollback(migrated_engine(), reason=reason)
    typer.echo(f"rolled back: version {version} is current")


def history(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every move of the serving pointer: promotions and rollbacks, who, when and why."""
    from freshrec.registry.versions import history as moves

    with user_errors(), migrated_engine().connect() as conn:
        rows = moves(conn)
    typer.echo(json.dumps(rows, default=str, indent=2)) if as_json else echo_table(rows)
