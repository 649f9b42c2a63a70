"""nngraph (torch/nngraph): the table handling of ``node:split(n)`` and the modules nngraph inserts into graphs."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


def split_outputs(table: Any, n: int) -> list:
    """nngraph's ``node:split(n)``: the ``n`` elements of a node's table output (Lua fails on another length)."""
    if not isinstance(table, (list, tuple)) or len(table) != n:
        got = f"{len(table)} outputs" if isinstance(table, (list, tuple)) else f"a {type(table).__name__}"
        raise ValueError(f"split({n}) cannot split {got}")
    return list(table)


def just_element(table: Any) -> Any:
    """nngraph.JustElement (``node:split(1)``): the one element of a one-element table."""
    if not isinstance(table, (list, tuple)) or len(table) != 1:
        raise ValueError("expecting a table of one element (node:split(1))")
    return table[0]


def detach_all(x: Any) -> Any:
    """``x`` (a tensor or a nested table of them) cut from autograd."""
    if isinstance(x, torch.Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return [detach_all(v) for v in x]
    return x


class ModuleFromCriterion(nn.Module):
    """nn.ModuleFromCriterion (nngraph: a criterion used as a graph node): ``[prediction, target]`` -> a one-element
    tensor holding the loss; no gradient flows to the target."""

    def __init__(self, criterion: nn.Module):
        super().__init__()
        self.criterion = criterion

    def forward(self, input: Any) -> torch.Tensor:
        prediction, target = split_outputs(input, 2)
        return self.criterion(prediction, detach_all(target)).reshape(1)
