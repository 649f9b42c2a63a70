"""Generic conversion of Lua Torch ``nn`` models to PyTorch modules and back.

* :func:`from_lua` / :func:`load_lua_model`: a Lua module tree (``fbresnet_port.t7`` objects or a
  ``.t7`` path) -> an equivalent, trainable ``torch.nn.Module`` (forward, backward, train/evaluate
  behaviour and ``parameters()`` order as in Lua).
* :func:`to_lua` / :func:`lua_module`: a module -> a Lua tree that Lua ``torch.load`` can read and run.
* :func:`register`: a converter for a Lua class of the user's own project (``@register('OneHot')``).
* :func:`supported_classes_markdown` (or ``python -m fbresnet_port.lua_nn``): the table of converted classes.
"""
from __future__ import annotations

import inspect
import os
from typing import Any, Mapping

from torch import nn

from . import containers, layers, shapes, simple  # noqa: F401  (register the classes)
from . import criterions, dpnn, graph, legacy, rnn, text, torchrnn  # noqa: F401,E402  (register more families)
from . import charrnn  # noqa: F401,E402  (char-rnn's OneHot, dpnn's nn.OneHot)
from ._base import (LUA_OPTIONS, REGISTRY, LuaForwardError, LuaModelError, LuaModule, check_options, find_modules,
                    from_lua, lua_module, lua_str, register, select, to_lua, unregister)

__all__ = ["from_lua", "load_lua_model", "to_lua", "lua_module", "LuaModule", "LuaModelError", "LuaForwardError",
           "LUA_OPTIONS",
           "supported_classes", "supported_classes_markdown", "lua_str", "register", "unregister",
           "find_modules"]


def load_lua_model(path_or_object: Any, key: str | None = None,
                   options: Mapping[str, Any] | None = None) -> nn.Module:
    """``from_lua(t7.load(path), options)``; a loaded Lua object is converted directly.

    ``key`` picks the module inside a checkpoint table, e.g. ``key='protos.rnn'`` for char-rnn's
    ``{protos={rnn=..., criterion=...}, opt=..., vocab=...}`` (list indices 1-based: ``'layers[2]'``).
    ``options``: see :data:`LUA_OPTIONS` (unknown names are refused before the file is read).
    """
    check_options(options)
    obj = path_or_object
    if isinstance(obj, (str, os.PathLike)):
        from .. import t7
        obj = t7.load(obj)
    if key is not None:
        obj = select(obj, key)
    return from_lua(obj, options)


def supported_classes() -> list[str]:
    """The Lua class names :func:`from_lua` converts."""
    return sorted(REGISTRY)


def _torch_base(converter: Any) -> str:
    """The standard torch.nn class a converter's modules are (``nn.Conv2d``), or ``''``."""
    if not isinstance(converter, type):
        return ""
    for cls in converter.__mro__[1:]:
        if cls.__module__.startswith("torch.nn") and cls is not nn.Module:
            return f"nn.{cls.__name__}"
    return ""


_FAMILY_TITLES = {"charrnn": "char-rnn", "containers": "containers and tables", "criterions": "criterions",
                  "graph": "nngraph", "layers": "layers with weights", "legacy": "old vision layers",
                  "rnn": "Element-Research rnn", "torchrnn": "torch-rnn", "dpnn": "dpnn", "shapes": "shapes and reductions",
                  "simple": "activations, pooling, dropout, padding", "text": "text, matrix and distance layers"}


def supported_classes_markdown(compact: bool = False) -> str:
    """The table of supported Lua classes, generated from the registry: one row per converter (family, the
    Lua classes it converts, the PyTorch module it builds, the first line of its docstring); with ``compact``,
    one row per family listing its classes (the README's list)."""
    groups: dict[int, list[str]] = {}
    converters: dict[int, Any] = {}
    for name, conv in REGISTRY.items():
        groups.setdefault(id(conv), []).append(name)
        converters[id(conv)] = conv
    rows = []
    for key, names in groups.items():
        conv = converters[key]
        if isinstance(conv, type):
            family = conv.__module__.rsplit(".", 1)[-1]
            module = _torch_base(conv) or f"`{conv.__name__}`"
        else:  # a function given to register()
            family, module = "registered", f"`{getattr(conv.fn, '__qualname__', 'function')}`"
        doc = (inspect.getdoc(conv) or "").split("\n\n")[0].replace("\n", " ").replace("|", "\\|")
        rows.append((family, sorted(names), module, doc))
    rows.sort(key=lambda r: (r[0], r[1][0]))
    if compact:
        families: dict[str, list[str]] = {}
        for fam, names, _, _ in rows:
            families.setdefault(fam, []).extend(names)
        lines = [f"{len(REGISTRY)} Lua classes convert to PyTorch modules:", "", "| Family | Lua classes |", "|---|---|"]
        lines += [f"| {_FAMILY_TITLES.get(fam, fam)} (`lua_nn/{fam}.py`) | {', '.join(f'`{n}`' for n in sorted(names))} |"
                  if fam != "registered" else f"| registered by you | {', '.join(f'`{n}`' for n in sorted(names))} |"
                  for fam, names in families.items()]
        return "\n".join(lines)
    lines = [f"{len(REGISTRY)} Lua classes convert to PyTorch modules:", "",
             "| Family | Lua classes | PyTorch module | Notes |", "|---|---|---|---|"]
    lines += [f"| {fam} | {', '.join(f'`{n}`' for n in names)} | {module} | {doc} |" for fam, names, module, doc in rows]
    return "\n".join(lines)
