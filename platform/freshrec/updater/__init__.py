"""The updater: the job freshrec exists for (cut -> features -> towers -> ranker -> gate -> publish)."""
from freshrec.updater.job import UPDATE_LOCK, UpdateOutcome, code_version, run_update

__all__ = ["UPDATE_LOCK", "UpdateOutcome", "code_version", "run_update"]
