"""The encoder-state cache: a frozen encoder's pooled state of a text, computed once.

Keyed by (encoder digest, token budget, sha256 of the text). Under the ``head`` strategy every
version keeps its parent's encoder, so its digest, and every text it has ever encoded, carry over:
an update encodes only the texts it has never seen, and the API looks up a returning user's
profile instead of running the encoder.

It lives in PostgreSQL (``encoder_states``), not in the artifact store: the updater, every API
replica and the benchmark read and fill one table without a shared file system, lookups are one
indexed query for a whole batch, and size and eviction are plain SQL (``freshrec cache``).
``lora`` and ``full`` change the encoder, so their digests are new per version and nothing
carries over between versions.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa
import torch
from sqlalchemy.engine import Engine

_FOUND = """
SELECT text_sha256, state, last_used_at FROM encoder_states
WHERE encoder = :encoder AND max_tokens = :max_tokens AND text_sha256 = ANY(:hashes)"""
_LOOKUP = f"SELECT text_sha256, state FROM ({_FOUND}) found"
# The lookup touches its hits at most hourly (an LRU clock, without a write per lookup), in the same
# statement: one round trip for a returning customer's state in the API, not five (checkout, begin,
# select, update, commit).
_LOOKUP_AND_TOUCH = f"""
WITH found AS ({_FOUND}),
touched AS (UPDATE encoder_states e SET last_used_at = now() FROM found
            WHERE e.encoder = :encoder AND e.max_tokens = :max_tokens AND e.text_sha256 = found.text_sha256
              AND found.last_used_at < now() - interval '1 hour')
SELECT text_sha256, state FROM found"""
_SIZE = """
SELECT encoder, count(*) AS states, sum(octet_length(state) + octet_length(text_sha256)) AS bytes,
       min(created_at) AS oldest, max(last_used_at) AS last_used
FROM encoder_states GROUP BY encoder ORDER BY encoder"""
_PRUNE = """
DELETE FROM encoder_states WHERE ctid IN (
    SELECT ctid FROM encoder_states ORDER BY last_used_at DESC OFFSET :keep)"""


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def encoder_digest(encoder: torch.nn.Module, device: torch.device | None = None, precision: str | None = None) -> str:
    """sha256 over the encoder's parameter names and values, and the precision they run at.

    On CUDA the encoder runs under bf16 autocast, whose outputs differ from fp32's: another key.
    """
    precision = precision or ("bf16" if device is not None and device.type == "cuda" else "fp32")
    h = hashlib.sha256()
    for name, tensor in sorted(encoder.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return f"{h.hexdigest()[:32]}:{precision}"


@dataclass
class CacheStats:
    hits: int = 0
    encoded: int = 0  # texts that went through the encoder

    def as_dict(self) -> dict:
        return {"hits": self.hits, "encoded": self.encoded}


class StateCache:
    """Read and fill one encoder's states in PostgreSQL."""

    def __init__(self, engine: Engine, encoder: str, write: bool = True):
        self.engine, self.encoder, self.write = engine, encoder, write

    def get(self, max_tokens: int, hashes: list[bytes]) -> dict[bytes, np.ndarray]:
        if not hashes:
            return {}
        params = {"encoder": self.encoder, "max_tokens": max_tokens, "hashes": hashes}
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            rows = conn.execute(sa.text(_LOOKUP_AND_TOUCH if self.write else _LOOKUP), params).all()
        return {bytes(r.text_sha256): np.frombuffer(r.state, dtype="<f4") for r in rows}

    def put(self, max_tokens: int, states: dict[bytes, np.ndarray]) -> None:
        if not states or not self.write:
            return
        with self.engine.begin() as conn:
            raw = conn.connection.driver_connection
            with raw.cursor() as cur:
                cur.execute("CREATE TEMP TABLE _states (text_sha256 bytea, state bytea) ON COMMIT DROP")
                with cur.copy("COPY _states (text_sha256, state) FROM STDIN") as copy:
                    for key, state in states.items():
                        copy.write_row((key, np.asarray(state, dtype="<f4").tobytes()))
                # Two writers may encode the same text at once: the first row stays.
                cur.execute(
                    "INSERT INTO encoder_states (encoder, max_tokens, text_sha256, state) "
                    "SELECT %s, %s, text_sha256, state FROM _states ON CONFLICT DO NOTHING",
                    (self.encoder, max_tokens),
                )


def cache_size(engine: Engine) -> list[dict]:
    """States and bytes per encoder."""
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(_SIZE)).mappings()]


def prune(engine: Engine, keep: int) -> int:
    """Evict the least recently used states beyond ``keep``; returns how many went."""
    with engine.begin() as conn:
        return conn.execute(sa.text(_PRUNE), {"keep": keep}).rowcount
