"""Pre-activation ResNet ("Identity Mappings in Deep Residual Networks"): native port of fb.resnet.torch
``models/preresnet.lua``.

Differences from :mod:`models.resnet`: BN+ReLU come before each convolution, there is no ReLU after the
addition, shortcuts of type B/C are a bare 1x1 convolution (no BN), the CIFAR stem is a single
convolution, the net ends with BN+ReLU, and ImageNet has a 200-layer configuration.
Block kinds (``layer`` gives a kind to the first block of each stage only):

* ``no_preact`` (first block of ImageNet stage 1): no BN/ReLU at all;
* ``both_preact`` (first block of every other stage, CIFAR stage 1 included): BN+ReLU before the split,
  so the shortcut sees the activated input too;
* default (other blocks): BN+ReLU open the residual branch; the shortcut sees the raw input.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

from torch import nn

from models.resnet import (IMAGENET_CFG, ResNet, Residual, batchnorm, conv, head, imagenet_stem, init_weights,
                           make_layer, n_classes, net_config, ReLU, shortcut, shortcut_kind)

__all__ = ["create_model"]

PREACT_IMAGENET_CFG = {**IMAGENET_CFG, 200: ((3, 24, 36, 3), True)}


def create_model(opt: Any) -> ResNet:
    """Port of preresnet.lua ``createModel(opt)`` (uses ``opt.dataset``, ``opt.depth``, ``opt.shortcutType``)."""
    dataset, depth, stages, bottleneck = net_config(opt, PREACT_IMAGENET_CFG)
    kind = shortcut_kind(opt)

    def block(n_in: int, n: int, stride: int, block_kind: str) -> tuple[nn.Module, int]:
        preact = None
        layers: list[tuple[str, nn.Module]] = []
        if block_kind == "both_preact":
            preact = nn.Sequential(OrderedDict([("bn", batchnorm(n_in)), ("relu", ReLU())]))
        elif block_kind != "no_preact":
            layers += [("bn0", batchnorm(n_in)), ("relu0", ReLU())]
        if bottleneck:
            n_out = 4 * n
            layers += [("conv1", conv(n_in, n, 1)), ("bn1", batchnorm(n)), ("relu1", ReLU()),
                       ("conv2", conv(n, n, 3, stride, 1)), ("bn2", batchnorm(n)), ("relu2", ReLU()),
                       ("conv3", conv(n, n_out, 1))]
        else:
            n_out = n
            layers += [("conv1", conv(n_in, n, 3, stride, 1)), ("bn1", batchnorm(n)), ("relu1", ReLU()),
                       ("conv2", conv(n, n, 3, 1, 1))]
        branch = nn.Sequential(OrderedDict(layers))
        return Residual(branch, shortcut(kind, n_in, n_out, stride, with_bn=False), preact=preact), n_out

    if dataset == "imagenet":
        layers = imagenet_stem()
        c, widths, strides, pool = 64, (64, 128, 256, 512), (1, 2, 2, 2), 7
        first_kinds = ("no_preact", "both_preact", "both_preact", "both_preact")
    else:
        layers = [("conv1", conv(3, 16, 3, 1, 1))]
        c, widths, strides, pool = 16, (16, 32, 64), (1, 2, 2), 8
        first_kinds = ("both_preact",) * 3
    for i, (width, count, stride, first) in enumerate(zip(widths, stages, strides, first_kinds), start=1):
        stage, c = make_layer(block, c, width, count, stride, first)
        layers.append((f"layer{i}", stage))
    layers += [("bn", batchnorm(c)), ("relu", ReLU())]
    n_features = 64 if dataset != "imagenet" else (2048 if bottleneck else 512)
    layers += head(n_features, n_classes(dataset), pool)
    model = ResNet(OrderedDict(layers), depth, dataset)
    init_weights(model)
    return model
