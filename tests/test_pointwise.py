"""models/pointwise.py: the 1x1 convolution as a batched matrix product equals nn.Conv2d."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from models.pointwise import Conv2d, is_pointwise


def _pair(c_in: int, c_out: int, kernel: int = 1, **kw):
    torch.manual_seed(0)
    ref = nn.Conv2d(c_in, c_out, kernel, bias=False, **kw).double()
    fast = Conv2d(c_in, c_out, kernel, bias=False, **kw).double()
    fast.weight.data.copy_(ref.weight.data)
    return ref, fast


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (1, 7, 1, 1), (2, 5, 3, 3)])
def test_matches_conv2d_forward_and_backward(shape):
    ref, fast = _pair(shape[1], 4)
    x = torch.randn(shape, dtype=torch.float64)
    outs, grads = [], []
    for m in (ref, fast):
        xi = x.clone().requires_grad_()
        out = m(xi)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out).sin())
        outs.append(out.detach())
        grads.append((xi.grad, m.weight.grad))
    assert torch.allclose(outs[0], outs[1], rtol=0, atol=1e-12)
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_gradcheck_and_non_contiguous_input():
    _, fast = _pair(3, 2)
    x = torch.randn(2, 4, 5, 3, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()  # channels last view
    assert torch.autograd.gradcheck(fast, (x,))


def test_other_convolutions_keep_the_library_kernel():
    assert not is_pointwise(Conv2d(3, 4, 3, padding=1, bias=False))
    assert not is_pointwise(Conv2d(3, 4, 1, stride=2, bias=False))
    assert not is_pointwise(Conv2d(3, 4, 1, bias=True))
    ref, fast = _pair(3, 4, 1, stride=2)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    assert torch.equal(ref(x), fast(x))


def test_bfloat16_autocast_runs_in_bfloat16_with_float32_weight_grad():
    ref, fast = _pair(6, 5)
    fast.float()
    x = torch.randn(2, 6, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fast(x)
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert fast.weight.grad.dtype == torch.float32
    expected = ref(x.double()).float()
    assert (out.float() - expected).abs().max() < 0.05 * expected.abs().max()
