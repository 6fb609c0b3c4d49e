"""The freshrec command line: a thin layer, each verb calls one function of one package.

    freshrec demo                                   # the README's main job
    freshrec db start|stop|status|url|upgrade|downgrade
    freshrec env                                    # eval "$(freshrec env)" for feast and psql
    freshrec load online-retail [PATH] [--since D] [--until D]
    freshrec load items FILE | load interactions FILE
    freshrec features apply | features materialize
    freshrec update [--strategy head|lora|full] [--base-model PATH] [--no-gate]
    freshrec versions [--json] | lineage VERSION|--user ID [--json] | promote VERSION | rollback | history
    freshrec forget USER_ID... [--now] [--defer] | erasures [ID] [--run] [--proof]
    freshrec update --watch [--min-rows N] [--max-age S]   # keep updating as rows arrive
    freshrec status | history | cache status|prune
    freshrec serve [--host H] [--port P]             # the REST API
    freshrec bench train|serve|updates
"""
from __future__ import annotations

import typer

from freshrec.cli import bench, db, erasure, features, load, models, status
from freshrec.cli.demo import demo
from freshrec.cli.serve import serve

app = typer.Typer(help="freshrec: recommendations that stay fresh.", no_args_is_help=True, add_completion=False)
app.add_typer(db.app, name="db")
app.add_typer(load.app, name="load")
app.add_typer(features.app, name="features")
app.add_typer(bench.app, name="bench")
app.add_typer(status.cache_app, name="cache")
app.command()(demo)
app.command()(serve)
app.command()(status.status)
for verb in (models.update, models.versions, models.lineage, models.promote, models.rollback, models.history,
             erasure.forget, erasure.erasures):
    app.command()(verb)


@app.command()
def env() -> None:
    """Print export lines so the plain `feast` CLI and `psql` reach freshrec's database."""
    from freshrec.features import export_lines

    typer.echo(export_lines())
