"""torchvision weights both ways (models/torchvision_weights.py), against torchvision's own models.

Ground truth: torchvision's ``densenet121/169/201/161`` and ``resnet18..152`` built with random weights (no
download) and random BatchNorm statistics; the native model built from the matching flags must give the same
float64 outputs once the state dict is loaded, and export the same state dict back.
"""
from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import pytest
import torch
from torch import nn

import models
from fbresnet_port import opts
from fbresnet_port.errors import UserError
from models import torchvision_weights as tw


def _flags(arch: str) -> list[str]:
    f = tw.ARCHITECTURES[arch]
    flags = ["-netType", f["netType"], "-dataset", "imagenet", "-depth", str(f["depth"])]
    if "growthRate" in f:
        flags += ["-growthRate", str(f["growthRate"])]
    return flags


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics (torchvision's init leaves BN at 1/0/0/1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    return model


def _native(flags: list[str]) -> nn.Module:
    with contextlib.redirect_stdout(io.StringIO()):
        return models.create(opts.parse(flags, check_dirs=False))


@pytest.mark.parametrize("arch", list(tw.ARCHITECTURES))
def test_torchvision_round_trip(arch):
    torch.manual_seed(0)
    reference = _randomise(tw.torchvision_model(arch), 1).double().eval()
    state = reference.state_dict()
    opt = opts.parse(_flags(arch), check_dirs=False)
    assert tw.arch_for(opt) == arch
    native = tw.load_torchvision_state_dict(_native(_flags(arch)), state, arch).double().eval()
    x = torch.randn(1, 3, 224, 224, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, got = reference(x), native(x)
    assert (got - expected).abs().max().item() <= 1e-10 * expected.abs().max().item()
    back = tw.to_torchvision_state_dict(native, arch)
    assert back.keys() == state.keys()
    for key, value in state.items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(back[key].double(), value), key


def test_legacy_densenet_keys_and_module_prefix_are_accepted():
    reference = _randomise(tw.torchvision_model("densenet121"), 3).eval()
    legacy = {}
    for key, value in reference.state_dict().items():  # the first published checkpoints: 'norm.1', from DataParallel
        for part in ("norm1", "norm2", "conv1", "conv2"):
            key = key.replace(f".{part}.", f".{part[:-1]}.{part[-1]}.") if "denselayer" in key else key
        legacy["module." + key] = value
    native = tw.load_torchvision_state_dict(_native(_flags("densenet121")), legacy, "densenet121")
    assert torch.equal(native.classifier.weight, reference.classifier.weight)
    assert torch.equal(native.features.norm_final.running_var, reference.features.norm5.running_var)


def test_wrong_architecture_is_a_clear_error():
    state = tw.torchvision_model("resnet18").state_dict()
    with pytest.raises(UserError, match="not a torchvision resnet34 state dict.*missing layer1.2"):
        tw.load_torchvision_state_dict(_native(_flags("resnet34")), state, "resnet34")
    with pytest.raises(UserError, match="no torchvision counterpart"):
        tw.arch_for(opts.parse(["-netType", "densenet", "-dataset", "imagenet", "-depth", "121", "-growthRate", "12"], check_dirs=False))
    with pytest.raises(UserError, match="no torchvision counterpart"):
        tw.arch_for(opts.parse(["-netType", "resnet", "-dataset", "cifar10", "-depth", "20"], check_dirs=False))


def test_retrain_pth_through_models_setup(tmp_path, capsys):
    reference = _randomise(tw.torchvision_model("resnet18"), 4).eval()
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": reference.state_dict(), "epoch": 3}, path)
    model, _ = models.setup(opts.parse(_flags("resnet18") + ["-retrain", str(path)], check_dirs=False))
    assert "Loading torchvision resnet18 weights" in capsys.readouterr().out
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), reference(x), atol=1e-4, rtol=1e-4)

    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError, match="-retrain .*list.pth holds a list, not a state dict"):
        models.setup(opts.parse(_flags("resnet18") + ["-retrain", str(tmp_path / "list.pth")], check_dirs=False))
    with pytest.raises(UserError, match="no torchvision counterpart"):
        models.setup(opts.parse(["-netType", "resnet", "-dataset", "cifar10", "-depth", "20", "-retrain", str(path)], check_dirs=False))
