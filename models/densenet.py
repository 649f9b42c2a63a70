"""DenseNet for CIFAR and ImageNet: port of liuzhuang13/DenseNet ``models/densenet.lua``.

The architecture, initialisation and parameter order are those of the Lua code (PARITY §2.2, §2.5,
§2.6): ``c0 = 2k``; dense layers BN-ReLU-Conv1x1(4k)-[Dropout]-BN-ReLU-Conv3x3(k)-[Dropout]
(bottleneck) or BN-ReLU-Conv3x3(k)-[Dropout]; ``floor((depth-4)/3 [/2])`` layers per CIFAR block;
transitions BN-ReLU-Conv1x1(floor(c*reduction))-[Dropout]-AvgPool(2); last BN-ReLU-AvgPool(8|7)-flatten;
``Linear`` to 10/100/1000 classes chosen by the dataset.

``-optMemory`` selects how a dense block is computed; all levels give the same outputs, gradients and
running statistics (apart from Lua's omission of Dropout at levels >= 3, reproduced, PARITY §9 #8):

==========  ===========================================================================================
level       mechanism
==========  ===========================================================================================
0           the original recursive concatenation with autograd over the ``nn`` modules: every layer
            returns ``cat(input, new)`` and keeps it (Lua ``Concat(2){Identity, net}``)
1, 2        one concatenation of the earlier features per layer, kept for backward with the BN-ReLU
            outputs; one shared gradient buffer per block (Lua ``optnet`` / ``shareGradInput``, which
            coincide here: PyTorch frees gradient buffers once consumed anyway)
3, 5 (>5)   one pre-allocated feature buffer per block, no concatenation copies; BN-ReLU outputs kept
            (Lua ``DenseConnectLayerCustom`` + ``sharePrevOutput``)
4           as 3, plus BN-ReLU(-Conv1x1-BN-ReLU) recomputed in backward from the saved batch statistics;
            running statistics updated exactly once per step (Lua ``shareBNOutput``); memory linear in depth
==========  ===========================================================================================

Levels 1-5 run each dense block as one autograd Function with an explicit backward
(:mod:`models.densenet_memory`), which is also where the speed comes from: per-feature BN statistics
computed once, deferred BN input-gradient terms, 1x1 convolutions as batched matrix products on CPU
(:mod:`models.pointwise`, also used by level 0 and the transitions), cache-sized batch chunks.  With
``-dropRate > 0`` levels 1/2 keep Dropout inside the dense layers and run autograd over the modules
(one concatenation per layer); as in Lua, levels >= 3 have no Dropout in dense layers.

Lua's ``-optnet true`` turns on optnet and ``-shareGradInput true`` turns on gradient sharing whatever
``-optMemory`` is (``models/init.lua``); here both lift level 0 to the level-1/2 mechanism and leave
levels >= 1 unchanged.  Under ``torch.autocast`` (``-precision half``: bfloat16 on CPU, float16 on CUDA)
the blocks compute in the autocast dtype with float32 statistics and weights.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, List, Optional, Tuple

import torch
from torch import Tensor, nn

from fbresnet_port.errors import UserError, note

from . import pointwise
from .densenet_memory import dense_block

__all__ = ["DenseNet", "create_model", "memory_level"]

IMAGENET_STAGES = {121: (6, 12, 24, 16), 169: (6, 12, 32, 32), 201: (6, 12, 48, 32), 161: (6, 12, 36, 24)}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}

_dropout_warned = False


def memory_level(opt_memory: int, optnet: bool = False, share_grad_input: bool = False) -> int:
    """Effective mechanism level for ``-optMemory`` and the Lua ``-optnet``/``-shareGradInput`` flags.

    Levels above 5 act as 5 (= 3) and below 0 as 0, as the Lua comparisons do (PARITY §9 #7).
    """
    level = int(opt_memory)
    if level <= 0:
        return 2 if (optnet or share_grad_input) else 0
    return 3 if level >= 5 else level


def _conv(c_in: int, c_out: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    """``cudnn.SpatialConvolution`` without bias (removed by densenet.lua's ConvInit); 1x1 ones run as
    batched matrix products on CPU (:mod:`models.pointwise`)."""
    return pointwise.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)


class _DenseLayer(nn.Sequential):
    """Port of ``DenseConnectLayerStandard``'s ``net`` (and of ``DenseConnectLayerCustom``'s net1+net2).

    BN-ReLU-Conv stages; Dropout after each convolution when ``drop_rate > 0``.
    """

    def __init__(self, c_in: int, growth: int, bottleneck: bool, drop_rate: float) -> None:
        mods: "OrderedDict[str, nn.Module]" = OrderedDict()
        widths = [(c_in, 4 * growth, 1, 0), (4 * growth, growth, 3, 1)] if bottleneck else [(c_in, growth, 3, 1)]
        for i, (cin, cout, kernel, pad) in enumerate(widths, 1):
            mods[f"norm{i}"] = nn.BatchNorm2d(cin)
            mods[f"relu{i}"] = nn.ReLU(inplace=True)
            mods[f"conv{i}"] = _conv(cin, cout, kernel, 1, pad)
            if drop_rate > 0:
                mods[f"drop{i}"] = nn.Dropout(drop_rate)
        super().__init__(mods)

    def stages(self) -> List[Tuple[nn.BatchNorm2d, nn.Conv2d]]:
        """The (BatchNorm2d, Conv2d) pair of every BN-ReLU-Conv stage, in order."""
        return [(self.get_submodule(f"norm{i}"), self.get_submodule(f"conv{i}"))
                for i in range(1, 3) if hasattr(self, f"conv{i}")]


class _DenseBlock(nn.Module):
    """A dense block of ``n_layers`` layers; ``level`` picks the memory mechanism (module docstring)."""

    def __init__(self, n_layers: int, c_in: int, growth: int, bottleneck: bool, drop_rate: float,
                 level: int) -> None:
        super().__init__()
        self.level, self.growth = level, growth
        self.autograd_path = level == 0 or (level < 3 and drop_rate > 0)  # dense_block has no Dropout
        for i in range(n_layers):
            self.add_module(f"denselayer{i + 1}", _DenseLayer(c_in + i * growth, growth, bottleneck, drop_rate))

    def forward(self, x: Tensor) -> Tensor:
        layers = list(self.children())
        if not layers:
            return x
        if self.level == 0:
            for layer in layers:
                x = torch.cat([x, layer(x)], 1)
            return x
        if self.autograd_path:  # levels 1/2 with Dropout in the layers: nn modules, one cat per layer
            features = [x]
            for layer in layers:
                features.append(layer(features[0] if len(features) == 1 else torch.cat(features, 1)))
            return torch.cat(features, 1)
        return dense_block(x, [layer.stages() for layer in layers], self.growth, self.training, self.level)


class _Transition(nn.Sequential):
    """``addTransition`` (not last): BN-ReLU-Conv1x1-[Dropout]-AvgPool(2, stride 2)."""

    def __init__(self, c_in: int, c_out: int, drop_rate: float) -> None:
        mods: "OrderedDict[str, nn.Module]" = OrderedDict(
            norm=nn.BatchNorm2d(c_in), relu=nn.ReLU(inplace=True), conv=_conv(c_in, c_out, 1))
        if drop_rate > 0:
            mods["drop"] = nn.Dropout(drop_rate)
        mods["pool"] = nn.AvgPool2d(2)
        super().__init__(mods)


class DenseNet(nn.Module):
    """DenseNet of densenet.lua; ``features`` then the ``classifier`` Linear (the last child).

    Args: ``stages`` layers per block; ``imagenet`` selects the 7x7 stem and the 7x7 final pool.
    """

    print_lua_tree = True  # densenet.lua ends with print(model): models.setup prints the Lua tree

    def __init__(self, stages: List[int], growth: int, bottleneck: bool, reduction: float, drop_rate: float,
                 num_classes: int, imagenet: bool, opt_memory: int = 2, optnet: bool = False,
                 share_grad_input: bool = False, lua_opt: Optional[dict] = None) -> None:
        super().__init__()
        self.opt_memory = int(opt_memory)
        self.level = memory_level(opt_memory, optnet, share_grad_input)
        self.growth = growth
        self.lua_opt = dict(lua_opt or {})
        layer_drop = drop_rate if self.level < 3 else 0.0  # Lua's custom layers have no Dropout
        c = 2 * growth
        mods: "OrderedDict[str, nn.Module]" = OrderedDict()
        if imagenet:
            mods["conv0"] = _conv(3, c, 7, 2, 3)
            mods["norm0"] = nn.BatchNorm2d(c)
            mods["relu0"] = nn.ReLU(inplace=True)
            mods["pool0"] = nn.MaxPool2d(3, 2, 1)
        else:
            mods["conv0"] = _conv(3, c, 3, 1, 1)
        for i, n in enumerate(stages, 1):
            mods[f"denseblock{i}"] = _DenseBlock(n, c, growth, bottleneck, layer_drop, self.level)
            c += n * growth
            if i < len(stages):
                c_out = math.floor(c * reduction)
                if c_out < 1:
                    raise UserError(f"-reduction {reduction:g} leaves floor({c} x {reduction:g}) = {c_out} "
                                    f"channels after dense block {i}: use a larger -reduction, e.g. 0.5")
                mods[f"transition{i}"] = _Transition(c, c_out, drop_rate)
                c = c_out
        mods["norm_final"] = nn.BatchNorm2d(c)
        mods["relu_final"] = nn.ReLU(inplace=True)
        mods["pool_final"] = nn.AvgPool2d(7 if imagenet else 8)
        mods["flatten"] = nn.Flatten(1)
        self.features = nn.Sequential(mods)
        self.classifier = nn.Linear(c, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """densenet.lua init: conv N(0, sqrt(2/(kW*kH*nOut))), BN 1/0, Linear bias 0 (weight: nn default)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (m.kernel_size[0] * m.kernel_size[1] * m.out_channels)))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))

    def to_lua(self) -> Any:
        """Export to the Lua module tree densenet.lua builds for this ``-optMemory``.

        Levels <= 2: ``Sequential{Concat(2){Identity, net}}`` per dense layer; levels >= 3:
        ``nn.DenseConnectLayerCustom`` per layer and ``nn.JoinTable(2)`` before every transition.
        """
        from fbresnet_port import t7
        from fbresnet_port.lua_nn import lua_module, to_lua
        from fbresnet_port.lua_nn._base import long_storage

        custom = self.opt_memory >= 3
        opt = t7.LuaTable({**self.lua_opt, "optMemory": self.opt_memory, "growthRate": self.growth})

        def export(m: nn.Module) -> Any:
            obj = to_lua(m)
            if isinstance(m, nn.ReLU):
                obj.fields.update(inplace=True, threshold=0, val=0)  # cudnn.ReLU(true)
            elif isinstance(m, nn.Sequential):
                obj["modules"] = t7.LuaList(export(c) for c in m.children())
            return obj

        def seq(children: List[Any]) -> Any:
            return lua_module("nn.Sequential", train=self.training, modules=t7.LuaList(children))

        def dense_layer(layer: _DenseLayer) -> Any:
            net = export(layer)
            net["modules"][0]["__shareGradInputKey"] = "first"
            if not custom:
                concat = lua_module("nn.Concat", train=self.training, dimension=2, outputSize=long_storage([]),
                                    modules=t7.LuaList([lua_module("nn.Identity", train=self.training), net]))
                return seq([concat])
            net1, net2 = seq(list(net["modules"][:2])), seq(list(net["modules"][2:]))
            return lua_module("nn.DenseConnectLayerCustom", train=self.training, net1=net1, net2=net2,
                              modules=t7.LuaList([net1, net2]), opt=opt, input_c=torch.empty(0),
                              saved_bn_running_mean=torch.empty(0), saved_bn_running_var=torch.empty(0),
                              output=t7.LuaTable(), gradInput=t7.LuaTable())

        def join() -> List[Any]:
            return [lua_module("nn.JoinTable", train=self.training, dimension=2, size=long_storage([]),
                               gradInput=t7.LuaTable())] if custom else []

        mods: List[Any] = []
        for name, m in self.features.named_children():
            if isinstance(m, _DenseBlock):
                mods += [dense_layer(layer) for layer in m.children()]
            elif isinstance(m, _Transition):
                mods += join() + [export(c) for c in m.children()]
            elif name == "norm_final":
                mods += join() + [export(m)]
            elif isinstance(m, nn.Flatten):
                c = self.classifier.in_features
                mods.append(lua_module("nn.Reshape", train=self.training, size=long_storage([c]),
                                       batchsize=long_storage([1, c]), nelement=c))
            else:
                mods.append(export(m))
        mods.append(export(self.classifier))
        mods[0].fields.pop("gradInput", None)  # densenet.lua: model:get(1).gradInput = nil
        return seq(mods)


