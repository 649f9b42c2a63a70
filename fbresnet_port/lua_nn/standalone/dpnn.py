"""Element-Research dpnn's table modules in plain PyTorch: ReverseTable.lua and ZipTable.lua (Lua tables are
Python lists)."""
from __future__ import annotations

from typing import Any, Callable


def reverse_table(input: Any, error: Callable[[str], Exception] = ValueError) -> list[Any]:
    """dpnn's nn.ReverseTable: the list in reverse order."""
    if not isinstance(input, (list, tuple)):
        raise error(f"expected a list (Lua table) input, got {type(input).__name__}")
    return list(reversed(input))


def zip_table(input: Any, error: Callable[[str], Exception] = ValueError) -> list[list[Any]]:
    """dpnn's nn.ZipTable: ``[[a1, a2], [b1, b2]]`` -> ``[[a1, b1], [a2, b2]]``."""
    out: list[list[Any]] = []
    if not isinstance(input, (list, tuple)):
        raise error(f"expected a list (Lua table) input, got {type(input).__name__}")
    for i, inner in enumerate(input):
        if not isinstance(inner, (list, tuple)):
            raise error(f"expected a list of lists (Lua tables), got an element {type(inner).__name__}")
        for j, x in enumerate(inner):
            if j == len(out):
                out.append([])
            if len(out[j]) != i:
                raise error("the inner lists have different lengths; give lists of equal length")
            out[j].append(x)
    return out
