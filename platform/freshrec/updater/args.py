"""The watcher's arguments (no heavy imports: the CLI reads their defaults and help at start-up)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WatchArguments:
    min_rows: int = field(default=1000, metadata={"help": "update once this many rows are past the newest watermark"})
    max_age: float = field(default=60.0, metadata={"help": "... or once the oldest of them has waited this many seconds"})
    poll: float = field(default=10.0, metadata={"help": "seconds between checks when no notification comes"})
    backoff: float = field(default=10.0, metadata={"help": "first wait after a failed update (doubles, up to 10 min)"})
    max_updates: int | None = field(default=None, metadata={"help": "stop after this many updates (default: never)"})

    def __post_init__(self) -> None:
        if self.min_rows < 1 or self.max_age < 0 or self.poll <= 0 or self.backoff <= 0:
            raise ValueError("invalid watch argument: min-rows >= 1, max-age >= 0, poll > 0, backoff > 0")
