"""Texts to pooled encoder states and tower vectors: the one place that tokenizes.

With a ``StateCache`` the frozen encoder's states are looked up first, and only the texts never
seen under this encoder go through it, sorted by length so a batch pads little.
"""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from freshrec.models.towers import TwoTower
from freshrec.models.state_cache import CacheStats, StateCache, encoder_digest, text_hash


def autocast(device: torch.device, bf16: bool | None = None):
    # bf16 on GPUs; full precision on CPUs, where bf16 matmuls are slower than fp32 here.
    enabled = device.type == "cuda" if bf16 is None else bf16
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


class Encoder:
    def __init__(self, model: TwoTower, tokenizer, device: torch.device, batch_size: int = 128,
                 cache: StateCache | None = None, bf16: bool | None = None):
        self.model, self.tokenizer, self.device, self.batch_size = model, tokenizer, device, batch_size
        self.cache = cache
        self.bf16 = device.type == "cuda" if bf16 is None else bf16
        self.stats = CacheStats()

    def for_serving(self, engine) -> Encoder:
        """This encoder as the API runs it: full precision, its states under the full-precision cache key.

        A CUDA updater runs under bf16, whose states differ from fp32's and are cached under another
        key; what it warms for the (CPU) API must be computed and keyed in fp32.
        """
        if not self.bf16:
            return self
        return Encoder(self.model, self.tokenizer, self.device, self.batch_size,
                       StateCache(engine, encoder_digest(self.model.encoder, precision="fp32")), bf16=False)

    def tokens(self, texts: list[str], max_tokens: int) -> dict[str, torch.Tensor]:
        tok = self.tokenizer(texts, padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
        return {"input_ids": tok["input_ids"].to(self.device), "attention_mask": tok["attention_mask"].to(self.device)}

    def pooled(self, texts: list[str], max_tokens: int) -> torch.Tensor:
        tok = self.tokens(texts, max_tokens)
        with autocast(self.device, self.bf16):
            return self.model.pooled(tok["input_ids"], tok["attention_mask"]).float()

    @torch.no_grad()
    def _encode(self, texts: list[str], max_tokens: int) -> torch.Tensor:
        """Distinct texts through the encoder, in batches of similar length, returned in input order."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = torch.empty(len(texts), self.model.encoder.config.hidden_size, device=self.device)
        # A progress bar on a terminal only (disable=None), and only for passes worth watching.
        steps = tqdm(range(0, len(order), self.batch_size), desc=f"encoding {len(texts):,} texts", unit="batch",
                     disable=None if len(texts) > 4 * self.batch_size else True, leave=False)
        for start in steps:
            chunk = order[start : start + self.batch_size]
            out[chunk] = self.pooled([texts[i] for i in chunk], max_tokens)
        self.stats.encoded += len(texts)
        return out

    @torch.no_grad()
    def pooled_all(self, texts: list[str], max_tokens: int) -> torch.Tensor:
        """Pooled states of ``texts`` (duplicates allowed), through the cache when there is one."""
        hidden = self.model.encoder.config.hidden_size
        if not texts:
            return torch.zeros(0, hidden, device=self.device)
        distinct = list(dict.fromkeys(texts))
        if self.cache is None:
            states = self._encode(distinct, max_tokens)
        else:
            keys = [text_hash(t) for t in distinct]
            found = self.cache.get(max_tokens, keys)
            missing = [i for i, k in enumerate(keys) if k not in found]
            self.stats.hits += len(distinct) - len(missing)
            states = torch.empty(len(distinct), hidden, device=self.device)
            if len(found):
                hit = [i for i, k in enumerate(keys) if k in found]
                states[hit] = torch.from_numpy(np.stack([found[keys[i]] for i in hit])).to(self.device)
            if missing:
                fresh = self._encode([distinct[i] for i in missing], max_tokens)
                states[missing] = fresh
                self.cache.put(max_tokens, {keys[i]: v for i, v in zip(missing, fresh.cpu().numpy())})
        position = {t: i for i, t in enumerate(distinct)}
        return states[[position[t] for t in texts]]

    @torch.no_grad()
    def cached_users(self, texts: list[str], max_tokens: int) -> dict[int, np.ndarray]:
        """User vectors of those ``texts`` whose pooled states are cached, by position: no encoder pass."""
        if self.cache is None or not texts:
            return {}
        keys = [text_hash(t) for t in texts]
        found = self.cache.get(max_tokens, list(dict.fromkeys(keys)))
        hit = [i for i, k in enumerate(keys) if k in found]
        if not hit:
            return {}
        self.stats.hits += len(hit)
        self.model.eval()
        states = torch.from_numpy(np.stack([found[keys[i]] for i in hit])).to(self.device)
        return dict(zip(hit, self.model.project_users(states).cpu().numpy()))

    @torch.no_grad()
    def users(self, texts: list[str], max_tokens: int) -> np.ndarray:
        self.model.eval()
        return self.model.project_users(self.pooled_all(texts, max_tokens)).cpu().numpy()

    @torch.no_grad()
    def items(self, texts: list[str], max_tokens: int) -> np.ndarray:
        self.model.eval()
        return self.model.project_items(self.pooled_all(texts, max_tokens)).cpu().numpy()
