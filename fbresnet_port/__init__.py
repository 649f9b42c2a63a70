"""fbresnet-port: a Python/PyTorch port of fb.resnet.torch and liuzhuang13/DenseNet (Lua Torch).

Entry points: :func:`load` / :func:`save` for Torch ``.t7`` files and :func:`load_lua_model` to turn a
Lua ``nn`` model into a PyTorch module.
"""
from __future__ import annotations

from typing import Any

__all__ = ["load", "save", "load_lua_model"]


def load(path, **kwargs) -> Any:
    """Read a Lua ``torch.save`` file (see :func:`fbresnet_port.t7.load`)."""
    from . import t7
    return t7.load(path, **kwargs)


def save(path, obj, **kwargs) -> None:
    """Write ``obj`` in the Lua ``torch.save`` binary format (see :func:`fbresnet_port.t7.save`)."""
    from . import t7
    t7.save(path, obj, **kwargs)


def load_lua_model(path_or_object):
    """Turn a Lua ``nn`` model (a ``.t7`` path or a loaded object) into a PyTorch module."""
    from .lua_nn import load_lua_model as _load
    return _load(path_or_object)
