"""fbresnet-port: a Python/PyTorch port of fb.resnet.torch and liuzhuang13/DenseNet (Lua Torch).

Entry points: :func:`load` / :func:`save` for Torch ``.t7`` files, :func:`load_lua_model` to turn a
Lua ``nn`` model into a PyTorch module and :func:`register` for converters of the user's own Lua classes.
"""
from __future__ import annotations

from typing import Any, Callable

__all__ = ["load", "save", "load_lua_model", "register"]


def load(path, **kwargs) -> Any:
    """Read a Lua ``torch.save`` file, binary or ASCII (see :func:`fbresnet_port.t7.load`)."""
    from . import t7
    return t7.load(path, **kwargs)


def save(path, obj, **kwargs) -> None:
    """Write ``obj`` like Lua ``torch.save``: binary, or ``ascii=True`` for Lua's ASCII format
    (see :func:`fbresnet_port.t7.save`)."""
    from . import t7
    t7.save(path, obj, **kwargs)


def load_lua_model(path_or_object, key: str | None = None):
    """Turn a Lua ``nn`` model (a ``.t7`` path or a loaded object) into a PyTorch module; ``key`` picks
    it inside a checkpoint table (``'protos.rnn'``), see :func:`fbresnet_port.lua_nn.load_lua_model`."""
    from .lua_nn import load_lua_model as _load
    return _load(path_or_object, key=key)


def register(*typenames: str) -> Callable:
    """Decorator registering a converter ``fn(obj) -> torch.nn.Module`` for Lua class(es) ``typenames``
    (see :func:`fbresnet_port.lua_nn.register`)."""
    from .lua_nn import register as _register
    return _register(*typenames)
