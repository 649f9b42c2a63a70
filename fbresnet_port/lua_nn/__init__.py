"""Generic conversion of Lua Torch ``nn`` models to PyTorch modules and back.

* :func:`from_lua` / :func:`load_lua_model`: a Lua module tree (``fbresnet_port.t7`` objects or a
  ``.t7`` path) -> an equivalent, trainable ``torch.nn.Module`` (forward, backward, train/evaluate
  behaviour and ``parameters()`` order as in Lua).
* :func:`to_lua` / :func:`lua_module`: a module -> a Lua tree that Lua ``torch.load`` can read and run.
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from . import containers, layers, shapes, simple  # noqa: F401  (register the classes)
from . import criterions, graph, legacy, rnn, text  # noqa: F401,E402  (register more families)
from ._base import REGISTRY, LuaModelError, LuaModule, from_lua, lua_module, lua_str, to_lua

__all__ = ["from_lua", "load_lua_model", "to_lua", "lua_module", "LuaModule", "LuaModelError",
           "supported_classes", "lua_str"]


def load_lua_model(path_or_object: Any) -> nn.Module:
    """``from_lua(t7.load(path))``; a loaded Lua object is converted directly."""
    if isinstance(path_or_object, (str, os.PathLike)):
        from .. import t7
        return from_lua(t7.load(path_or_object))
    return from_lua(path_or_object)


def supported_classes() -> list[str]:
    """The Lua class names :func:`from_lua` converts."""
    return sorted(REGISTRY)
