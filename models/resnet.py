"""ResNet for ImageNet and CIFAR: native port of fb.resnet.torch ``models/resnet.lua``.

Also holds the building blocks shared with :mod:`models.preresnet` (shortcuts, the residual block
container, the classifier head, the depth tables and the initialisation of PARITY §2.5).

Every module registers its children in the order Lua's ``model:parameters()`` / ``listModules()``
visits them, so ``parameters()`` and the BatchNorm layers line up one-to-one with a Lua model built
from the same flags, and ``to_lua()`` gives back the Lua ``nn`` tree that ``resnet.lua`` builds.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable

import torch
from torch import nn

from fbresnet_port import lua_nn, t7
from fbresnet_port.lua_nn.simple import relu_fields
from fbresnet_port.errors import UserError

__all__ = ["ResNet", "Residual", "ZeroPadShortcut", "View", "create_model"]

# depth -> (blocks per stage, bottleneck?) for ImageNet; the final feature count follows from the block kind
IMAGENET_CFG: dict[int, tuple[tuple[int, int, int, int], bool]] = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
DATASET_NAMES = {"imagenet": "ImageNet", "cifar10": "CIFAR-10", "cifar100": "CIFAR-100"}

# Lua class of the BatchNorm layers in resnet.lua / preresnet.lua (DenseNet uses cudnn's)
LUA_BATCHNORM = "nn.SpatialBatchNormalization"


def lua_number(x: Any) -> str:
    """``tostring`` of a Lua number: integral values without a decimal point."""
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


# ----------------------------------------------------------------------------------------------
# Layers


def conv(n_in: int, n_out: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2d:
    """``cudnn.SpatialConvolution(nIn, nOut, k, k, stride, stride, pad, pad)`` without bias (§2.5)."""
    return nn.Conv2d(n_in, n_out, k, stride=stride, padding=pad, bias=False)


def batchnorm(c: int) -> nn.BatchNorm2d:
    """``nn.SpatialBatchNormalization(c)``: eps 1e-5, momentum 0.1, affine (torch defaults)."""
    bn = nn.BatchNorm2d(c)
    bn.lua_typename = LUA_BATCHNORM
    return bn


class ReLU(nn.ReLU):
    """``cudnn.ReLU(true)``: an in-place ReLU that also exports as in-place."""

    def __init__(self) -> None:
        super().__init__(inplace=True)

    def to_lua(self) -> t7.TorchObject:
        return lua_nn.lua_module("cudnn.ReLU", train=self.training, **relu_fields(self.inplace))


def _long_storage(values: list[int]) -> t7.Storage:
    return t7.Storage(torch.tensor(values, dtype=torch.int64), "torch.LongStorage")


class ZeroPadShortcut(nn.Module):
    """Shortcut type A: ``nn.SpatialAveragePooling(1,1,s,s)`` (pure subsampling) followed by
    ``nn.Concat(2){nn.Identity(), nn.MulConstant(0)}``, i.e. the input with as many zero channels
    appended (output channels = 2 x input channels)."""

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return torch.cat([x, x * 0], dim=1)  # x * 0 (not zeros) keeps NaN/Inf like MulConstant(0)

    def to_lua(self) -> t7.TorchObject:
        s = self.stride
        train = self.training
        pool = lua_nn.lua_module("nn.SpatialAveragePooling", train=train, kW=1, kH=1, dW=s, dH=s, padW=0, padH=0,
                                 ceil_mode=False, count_include_pad=True, divide=True)
        concat = lua_nn.lua_module(
            "nn.Concat", train=train, dimension=2, outputSize=_long_storage([]), modules=t7.LuaList([
                lua_nn.lua_module("nn.Identity", train=train),
                lua_nn.lua_module("nn.MulConstant", train=train, constant_scalar=0, inplace=False)]))
        return lua_nn.lua_module("nn.Sequential", train=train, modules=t7.LuaList([pool, concat]))

    def extra_repr(self) -> str:
        return f"stride={self.stride}"


def shortcut(kind: str, n_in: int, n_out: int, stride: int, with_bn: bool) -> nn.Module:
    """Port of ``shortcut(nInputPlane, nOutputPlane, stride)``: a 1x1 convolution (+ BN when ``with_bn``)
    for type C, or B when the channel count changes; the zero-padded identity (type A, and any other
    string) when it changes otherwise; else the identity."""
    use_conv = kind == "C" or (kind == "B" and n_in != n_out)
    if use_conv:
        layers = [("conv", conv(n_in, n_out, 1, stride))]
        if with_bn:
            layers.append(("bn", batchnorm(n_out)))
        return nn.Sequential(OrderedDict(layers))
    if n_in != n_out:
        if n_out != 2 * n_in:
            raise UserError(
                f"shortcutType {kind or repr(kind)} (zero-padded identity) can only double the channels, "
                f"but a block goes from {n_in} to {n_out} channels (ImageNet bottleneck nets): "
                f"use -shortcutType B or C")
        return ZeroPadShortcut(stride)
    return nn.Identity()


class Residual(nn.Module):
    """One residual block: ``Sequential{[preact...], ConcatTable{branch, shortcut}, CAddTable(true), [ReLU]}``.

    ``preact`` (pre-activation ResNet 'both_preact' blocks) runs before the split so both paths see it;
    ``post_relu`` is the ReLU after the addition of the original ResNet.
    """

    def __init__(self, branch: nn.Sequential, shortcut: nn.Module, preact: nn.Sequential | None = None,
                 post_relu: bool = False) -> None:
        super().__init__()
        self.preact = preact
        self.branch = branch
        self.shortcut = shortcut
        self.relu = ReLU() if post_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preact is not None:
            x = self.preact(x)
        out = self.branch(x) + self.shortcut(x)
        if self.relu is not None:
            out = self.relu(out)
        return out

    def to_lua(self) -> t7.TorchObject:
        mods = [lua_nn.to_lua(m) for m in self.preact] if self.preact is not None else []
        train = self.training
        mods.append(lua_nn.lua_module("nn.ConcatTable", train=train, output=t7.LuaTable(), modules=t7.LuaList(
            [lua_nn.to_lua(self.branch), lua_nn.to_lua(self.shortcut)])))
        mods.append(lua_nn.lua_module("nn.CAddTable", train=train, gradInput=t7.LuaTable(), inplace=True))
        if self.relu is not None:
            mods.append(lua_nn.to_lua(self.relu))
        return lua_nn.lua_module("nn.Sequential", train=train, modules=t7.LuaList(mods))


class View(nn.Module):
    """``nn.View(n):setNumInputDims(3)``: N x C x 1 x 1 -> N x n."""

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = n_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.size(0), self.n_features)

    def to_lua(self) -> t7.TorchObject:
        return lua_nn.lua_module("nn.View", train=self.training, size=_long_storage([self.n_features]),
                                 numElements=self.n_features, numInputDims=3)

    def extra_repr(self) -> str:
        return f"{self.n_features}, numInputDims=3"


class ResNet(nn.Sequential):
    """A Lua ``nn.Sequential`` net with named children (``conv1``, ``layer1``, ..., ``fc``); the last child
    is always the ``nn.Linear`` classifier ``fc`` (see :func:`models.replace_classifier`)."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]", depth: int | float | None = None,
                 dataset: str | None = None) -> None:
        super().__init__(layers)
        self.depth = depth
        self.dataset = dataset

    def to_lua(self) -> t7.TorchObject:
        return lua_nn.lua_module("nn.Sequential", train=self.training,
                                 modules=t7.LuaList([lua_nn.to_lua(m) for m in self]))


