"""Training arguments, as dataclasses with help texts (checked in __post_init__)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TrainingArguments:
    strategy: str = field(default="head", metadata={"help": "head (frozen encoder), lora (PEFT adapters) or full"})
    epochs: int = field(default=3, metadata={"help": "most passes over the new rows (early stopping may end sooner)"})
    batch_size: int = field(default=64, metadata={"help": "positive rows per step; each brings its negatives"})
    learning_rate: float = field(default=3e-4, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    l2_to_parent: float = field(default=1e-3, metadata={"help": "lambda of the L2 pull toward the parent's weights"})
    negatives: int = field(default=4, metadata={"help": "sampled negative items per positive"})
    negative_sampler: str = field(default="uniform", metadata={"help": "uniform or popularity"})
    # 1.0: as many older rows as new ones. At 0.2 a week's update on the bundled data forgot enough
    # of the older weeks for the gate to reject it (guard Recall@20 0.088 -> 0.061).
    replay_fraction: float = field(default=1.0, metadata={"help": "older rows replayed, as a fraction of new rows"})
    holdout_fraction: float = field(default=0.2, metadata={"help": "newest share of new rows held out: half chooses the epoch, half decides the gate"})
    patience: int = field(default=1, metadata={"help": "epochs without validation improvement before stopping"})
    lora_rank: int = field(default=8, metadata={"help": "LoRA rank (strategy lora)"})
    embedding_dim: int = field(default=128, metadata={"help": "tower output size (fixed by the item_embeddings schema)"})
    max_user_tokens: int = field(default=128, metadata={"help": "token budget of a user profile"})
    max_item_tokens: int = field(default=32, metadata={"help": "token budget of an item text"})
    seed: int = field(default=0, metadata={"help": "random seed for sampling and initialisation"})
    device: str = field(default="auto", metadata={"help": "auto, cpu or cuda"})

    def __post_init__(self) -> None:
        checks = {
            "strategy": self.strategy in ("head", "lora", "full"),
            "negative_sampler": self.negative_sampler in ("uniform", "popularity"),
            "device": self.device in ("auto", "cpu", "cuda"),
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "learning_rate": self.learning_rate > 0,
            "negatives": self.negatives >= 1,
            "replay_fraction": 0 <= self.replay_fraction <= 10,
            "holdout_fraction": 0 < self.holdout_fraction < 1,
            "l2_to_parent": self.l2_to_parent >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid training argument {bad[0]}={getattr(self, bad[0])!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class GateArguments:
    k: int = field(default=20, metadata={"help": "cut-off of Recall@K and NDCG@K"})
    tolerance: float = field(default=0.1, metadata={"help": "a candidate may trail its parent (and the best promoted version) by this fraction of its score"})
    max_eval_baskets: int = field(default=400, metadata={"help": "baskets scored per slice"})
    # Fewer held-out baskets than this is no evidence: no version is made, the rows wait for more. 10: a
    # week of the bundled shop holds 11 to 30 in its gate slice (the newest tenth of its rows), so weekly
    # updates are judged; a day's trickle waits for more.
    min_baskets: int = field(default=10, metadata={"help": "baskets each gate slice needs before a verdict"})
    enabled: bool = field(default=True, metadata={"help": "False (--no-gate) promotes without comparing"})

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance < 1:
            raise ValueError(f"invalid gate argument tolerance={self.tolerance!r}: a fraction in [0, 1)")
        if self.k < 1 or self.max_eval_baskets < 1 or self.min_baskets < 1:
            raise ValueError("invalid gate argument: k, max_eval_baskets and min_baskets must be positive")
