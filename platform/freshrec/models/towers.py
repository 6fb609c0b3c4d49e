"""The two-tower text model: a transformers encoder, mean pooling, one projection per tower.

No I/O here: building towers and computing scores only (weights and files live in registry/).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the token states that are not padding."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-6)


class MeanPooled(nn.Module):
    """A transformers encoder read as one vector per text: the mean of its token states.

    Normalised, that is the pre-trained sentence embedding (MiniLM's own pooling): the search side's
    item vectors and its day-one query vectors.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's mean-pooled output: the cache key of the `head` strategy."""
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return mean_pool(out.last_hidden_state, attention_mask)


class TwoTower(MeanPooled):
    """score(user, item) = sigmoid(scale * cos(P_u e(user), P_i e(item)) + bias).

    Both towers share one encoder; each has its own projection. They rank for recommendations;
    search has a pipeline of its own (``freshrec.search``), which keeps the encoder's pre-trained
    space instead of these projections.
    """

    def __init__(self, encoder: nn.Module, dim: int):
        super().__init__(encoder)
        hidden = encoder.config.hidden_size
        self.user_proj = nn.Linear(hidden, dim)
        self.item_proj = nn.Linear(hidden, dim)
        self.log_scale = nn.Parameter(torch.tensor(2.3))  # exp(2.3) ~ 10: a cosine needs room to separate
        self.bias = nn.Parameter(torch.tensor(0.0))

    def project_users(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.user_proj(pooled), dim=-1)

    def project_items(self, pooled: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.item_proj(pooled), dim=-1)

    def logits(self, user_vecs: torch.Tensor, item_vecs: torch.Tensor) -> torch.Tensor:
        """Row-wise logits of paired (user, item) vectors."""
        return self.log_scale.exp() * (user_vecs * item_vecs).sum(-1) + self.bias

    def forward(self, users: torch.Tensor | dict, items: torch.Tensor | dict) -> torch.Tensor:
        """Logits of paired rows. Each side is pooled states (the head strategy's cache), or the
        tokens of distinct texts with ``rows``: which text each pair uses."""
        return self.logits(self.project_users(self._side(users)), self.project_items(self._side(items)))

    def _side(self, x: torch.Tensor | dict) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return x
        return self.pooled(x["input_ids"], x["attention_mask"])[x["rows"]]

    def head_state(self) -> dict[str, torch.Tensor]:
        """Everything but the encoder: what every version stores of its own."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}


def bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def l2_to_reference(model: nn.Module, reference: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of squared distances of the trainable parameters from the parent's values."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, param in model.named_parameters():
        if param.requires_grad and name in reference:
            total = total + (param - reference[name].to(param.device)).pow(2).sum()
    return total
