"""Checking a converted Lua ``zoo_*`` fixture case (../shared/reference/<group>/<case>/) against the Lua
results: evaluate output in float32 and float64, gradInput and the flat gradient of the parameters (Lua
``model:parameters()`` order) in float64 for the stored gradOutput, and the parameter shapes.

Inputs, outputs and gradients may be nested tables (Python lists). Index and mask inputs keep their
integer type; Lua's gradInput for them is a zero tensor, and PyTorch gives them no gradient.
"""
from __future__ import annotations

import functools
import json
from typing import Any, Callable, Iterator

import torch

from conftest import REFERENCE_DIR, reference
from fbresnet_port import t7
from fbresnet_port.lua_nn import from_lua, to_lua


@functools.lru_cache(maxsize=None)
def lua_file(*parts: str) -> Any:
    """``t7.load`` of a fixture file, read once per test session."""
    return t7.load(reference(*parts))


def manifest(group: str, case: str) -> dict:
    return json.loads(reference(group, case, "manifest.json").read_text())


def case_names(group: str, key: str = "cases") -> list[str]:
    """The case names in a group's manifest (``key``: its list of cases), read when tests are collected;
    ``['missing-fixtures']`` without the folder, so that the test skips (fails under CI) naming it."""
    path = REFERENCE_DIR / group / "manifest.json"
    if not path.exists():
        return ["missing-fixtures"]
    return [c["name"] for c in json.loads(path.read_text())[key]]


def tree_map(fn: Callable[[torch.Tensor], Any], x: Any) -> Any:
    """``fn`` applied to every tensor of a nested list."""
    return [tree_map(fn, v) for v in x] if isinstance(x, (list, tuple)) else fn(x)


def leaves(x: Any) -> Iterator[torch.Tensor]:
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from leaves(v)
    else:
        yield x


def max_abs(x: Any) -> float:
    """The largest magnitude over the tensors of a nested list."""
    return max((t.double().abs().max().item() for t in leaves(x) if t.numel()), default=0.0)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, what: str,
                 scale: float | None = None) -> float:
    """Max error <= rtol * scale (default max|expected|); returns the error relative to the scale."""
    assert tuple(actual.shape) == tuple(expected.shape), \
        f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    scale = max(max_abs(expected) if scale is None else scale, 1e-30)
    err = (actual.double() - expected.double()).abs().max().item() if expected.numel() else 0.0
    assert err <= rtol * scale, f"{what}: max error {err:.3g} > {rtol} * max|ref| ({scale:.3g})"
    return err / scale


def assert_tree_close(actual: Any, expected: Any, rtol: float, what: str) -> None:
    """Same table structure; tensor by tensor, against the largest magnitude of the whole reference table."""
    assert isinstance(actual, (list, tuple)) == isinstance(expected, (list, tuple)), f"{what}: table vs tensor"
    got, ref = list(leaves(actual)), list(leaves(expected))
    assert len(got) == len(ref), f"{what}: {len(got)} tensors, Lua has {len(ref)}"
    for i, (a, e) in enumerate(zip(got, ref)):
        assert_close(a, e, rtol, f"{what}[{i}]", max_abs(expected))


def check_case(group: str, case: str) -> None:
    """Every check of one fixture case (tolerances: 1e-4 float32, 1e-6 float64, relative to max|ref|)."""
    lua = lua_file(group, case, "model.t7")
    x = lua_file(group, case, "input.t7")

    model = from_lua(lua).eval()
    with torch.no_grad():
        out32 = model(x)

    model = from_lua(lua).double().eval()
    x64 = tree_map(lambda t: t.double().requires_grad_(True) if t.is_floating_point() else t.clone(), x)
    out = model(x64)
    grad_out = tree_map(torch.Tensor.double, lua_file(group, case, "gradOutput.t7"))
    torch.autograd.backward(list(leaves(out)), list(leaves(grad_out)))
    grad_in = [leaf.grad if leaf.is_floating_point() and leaf.grad is not None else torch.zeros_like(leaf)
               for leaf in leaves(x64)]
    params = list(model.parameters())
    flat = torch.cat([p.grad.reshape(-1) for p in params]) if params else torch.zeros(0, dtype=torch.float64)
    compare_case(group, case, [tuple(p.shape) for p in params], out32,
                 out.detach() if isinstance(out, torch.Tensor) else tree_map(torch.Tensor.detach, out), grad_in, flat)


def compare_case(group: str, case: str, param_shapes: list[tuple[int, ...]], out32: Any, out64: Any,
                 grad_in: list[torch.Tensor], grad_params: torch.Tensor) -> None:
    """A model's results on a fixture case against Lua's: parameter shapes (Lua order), the evaluate output in
    float32 (1e-4) and float64 (1e-6), and in float64 the input gradient (index inputs: Lua's zeros) and the flat
    parameter gradient for the stored gradOutput (1e-6), relative to the largest magnitude of the reference."""
    info = manifest(group, case)
    assert param_shapes == [tuple(s["shape"]) for s in info["param_shapes"]]
    assert all(t.dtype == torch.float32 for t in leaves(out32))
    assert_tree_close(out32, lua_file(group, case, "output_eval.t7"), 1e-4, f"{case} output_eval")
    assert_tree_close(out64, lua_file(group, case, "output_eval_f64.t7"), 1e-6, f"{case} output_eval_f64")
    ref_grad_in = list(leaves(lua_file(group, case, "gradInput_f64.t7")))
    scale = max_abs([t for t in ref_grad_in if t.is_floating_point()])
    assert len(grad_in) == len(ref_grad_in)
    for i, (grad, ref) in enumerate(zip(grad_in, ref_grad_in)):
        if grad.is_floating_point():
            assert_close(grad, ref, 1e-6, f"{case} gradInput_f64[{i}]", scale)
        else:  # an index / mask input: Lua returns zeros
            assert not ref.double().abs().sum().item(), f"{case}: Lua's gradInput[{i}] of an index is not zero"
    assert_close(grad_params, lua_file(group, case, "gradParams_f64.t7").double(), 1e-6, f"{case} gradParams_f64")


def check_round_trip(group: str, case: str, tmp_path: Any) -> None:
    """to_lua -> t7.save -> t7.load -> from_lua computes Lua's float32 evaluate output again (1e-4 of each
    output tensor's largest magnitude)."""
    path = tmp_path / "m.t7"
    t7.save(path, to_lua(from_lua(lua_file(group, case, "model.t7"))))
    model = from_lua(t7.load(path)).eval()
    with torch.no_grad():
        out = model(lua_file(group, case, "input.t7"))
    got, ref = list(leaves(out)), list(leaves(lua_file(group, case, "output_eval.t7")))
    assert len(got) == len(ref), f"{case}: {len(got)} outputs, Lua has {len(ref)}"
    for a, e in zip(got, ref):
        assert (a - e).abs().max() <= 1e-4 * e.abs().max()
