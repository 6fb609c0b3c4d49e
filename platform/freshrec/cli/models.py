"""freshrec update, versions, lineage, promote, rollback: model versions and their lineage."""
from __future__ import annotations

import json

import typer

from freshrec.cli._common import echo_table, migrated_engine, user_errors

STRATEGY = typer.Option("head", help="head (frozen encoder), lora (PEFT adapters) or full")


def update(
    strategy: str = STRATEGY,
    base_model: str = typer.Option(None, help="local Hugging Face encoder directory; default: MiniLM"),
    epochs: int = typer.Option(3, help="most passes over the new rows"),
    batch_size: int = typer.Option(64, help="positive rows per step"),
    learning_rate: float = typer.Option(1e-3, help="AdamW learning rate"),
    l2_to_parent: float = typer.Option(1e-3, help="L2 pull toward the parent's weights"),
    negatives: int = typer.Option(4, help="negatives per positive"),
    replay_fraction: float = typer.Option(0.2, help="older rows replayed, as a fraction of new rows"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    seed: int = typer.Option(0),
    gate: bool = typer.Option(True, "--gate/--no-gate", help="compare with the parent before promoting"),
) -> None:
    """Fine-tune on the rows past the watermark and publish a new version."""
    from freshrec.registry.update import run_update
    from freshrec.training.args import GateArguments, TrainingArguments

    with user_errors():
        migrated_engine()
        args = TrainingArguments(strategy=strategy, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                                 l2_to_parent=l2_to_parent, negatives=negatives, replay_fraction=replay_fraction,
                                 device=device, seed=seed)
        outcome = run_update(args, GateArguments(enabled=gate), base_model=base_model, log=typer.echo)
    typer.echo(outcome.message)


def versions(as_json: bool = typer.Option(False, "--json")) -> None:
    """Every version with its parent, status, strategy and watermark."""
    from freshrec.registry import list_versions

    with user_errors(), migrated_engine().connect() as conn:
        rows = list_versions(conn)
    typer.echo(json.dumps(rows, default=str, indent=2)) if as_json else echo_table(rows)


def lineage(version: int, as_json: bool = typer.Option(False, "--json")) -> None:
    """A version's parent chain: watermarks, row counts, feature refs, metrics, artifact and sha256."""
    from freshrec.registry import chain

    with user_errors(), migrated_engine().connect() as conn:
        rows = chain(conn, version)
    if as_json:
        typer.echo(json.dumps({"version": version, "parent": rows[-1]["parent"], "chain": rows}, default=str, indent=2))
        return
    echo_table([{k: r[k] for k in ("version", "parent", "status", "strategy", "xid_from", "xid_to", "row_count")} for r in rows])
    last = rows[-1]
    typer.echo(f"\nartifact {last['artifact_uri']}\nsha256   {last['artifact_sha256']}\nfeatures {', '.join(last['feature_refs'])}")


def promote(version: int, reason: str = typer.Option("manual promotion")) -> None:
    """Make VERSION the serving version."""
    from freshrec.registry import promote as do_promote

    with user_errors():
        do_promote(migrated_engine(), version, reason=reason)
    typer.echo(f"version {version} is current")


def rollback(reason: str = typer.Option("manual rollback")) -> None:
    """Point back at the version that was current before this one."""
    from freshrec.registry import rollback as do_rollback

    with user_errors():
        version = do_rollback(migrated_engine(), reason=reason)
    typer.echo(f"rolled back: version {version} is current")
