"""freshrec forget, erasures: erase customers, follow the replay, read the proof."""
from __future__ import annotations

import json

import typer

from freshrec.cli._common import echo_table, migrated_engine, user_errors


def forget(
    user_ids: list[str] = typer.Argument(..., help="the customers to erase"),
    now: bool = typer.Option(False, "--now", help="move the pointer at once to the newest version that never saw them"),
    replay: bool = typer.Option(True, "--replay/--defer", help="replay at once (with every pending request), or leave "
                                                               "it to the watcher once the batching deadline passes"),
) -> None:
    """Erase customers: their rows, profiles and aggregates in one transaction (tombstoned against reloads),
    their profiles out of Feast's online store; then every version that learned from them is trained again
    without them, and the pointer moves to the result."""
    from freshrec.config import get_settings
    from freshrec.erasure import forget as do_forget
    from freshrec.features import open_store
    from freshrec.logs import configure

    with user_errors():
        settings = get_settings()
        engine = migrated_engine()
        store = open_store(settings)
        request = do_forget(engine, settings, user_ids, now=now, store=store)
        typer.echo(request.message)
        if replay:
            configure()
            from freshrec.erasure import run_due

            typer.echo(run_due(settings, force=True, store=store).message)


def erasures(
    erasure_id: int = typer.Argument(None, help="one erasure; default: all"),
    run: bool = typer.Option(False, "--run", help="replay the due erasures now (what the watcher does)"),
    force: bool = typer.Option(False, "--all", help="with --run: every pending erasure, deadline or not"),
    proof: bool = typer.Option(False, "--proof", help="print the proof query's rows: live versions still holding "
                                                     "an erased row (none, once every erasure is done)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Erasure requests: state (pending, replaying, done, failed), rows, the version serving, the replay."""
    from freshrec.erasure import erasure_rows, proof_rows, run_due

    with user_errors():
        engine = migrated_engine()
        if run:
            from freshrec.logs import configure

            configure()
            outcome = run_due(force=force)
            typer.echo(outcome.message)
            if outcome.status == "locked":  # nothing ran: a script must not read this as done
                raise typer.Exit(1)
        with engine.connect() as conn:
            rows = proof_rows(conn, [erasure_id] if erasure_id else None) if proof else erasure_rows(conn, erasure_id)
    if erasure_id and not rows and not proof:
        typer.secho(f"error: erasure_id: no erasure {erasure_id}", fg="red", err=True)
        raise typer.Exit(2)
    if as_json:
        typer.echo(json.dumps(rows, default=str, indent=2))
    elif proof:
        echo_table(rows, "live versions still holding erased rows")
        typer.echo("proof holds: no live version holds an erased row" if not rows else
                   f"{len(rows)} (version, erased transaction) pairs remain: the replay has not run yet")
    else:
        echo_table([{k: r[k] for k in ("id", "state", "users", "rows", "requested_at", "deadline", "finished_at",
                                       "serving_version")} for r in rows])
        for r in rows:
            if r["message"]:
                typer.echo(f"{r['id']}: {r['message']}")