def init_weights(model: nn.Module) -> None:
    """PARITY §2.5: conv weight ~ N(0, sqrt(2/(kW*kH*nOutputPlane))), BN weight 1 / bias 0, Linear bias 0
    (Linear weight keeps the default U(+-1/sqrt(in)), the same distribution as Lua's nn.Linear reset)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (kw * kh * m.out_channels)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


# ----------------------------------------------------------------------------------------------
# Whole nets

BlockFactory = Callable[[int, int, int, str], tuple[nn.Module, int]]


def make_layer(block: BlockFactory, n_in: int, features: int, count: int, stride: int,
               first_kind: str = "") -> tuple[nn.Sequential, int]:
    """Port of ``layer(block, features, count, stride)``: ``count`` blocks, the first with ``stride``
    (and ``first_kind``), the others with stride 1. Returns the stage and its output channels."""
    blocks = []
    for i in range(int(count)):
        b, n_in = block(n_in, features, stride if i == 0 else 1, first_kind if i == 0 else "")
        blocks.append(b)
    return nn.Sequential(*blocks), n_in


def net_config(opt: Any, imagenet_cfg: dict) -> tuple[str, int | float, tuple[int, ...], bool]:
    """Validate dataset/depth as resnet.lua and preresnet.lua do and print ``' | ResNet-<depth> <dataset>'``.

    Returns ``(dataset, depth, blocks per stage, bottleneck?)``.
    """
    dataset, depth = opt.dataset, opt.depth
    if dataset == "imagenet":
        if depth not in imagenet_cfg:
            depths = " | ".join(lua_number(d) for d in sorted(imagenet_cfg))
            raise UserError(f"Invalid depth: {lua_number(depth)} (ImageNet -depth: {depths})")
        stages, bottleneck = imagenet_cfg[depth]
    elif dataset in CIFAR_CLASSES:
        if (depth - 2) % 6 != 0:
            raise UserError(f"depth should be one of 20, 32, 44, 56, 110, 1202 (-depth {lua_number(depth)}: "
                            f"CIFAR ResNets have 6n+2 layers, e.g. 8, 14, 20, 32, 44, 56, 110)")
        n = int((depth - 2) // 6)
        stages, bottleneck = (n, n, n), False
    else:
        raise UserError(f"invalid dataset: {dataset}")
    print(f" | ResNet-{lua_number(depth)} {DATASET_NAMES[dataset]}")
    return dataset, depth, stages, bottleneck


def shortcut_kind(opt: Any) -> str:
    """``opt.shortcutType or 'B'`` (opts.lua has already turned '' into the dataset's default)."""
    kind = getattr(opt, "shortcutType", None)
    return "B" if kind is None else str(kind)


def head(n_features: int, n_classes: int, pool: int) -> list[tuple[str, nn.Module]]:
    """``Avg(pool, pool, 1, 1)``, ``nn.View(nF):setNumInputDims(3)``, ``nn.Linear(nF, nClasses)``."""
    return [("avgpool", nn.AvgPool2d(pool, stride=1)), ("view", View(n_features)),
            ("fc", nn.Linear(n_features, n_classes))]


def imagenet_stem() -> list[tuple[str, nn.Module]]:
    """Conv7x7(3->64, s2, p3), BN, ReLU, ``nn.SpatialMaxPooling(3,3,2,2,1,1)``."""
    return [("conv1", conv(3, 64, 7, 2, 3)), ("bn1", batchnorm(64)), ("relu", ReLU()),
            ("maxpool", nn.MaxPool2d(3, 2, 1))]


def n_classes(dataset: str) -> int:
    """Classifier width hard-coded per dataset (not ``-nClasses``)."""
    return CIFAR_CLASSES.get(dataset, 1000)


def create_model(opt: Any) -> ResNet:
    """Port of resnet.lua ``createModel(opt)`` (uses ``opt.dataset``, ``opt.depth``, ``opt.shortcutType``)."""
    dataset, depth, stages, bottleneck = net_config(opt, IMAGENET_CFG)
    kind = shortcut_kind(opt)

    def block(n_in: int, n: int, stride: int, _first: str) -> tuple[nn.Module, int]:
        if bottleneck:
            n_out = 4 * n
            branch = nn.Sequential(OrderedDict([
                ("conv1", conv(n_in, n, 1)), ("bn1", batchnorm(n)), ("relu1", ReLU()),
                ("conv2", conv(n, n, 3, stride, 1)), ("bn2", batchnorm(n)), ("relu2", ReLU()),
                ("conv3", conv(n, n_out, 1)), ("bn3", batchnorm(n_out))]))
        else:
            n_out = n
            branch = nn.Sequential(OrderedDict([
                ("conv1", conv(n_in, n, 3, stride, 1)), ("bn1", batchnorm(n)), ("relu1", ReLU()),
                ("conv2", conv(n, n, 3, 1, 1)), ("bn2", batchnorm(n))]))
        return Residual(branch, shortcut(kind, n_in, n_out, stride, with_bn=True), post_relu=True), n_out

    if dataset == "imagenet":
        layers = imagenet_stem()
        c, widths, strides, pool = 64, (64, 128, 256, 512), (1, 2, 2, 2), 7
    else:
        layers = [("conv1", conv(3, 16, 3, 1, 1)), ("bn1", batchnorm(16)), ("relu", ReLU())]
        c, widths, strides, pool = 16, (16, 32, 64), (1, 2, 2), 8
    for i, (width, count, stride) in enumerate(zip(widths, stages, strides), start=1):
        stage, c = make_layer(block, c, width, count, stride)
        layers.append((f"layer{i}", stage))
    n_features = 64 if dataset != "imagenet" else (2048 if bottleneck else 512)
    layers += head(n_features, n_classes(dataset), pool)
    model = ResNet(OrderedDict(layers), depth, dataset)
    init_weights(model)
    return model
