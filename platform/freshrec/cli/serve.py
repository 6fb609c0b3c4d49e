"""freshrec serve: the REST API under uvicorn."""
from __future__ import annotations

import typer

from freshrec.cli._common import migrated_engine, user_errors
from freshrec.config import get_settings


def serve(
    host: str = typer.Option(None, help="default: FRESHREC_SERVING__HOST (127.0.0.1)"),
    port: int = typer.Option(None, help="default: FRESHREC_SERVING__PORT (8000)"),
    workers: int = typer.Option(1, help="uvicorn worker processes; each follows the pointer on its own"),
) -> None:
    """Serve recommendations, search and events; follows promotions and rollbacks without a restart."""
    import uvicorn

    from freshrec.serving.threads import limit_compute_threads

    settings = get_settings()
    with user_errors():
        migrated_engine()
    host, port = host or settings.serving.host, port or settings.serving.port
    typer.echo(f"serving on http://{host}:{port}  (docs: /docs, metrics: /metrics)")
    limit_compute_threads(settings.serving.compute_threads)  # this process serves until it exits
    uvicorn.run("freshrec.serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning")
