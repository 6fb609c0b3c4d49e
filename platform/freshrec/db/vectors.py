"""pgvector's text form, both ways (what COPY writes and ``embedding::text`` reads back), and a
binary read of many vectors at once."""
from __future__ import annotations

import numpy as np
import sqlalchemy as sa


def to_literal(vec) -> str:
    # Python floats (``tolist``) format faster than NumPy scalars, to the same text: a publish writes
    # a catalog's vectors this way.
    return "[" + ",".join(map("{:.7g}".format, np.asarray(vec).tolist())) + "]"


def from_literal(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), dtype=np.float32)


def read_vectors(conn, sql: str, params: dict) -> tuple[list[tuple], np.ndarray]:
    """Rows of ``sql`` whose last column is a vector: (the other columns per row, the vectors stacked).

    Binary, through pgvector's psycopg adapter: parsing a catalog's vectors from text took seconds.
    """
    from pgvector.psycopg import register_vector

    raw = conn.connection.driver_connection
    register_vector(raw)
    rows = conn.execute(sa.text(sql), params).all()
    if not rows:
        return [], np.zeros((0, 0), np.float32)
    vecs = [r[-1].to_numpy() if hasattr(r[-1], "to_numpy") else r[-1] for r in rows]
    return [tuple(r[:-1]) for r in rows], np.stack(vecs).astype(np.float32, copy=False)
