"""pgvector's text form, both ways: what COPY writes and what ``embedding::text`` reads back."""
from __future__ import annotations

import numpy as np


def to_literal(vec) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vec) + "]"


def from_literal(text: str) -> np.ndarray:
    return np.array(text[1:-1].split(","), dtype=np.float32)
