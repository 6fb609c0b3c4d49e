"""``python -m freshrec ...`` (and ``torchrun -m freshrec update ...``) run the CLI."""
from freshrec.cli import app

app()
