"""Fine-tuning throughput per base model and strategy, on real training pairs.

    freshrec bench train                                  # pairs from the loaded database, then time them
    python -m freshrec.bench.throughput --pairs-dir DIR   # no database or Feast needed (a GPU box)

The pairs come from the updater's own path (watermark cut -> Feast point-in-time texts ->
negatives), are written to Parquet, and every (model, strategy) cell trains one epoch over the same
pairs from the same start, ``repeats`` times; the table gives medians. A "pair" is one (user text,
item text, label) row: each interaction row brings itself and ``negatives`` sampled negatives.
"""
from __future__ import annotations

import argparse
import tempfile
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from freshrec.bench import report
from freshrec.training.args import TrainingArguments
from freshrec.models.base import build_tiny, load_encoder, load_tokenizer, resolve
from freshrec.training.distributed import World
from freshrec.training.examples import Examples, TrainingData
from freshrec.models.towers import TwoTower
from freshrec.training.train import fine_tune, wrap_lora

STRATEGIES = ("head", "lora", "full")
COLUMNS = ["model", "strategy", "device", "pairs", "pairs_per_s", "loop_pairs_per_s", "prepare_s", "loop_s",
           "interaction_rows_per_s", "peak_gpu_mib"]


def export_pairs(out_dir: Path, n_pairs: int, seed: int = 0) -> Path:
    """Sample training pairs from everything loaded, through the updater's cut and Feast (no publish)."""
    from freshrec.db import get_engine
    from freshrec.features import open_store
    from freshrec.training import dataset
    from freshrec.training.watermark import ZERO_XID, take_cut

    engine = get_engine()
    cut = take_cut(engine, ZERO_XID)
    if cut.row_count == 0:
        raise ValueError("no interactions are loaded: run `freshrec demo` or `freshrec load` first")
    data = dataset.build(engine, open_store(), cut, TrainingArguments(replay_fraction=0, seed=seed))
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, examples, n in (("train", data.train, n_pairs), ("valid", data.valid, 256)):
        groups = examples.groups()  # whole groups, as training batches them
        picked = rng.choice(len(groups), size=min(len(groups), max(1, n // len(groups[0]))), replace=False)
        examples.take(np.concatenate([groups[g] for g in picked])).write(out_dir / f"{name}.parquet")
    return out_dir


def _model_path(name: str, scratch: Path) -> Path:
    return build_tiny(scratch / "tiny") if name == "tiny" else resolve(name)


def measure(path: Path, strategy: str, data: TrainingData, device: torch.device, args: TrainingArguments) -> dict:
    model = TwoTower(load_encoder(path), args.embedding_dim)
    tokenizer = load_tokenizer(path)
    if strategy == "lora":
        wrap_lora(model, args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result = fine_tune(model, tokenizer, data, args, device, World())
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return {"pairs_per_s": result.rows_per_second, "loop_pairs_per_s": result.rows_seen / result.seconds,
            "prepare_s": result.prepare_seconds, "loop_s": result.seconds, "peak_gpu_mib": peak}


def run(pairs_dir: Path, models: list[str], strategies: list[str], device_name: str, repeats: int,
        batch_size: int, out_dir: Path, command: str, echo=print) -> list[dict]:
    train, valid = Examples.read(pairs_dir / "train.parquet"), Examples.read(pairs_dir / "valid.parquet")
    empty = pd.DataFrame()
    data = TrainingData(train, valid, empty, empty, empty, len(train), 0)
    device = World().device(device_name)
    rows = []
    for name in models:
        path = _model_path(name, Path(tempfile.gettempdir()) / "freshrec-bench-models")
        for strategy in strategies:
            args = TrainingArguments(strategy=strategy, epochs=1, batch_size=batch_size, device=device_name,
                                     learning_rate=1e-3 if strategy == "head" else 5e-5)
            runs = [measure(path, strategy, data, device, args) for _ in range(repeats)]
            row = {"model": name if name in ("tiny", "minilm") else Path(name).name, "strategy": strategy,
                   "device": str(device), "pairs": len(train)}
            row.update({k: statistics.median(r[k] for r in runs) if runs[0][k] is not None else None for k in runs[0]})
            row["interaction_rows_per_s"] = row["pairs_per_s"] / (1 + args.negatives)
            echo(f"{row['model']:>8} {strategy:>5} {device}: {row['pairs_per_s']:,.0f} pairs/s "
                 f"(loop {row['loop_pairs_per_s']:,.0f}/s, prepare {row['prepare_s']:.1f} s)")
            rows.append(row)
    json_path, md_path = report.write(out_dir, f"train-throughput-{device.type}", rows, command, COLUMNS,
                                      {"repeats": repeats, "batch_size": batch_size})
    echo(f"wrote {json_path} and {md_path}")
    return rows


def main(argv: list[str] | None = None) -> None:
    """The database-free entry point (the ``freshrec bench train`` CLI also exports the pairs first)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs-dir", type=Path, required=True, help="train.parquet and valid.parquet")
    parser.add_argument("--models", default="tiny,minilm", help="comma-separated: tiny, minilm or local paths")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("bench-out"))
    a = parser.parse_args(argv)
    import sys

    run(a.pairs_dir, a.models.split(","), a.strategies.split(","), a.device, a.repeats, a.batch_size, a.out,
        "python -m freshrec.bench.throughput " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
