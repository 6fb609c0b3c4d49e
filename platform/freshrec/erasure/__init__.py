"""Erasure (GDPR Art. 17): a customer's rows out of the data, the features and every served model.

``forget`` deletes the data in one transaction and logs which transactions held it; ``replay`` trains
every version that learned from it again, without it, through the lineage; ``audit`` answers which
versions saw a customer and proves that no live version still holds an erased row.
"""
from freshrec.erasure.audit import erasure_rows, proof_rows, versions_that_saw
from freshrec.erasure.forget import AlreadyErased, ErasureConflict, ErasureError, Request, forget
from freshrec.erasure.replay import ReplayOutcome, due_erasures, run_due

__all__ = ["AlreadyErased", "ErasureConflict", "ErasureError", "ReplayOutcome", "Request", "due_erasures",
           "erasure_rows", "forget", "proof_rows", "run_due", "versions_that_saw"]
