"""Conv2d contiguity guard against a silent Opacus per-sample-gradient bug.

Opacus 1.6.0 unfolds Conv2d activations with ``as_strided`` assuming a contiguous NCHW layout;
a channels-last input (diffusers hands convs such tensors; so does a channels-last batch) gives
wrong per-sample gradients with no error. Wrong per-sample gradients mean wrong clipping norms,
so the sensitivity bound — and with it the DP guarantee — silently breaks. A forward pre-hook
making every Conv2d input contiguous fixes it (checked against autograd in the tests); forward
hooks, including Opacus' activation capture, then see the contiguous tensor.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle


def _make_contiguous(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return tuple(a.contiguous() if isinstance(a, torch.Tensor) else a for a in args)


def guard_conv_inputs(model: nn.Module) -> list[RemovableHandle]:
    """Make the input of every ``nn.Conv2d`` in ``model`` contiguous; returns removable handles."""
    return [
        module.register_forward_pre_hook(_make_contiguous)
        for module in model.modules()
        if isinstance(module, nn.Conv2d)
    ]


def has_conv2d(model: nn.Module) -> bool:
    """Whether ``model`` contains any Conv2d (and so needs the guard before DP training)."""
    return any(isinstance(m, nn.Conv2d) for m in model.modules())
