"""One tokenizer for every place that reads item titles or queries word by word."""
from __future__ import annotations

import re

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lower-case alphanumeric words, in order ("T-LIGHT HOLDER" -> t, light, holder)."""
    return _WORD.findall(text.lower())