def _opt(opt: Any, name: str, default: Any) -> Any:
    value = getattr(opt, name, default)
    return default if value is None else value


def _lua_opt_table(opt: Any) -> dict:
    """The options as a plain dict (Lua custom layers embed the whole ``opt`` table)."""
    raw = opt if isinstance(opt, dict) else getattr(opt, "__dict__", {})
    return {k: v for k, v in raw.items() if not k.startswith("_") and isinstance(v, (str, int, float, bool))}


def cifar_layers_per_block(depth: int, bottleneck: bool) -> int:
    """Dense layers per CIFAR block: ``floor((depth-4)/3)``, halved for DenseNet-BC (densenet.lua's loop
    ``for i=1,N`` runs floor(N) times, PARITY §9 #21). A depth that is not 3n+4 (6n+4 with the bottleneck)
    prints a ``note:`` naming the depth built; one that leaves no layer is a :class:`UserError`."""
    per_layer = 6 if bottleneck else 3  # convolutions per dense layer x 3 blocks
    name = "DenseNet-BC" if bottleneck else "DenseNet"
    n = max(0, (int(depth) - 4) // per_layer)
    if n == 0:
        smallest = per_layer + 4
        raise UserError(f"{name} -depth {depth} has no dense layers: CIFAR {name} depth is {per_layer}n+4 with "
                        f"n >= 1 layers per block (-bottleneck {str(bottleneck).lower()}); use -depth {smallest} "
                        f"or more, e.g. -depth {100 if bottleneck else 40}")
    if (int(depth) - 4) % per_layer:
        note(f"{name} depth {depth}: ({depth}-4)/{per_layer} is not whole; building depth {n * per_layer + 4} "
             f"({n} layers per block)")
    return n


def create_model(opt: Any) -> DenseNet:
    """Port of densenet.lua ``createModel(opt)``."""
    global _dropout_warned
    dataset = _opt(opt, "dataset", "cifar10")
    if dataset not in NUM_CLASSES:
        raise UserError(f"densenet: invalid dataset {dataset!r}; use -dataset cifar10, cifar100 or imagenet")
    growth = int(_opt(opt, "growthRate", 12))
    bottleneck = bool(_opt(opt, "bottleneck", True))
    depth = _opt(opt, "depth", 20)
    drop_rate = float(_opt(opt, "dropRate", 0))
    opt_memory = int(_opt(opt, "optMemory", 2))
    if dataset == "imagenet":
        stages = list(IMAGENET_STAGES.get(depth, [int(_opt(opt, f"d{i}", 0)) for i in range(1, 5)]))
        if not any(stages):
            known = ", ".join(str(d) for d in sorted(IMAGENET_STAGES))
            raise UserError(f"ImageNet DenseNet -depth {depth} is not one of {known} and -d1 -d2 -d3 -d4 are all 0, "
                            f"so it would have no dense layers: use one of these depths or give the layers of "
                            f"each block, e.g. -d1 6 -d2 12 -d3 24 -d4 16")
    else:
        stages = [cifar_layers_per_block(depth, bottleneck)] * 3
    if drop_rate > 0 and opt_memory >= 3 and not _dropout_warned:
        _dropout_warned = True
        note(f"-optMemory {opt_memory} uses the memory-efficient dense layers, which (as in the Lua "
             f"code) have no Dropout: -dropRate {drop_rate:g} applies to transitions only. "
             f"Use -optMemory 2 or lower for Dropout inside dense layers.")
    return DenseNet(stages, growth, bottleneck, float(_opt(opt, "reduction", 0.5)), drop_rate,
                    NUM_CLASSES[dataset], dataset == "imagenet", opt_memory,
                    bool(_opt(opt, "optnet", False)), bool(_opt(opt, "shareGradInput", False)),
                    _lua_opt_table(opt))
