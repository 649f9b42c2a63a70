"""Running a ``convert --format python`` model the way its user would: in a fresh ``python -I`` process started in
another folder, where ``fbresnet_port`` (and this repository's ``models``/``datasets``) cannot be imported.

:func:`export` writes ``model.py`` and ``model.pth`` for a converted module; :func:`run_isolated` runs a list of
jobs on them in one subprocess and returns what each computed (outputs, input and parameter gradients, parameters
after one SGD step, BatchNorm running statistics), for the tests to compare with the Lua fixtures.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from fbresnet_port.lua_nn.codegen import write_python

# Modules a generated file may import: torch and the standard library.
_ALLOWED_TOP = {"torch"} | set(sys.stdlib_module_names)

_DRIVER = r'''
import importlib.abc, importlib.util, sys
import torch

class _Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fbresnet_port", "models", "datasets"):
            raise ImportError(f"the generated model imports {name}")
        return None

sys.meta_path.insert(0, _Blocked())
spec = importlib.util.spec_from_file_location("generated_model", sys.argv[1] + "/model.py")
generated = importlib.util.module_from_spec(spec)
spec.loader.exec_module(generated)

def tree(fn, x):
    return [tree(fn, v) for v in x] if isinstance(x, (list, tuple)) else fn(x)

def leaves(x):
    if isinstance(x, (list, tuple)):
        for v in x:
            yield from leaves(v)
    else:
        yield x

results = []
for job in torch.load(sys.argv[2], weights_only=False):
    torch.manual_seed(job.get("seed", 0))
    model = generated.load(job.get("weights"))
    dtype = getattr(torch, job.get("dtype", "float32"))
    model = model.to(dtype)
    model.train(job.get("train", False))
    want_grad = job.get("grad_output") is not None or job.get("sgd") is not None
    x = tree(lambda t: t.to(dtype).requires_grad_(want_grad) if t.is_floating_point() else t.clone(), job["input"])
    args = (x,) if job.get("target") is None else (x, job["target"])
    res = {"class": type(model).__name__, "params": [tuple(p.shape) for p in model.parameters()]}
    if job.get("sgd") is not None:
        sgd = job["sgd"]
        opt = torch.optim.SGD(model.parameters(), lr=sgd["lr"], momentum=sgd["momentum"], dampening=0,
                              nesterov=sgd["nesterov"], weight_decay=sgd["weight_decay"])
        out = model(*args)
        loss = torch.nn.functional.cross_entropy(out, job["sgd_targets"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        res["loss"] = loss.item()
        res["params_after_step"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        results.append(res)
        continue
    with torch.set_grad_enabled(want_grad):
        if job.get("per_step"):  # a module called once per time step (rnn's Recursor, LSTM): x is the list of steps
            out = [model(step) for step in x]
        else:
            out = model(*args)
    res["output"] = tree(lambda t: t.detach().clone(), out)
    res["running_stats"] = [(m.running_mean.clone(), m.running_var.clone()) for m in model.modules()
                            if isinstance(getattr(m, "running_mean", None), torch.Tensor)]
    if job.get("grad_output") is not None:
        outs = [t for t in leaves(out)]
        grads = [g.to(dtype) for g in leaves(job["grad_output"])]
        torch.autograd.backward(outs, grads)
        res["grad_input"] = [t.grad.clone() if t.is_floating_point() and t.grad is not None
                             else torch.zeros_like(t) for t in leaves(x)]
        ps = list(model.parameters())
        res["grad_params"] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                                        for p in ps]) if ps else torch.zeros(0, dtype=dtype)
    results.append(res)
torch.save(results, sys.argv[3])
'''


def export(model: torch.nn.Module, out_dir: Path, class_name: str = "LuaModel") -> Path:
    """``model.py`` + ``model.pth`` of ``model`` in ``out_dir``; checks that the file imports only torch and the
    standard library and that it compiles."""
    write_python(model, out_dir, class_name=class_name, source_name="model.t7")
    check_imports(out_dir / "model.py")
    return out_dir


def check_imports(path: Path) -> None:
    """Every import of the generated file is torch or the standard library; it compiles; lines <= 120."""
    text = path.read_text()
    tree = ast.parse(text)
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names = [node.module or ""]
        for name in names:
            assert name.split(".")[0] in _ALLOWED_TOP, f"{path}: imports {name}"
    compile(text, str(path), "exec")
    long = [i + 1 for i, line in enumerate(text.splitlines()) if len(line) > 120]
    assert not long, f"{path}: lines longer than 120 characters: {long[:5]}"


def plain(x: Any) -> Any:
    """Lua values as plain Python (t7.LuaList -> list, LuaTable -> dict), so that a process without fbresnet_port
    unpickles them."""
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if isinstance(x, dict):
        return {k: plain(v) for k, v in x.items()}
    return x


def run_isolated(out_dir: Path, jobs: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` on the generated model in ``out_dir`` in a fresh ``python -I`` started in ``tmp`` (not the
    repository), where importing fbresnet_port fails. A job: ``input`` (a tensor or nested list), ``dtype``
    ('float32'/'float64'), ``train`` (bool), optional ``grad_output`` (gradients of the outputs), ``target`` (a
    criterion's second argument), ``sgd`` ({lr, momentum, nesterov, weight_decay} with ``sgd_targets``: one
    torch.optim.SGD step on the cross-entropy loss), ``weights`` (another model.pth), ``seed``, ``per_step`` (the
    model is called once per element of ``input``, as Lua's step-by-step recurrent modules)."""
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "driver.py").write_text(_DRIVER)
    torch.save(plain(jobs), tmp / "jobs.pt")
    proc = subprocess.run([sys.executable, "-I", str(tmp / "driver.py"), str(out_dir), str(tmp / "jobs.pt"),
                           str(tmp / "results.pt")], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"generated model failed:\n{proc.stderr[-4000:]}"
    return torch.load(tmp / "results.pt", weights_only=False)


def check_zoo_case(group: str, case: str, tmp_path: Path) -> str:
    """A ``zoo_*`` fixture case through ``--format python``: the generated model, run in a fresh process without
    this package, gives Lua's outputs (float32 1e-4, float64 1e-6) and gradients (gradInput_f64, gradParams_f64);
    returns the generated source."""
    from fbresnet_port.lua_nn import from_lua
    from zoo_fixtures import compare_case, lua_file

    model = from_lua(lua_file(group, case, "model.t7"))
    out_dir = export(model, tmp_path / "out", class_name="Zoo" + "".join(w.title() for w in case.split("_")))
    x = lua_file(group, case, "input.t7")
    eval32, eval64 = run_isolated(out_dir, [
        dict(input=x, dtype="float32", train=False),
        dict(input=x, dtype="float64", train=False, grad_output=lua_file(group, case, "gradOutput.t7"))],
        tmp_path / "run")
    compare_case(group, case, eval64["params"], eval32["output"], eval64["output"], eval64["grad_input"],
                 eval64["grad_params"])
    return (out_dir / "model.py").read_text()
