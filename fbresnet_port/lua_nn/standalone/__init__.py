"""Lua Torch semantics in plain PyTorch: the classes and functions that both the converted modules of
:mod:`fbresnet_port.lua_nn` and the files written by ``convert --format python`` run.

Each module here mirrors a family module of :mod:`fbresnet_port.lua_nn` (``standalone/simple.py`` holds
what ``lua_nn/simple.py``'s classes compute). Rules, so that :mod:`fbresnet_port.lua_nn.codegen` can copy
any definition into a generated file:

* import only the standard library and torch (``import math``, ``from typing import ...``, ``import torch``,
  ``import torch.nn.functional as F``, ``from torch import nn``); definitions of other standalone modules
  come in with ``from .other import name`` (the generator copies them by name);
* top-level names are unique across the package (they share one generated file);
* nothing here knows about Lua files: constructors take plain Python values and tensors come through the
  state dict; ``from_fields``, export and printing stay in the family modules.
"""
