"""Exponential moving average of the trainable weights (Sec. 7: decay 0.999).

A plain average, ``shadow = decay * shadow + (1 - decay) * weight`` after every optimizer step, starting from the
initial weights, kept in float32 whatever the training precision. ``decay = 0`` makes the average the weights
themselves. The final ``RUN/model`` holds the averaged weights.
"""

from __future__ import annotations

import torch
from torch import nn


class EMA:
    """Shadow copies of named parameters; ``update`` after each step, ``copy_to`` to use them."""

    def __init__(self, named_parameters: dict[str, nn.Parameter], decay: float):
        self.decay = decay
        self.shadow = {name: p.detach().float().clone() for name, p in named_parameters.items()}

    @torch.no_grad()
    def update(self, named_parameters: dict[str, nn.Parameter]) -> None:
        for name, p in named_parameters.items():
            self.shadow[name].lerp_(p.detach().float(), 1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, named_parameters: dict[str, nn.Parameter]) -> None:
        for name, p in named_parameters.items():
            p.copy_(self.shadow[name].to(p.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: value.clone() for name, value in self.shadow.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = set(self.shadow) - set(state)
        if missing:
            raise KeyError(f"EMA state lacks {len(missing)} parameter(s), e.g. {sorted(missing)[0]}")
        for name in self.shadow:
            self.shadow[name].copy_(state[name])
