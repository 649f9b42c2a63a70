"""Malformed Lua models (issue #15): seeded structural edits of the Lua-made fixture models must give a clear
project error (LuaModelError at conversion, a UserError such as LuaForwardError at forward), never a raw
Python/torch exception, and no conversion may allocate much more memory than the file's own tensors.

The mutator is deterministic (``random.Random(seed)``): fields deleted or set to nil, NaN, inf, -1, 0, 2^40,
2.5, true, a string, a table, a tensor of the wrong shape, an integer or boolean dtype, an empty tensor;
two modules of a container swapped; a container holding itself or an ancestor; ``modules`` a number, a
boolean, an nn object; nngraph nodes removed or duplicated, ``mapindex``/``children`` entries pointed elsewhere,
``outnode = innode``, ``selectindex`` 2.5 / 0 / too large; lists of saved states (rnn) one entry short or long.
Each edit is made in place on the loaded file and undone afterwards. Then one exact error per class of invalid
model that issue #15 names (sizes of 2^40, NaN/true/negative geometry, integer or empty weights, weights of another
shape, BatchNorm/Linear vector lengths, groups, ``modules`` of the wrong type, cycles, chains that do not fit,
nngraph outnode = innode and fractional selectindex, Sum without dimension, View size inf, SelectTable 2.5).

Run as a script for a larger report: ``python3 tests/test_lua_mutations.py [--n 750] [--seed 15]``.
"""
from __future__ import annotations

import math
import random
import re
import resource
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import MODEL_CASES, REFERENCE_DIR  # noqa: E402
from fbresnet_port import t7  # noqa: E402
from fbresnet_port.errors import UserError  # noqa: E402
from fbresnet_port.lua_nn import LuaModelError, from_lua, lua_module  # noqa: E402

MB = 2 ** 20
# fields that no converter reads (Lua's buffers of the last pass): edits there are uninteresting
_SKIPPED_FIELDS = {"output", "gradInput", "gradWeight", "gradBias", "_type", "annotations", "forwardNodeId",
                   "visited", "marked", "_input", "_gradOutput"}


# ----------------------------------------------------------------------------------------------
# Fixture models
# ----------------------------------------------------------------------------------------------

@dataclass
class Case:
    """One fixture model: its file, the input (and the target of a criterion)."""

    name: str
    model: Path
    input: Path
    target: Path | None = None
    _cache: dict = field(default_factory=dict)

    def load(self) -> tuple[Any, Any, Any]:
        """(Lua object, input, target), loaded once; the Lua object is edited in place and restored."""
        if not self._cache:
            self._cache["obj"] = t7.load(self.model)
            self._cache["input"] = t7.load(self.input)
            self._cache["target"] = t7.load(self.target) if self.target else None
        return self._cache["obj"], self._cache["input"], self._cache["target"]


def fixture_cases() -> list[Case]:
    """Every model file of the fixtures: the MODEL_CASES and each zoo_* case (criterions with their target)."""
    ref = REFERENCE_DIR
    cases = [Case(c, ref / c / "model.t7", ref / c / "input.t7") for c in MODEL_CASES]
    for group in sorted(p for p in ref.glob("zoo_*") if p.is_dir()):
        if (group / "model.t7").exists():
            cases.append(Case(group.name, group / "model.t7", group / "input.t7"))
        for sub in sorted(p for p in group.iterdir() if p.is_dir() and (p / "model.t7").exists()):
            cases.append(Case(f"{group.name}/{sub.name}", sub / "model.t7", sub / "input.t7"))
        for crit in sorted(group.glob("*_criterion.t7")):
            stem = crit.name[:-len("_criterion.t7")]
            cases.append(Case(f"{group.name}/{stem}", crit, group / f"{stem}_input.t7",
                              group / f"{stem}_target.t7"))
    return [c for c in cases if c.model.exists() and c.input.exists()]


# ----------------------------------------------------------------------------------------------
# Edit sites
# ----------------------------------------------------------------------------------------------

@dataclass
class Site:
    """A place to edit: ``holder[key]`` (a field table, a Lua table or list), with the path and the nn objects
    above it (outermost first)."""

    holder: Any
    key: Any
    path: str
    ancestors: list


def _children(x: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(x, t7.TorchObject):
        x = x.fields
    if isinstance(x, dict):
        yield from list(x.items())
    elif isinstance(x, list):
        yield from enumerate(x)


def sites(obj: Any) -> list[Site]:
    """Every editable entry of the tree (each table once), depth first."""
    found: list[Site] = []
    seen: set[int] = set()

    def walk(x: Any, path: str, ancestors: list) -> None:
        if id(x) in seen or not isinstance(x, (t7.TorchObject, dict, list)):
            return
        seen.add(id(x))
        if isinstance(x, t7.TorchObject):
            ancestors = ancestors + [x]
        holder = x.fields if isinstance(x, t7.TorchObject) else x
        for key, value in _children(x):
            if isinstance(key, t7.IdKey) or key in _SKIPPED_FIELDS:
                continue
            label = f"{path}[{key + 1}]" if isinstance(holder, list) else f"{path}.{key}"
            found.append(Site(holder, key, label, ancestors))
            walk(value, label, ancestors)

    walk(obj, "model", [])
    return found


def tensor_bytes(obj: Any) -> int:
    """Bytes of the distinct storages of the tensors in the tree (what the file holds)."""
    storages: dict[int, int] = {}
    seen: set[int] = set()
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, torch.Tensor):
            s = x.untyped_storage()
            storages[s.data_ptr()] = s.nbytes()
        elif isinstance(x, t7.Storage):
            stack.append(x.tensor)
        elif isinstance(x, (t7.TorchObject, dict, list)) and id(x) not in seen:
            seen.add(id(x))
            stack.extend(v for _, v in _children(x))
    return sum(storages.values())


# ----------------------------------------------------------------------------------------------
# Mutations
# ----------------------------------------------------------------------------------------------

_DELETE = object()
Undo = Callable[[], None]


def _set(holder: Any, key: Any, value: Any) -> Undo:
    """``holder[key] = value`` (``_DELETE``: remove the entry), returning its undo."""
    if isinstance(holder, list):
        old = holder[key]
        if value is _DELETE:
            del holder[key]
            return lambda: holder.insert(key, old)
        holder[key] = value
        return lambda: holder.__setitem__(key, old)
    had, old = key in holder, holder.get(key)
    if value is _DELETE:
        holder.pop(key, None)
    else:
        holder[key] = value

    def undo() -> None:
        if had:
            holder[key] = old
        else:
            holder.pop(key, None)
    return undo


def _wrong_values(value: Any, rng: random.Random) -> list[tuple[str, Any]]:
    """The corrupted values tried for an entry holding ``value``."""
    out: list[tuple[str, Any]] = [("delete", _DELETE), ("nil", None), ("NaN", math.nan), ("inf", math.inf),
                                  ("-1", -1), ("0", 0), ("2^40", float(2 ** 40)), ("2.5", 2.5), ("true", True),
                                  ("a string", "oops"), ("a table", t7.LuaTable({1: 2.0, "x": 3})),
                                  ("an empty table", t7.LuaTable())]
    if isinstance(value, t7.Storage):
        value = value.tensor
    if isinstance(value, torch.Tensor):
        out += [("an empty tensor", value.new_empty(0)), ("int64 dtype", value.long()),
                ("bool dtype", value != 0)]
        if value.dim() >= 1 and value.numel() > 0:
            bigger = list(value.shape)
            bigger[rng.randrange(len(bigger))] += 1
            out += [("wrong shape (+1)", torch.zeros(bigger, dtype=value.dtype)),
                    ("flattened", value.reshape(-1).clone()),
                    ("one element", value.reshape(-1)[:1].clone())]
            if value.dim() >= 2:
                out.append(("dims swapped", value.transpose(0, 1).contiguous()))
        if value.dim() == 1 and value.numel() > 1:
            out.append(("one short", value[:-1].clone()))
    return out


@dataclass
class Mutation:
    kind: str
    path: str
    apply: Callable[[], Undo]


def _module_lists(all_sites: list[Site]) -> list[Site]:
    return [s for s in all_sites if isinstance(s.holder, dict) and s.key == "modules"
            and isinstance(s.holder[s.key], (list, dict))]


def mutations(obj: Any, rng: random.Random) -> list[Mutation]:
    """Candidate mutations of one model (several kinds; the caller samples among them)."""
    all_sites = sites(obj)
    out: list[Mutation] = []
    for s in all_sites:
        for label, value in _wrong_values(s.holder[s.key], rng):
            out.append(Mutation(f"field = {label}", s.path,
                                lambda s=s, v=value: _set(s.holder, s.key, v)))
    nn_objects = [s.holder[s.key] for s in all_sites if isinstance(s.holder[s.key], t7.TorchObject)]
    for s in _module_lists(all_sites):
        mods = s.holder[s.key]
        n = len(mods) if isinstance(mods, list) else sum(isinstance(k, int) for k in mods)
        if n >= 2 and isinstance(mods, list):
            i, j = rng.sample(range(n), 2)
            out.append(Mutation(f"swap modules[{i + 1}] and modules[{j + 1}]", s.path,
                                lambda m=mods, i=i, j=j: _swap(m, i, j)))
        if n >= 1 and isinstance(mods, list):
            i = rng.randrange(n)
            owner = s.ancestors[-1]
            out.append(Mutation(f"modules[{i + 1}] = the container itself", s.path,
                                lambda m=mods, i=i, o=owner: _set(m, i, o)))
            if len(s.ancestors) >= 2:
                anc = rng.choice(s.ancestors[:-1])
                out.append(Mutation(f"modules[{i + 1}] = an ancestor ({anc.typename})", s.path,
                                    lambda m=mods, i=i, a=anc: _set(m, i, a)))
            out.append(Mutation(f"remove modules[{i + 1}]", s.path, lambda m=mods, i=i: _set(m, i, _DELETE)))
            out.append(Mutation(f"duplicate modules[{i + 1}]", s.path, lambda m=mods, i=i: _insert(m, i, m[i])))
        for label, value in (("3", 3), ("true", True), ("an nn object", rng.choice(nn_objects)), ("a string", "x")):
            out.append(Mutation(f"modules = {label}", s.path, lambda s=s, v=value: _set(s.holder, s.key, v)))
    out += _graph_mutations(all_sites, rng)
    out += _list_mutations(all_sites, rng)
    return out


def _swap(items: list, i: int, j: int) -> Undo:
    def swap() -> None:
        items[i], items[j] = items[j], items[i]
    swap()
    return swap


def _insert(items: list, i: int, value: Any) -> Undo:
    items.insert(i, value)

    def undo() -> None:
        del items[i]
    return undo


def _graph_mutations(all_sites: list[Site], rng: random.Random) -> list[Mutation]:
    """nngraph edits: nodes removed/duplicated, edges pointed elsewhere, outnode = innode, odd selectindex."""
    out: list[Mutation] = []
    graphs = [s.holder[s.key] for s in all_sites if isinstance(s.holder[s.key], t7.TorchObject)
              and s.holder[s.key].typename == "nn.gModule"]
    for s in all_sites:  # the root may be a gModule too
        if s.ancestors and s.ancestors[0].typename == "nn.gModule" and s.ancestors[0] not in graphs:
            graphs.append(s.ancestors[0])
    for g in graphs:
        fields = g.fields
        nodes = fields.get("forwardnodes")
        path = f"{g.typename}.forwardnodes"
        if isinstance(nodes, list) and nodes:
            i = rng.randrange(len(nodes))
            out.append(Mutation(f"remove forwardnodes[{i + 1}]", path, lambda n=nodes, i=i: _set(n, i, _DELETE)))
            out.append(Mutation(f"duplicate forwardnodes[{i + 1}]", path, lambda n=nodes, i=i: _insert(n, i, n[i])))
            if len(nodes) >= 2:
                i, j = rng.sample(range(len(nodes)), 2)
                out.append(Mutation(f"swap forwardnodes[{i + 1}] and [{j + 1}]", path,
                                    lambda n=nodes, i=i, j=j: _swap(n, i, j)))
            if "innode" in fields:
                out.append(Mutation("outnode = innode", path,
                                    lambda f=fields: _set(f, "outnode", f["innode"])))
            datas = [n.fields.get("data") for n in nodes if isinstance(n, t7.TorchObject)]
            datas = [d for d in datas if isinstance(d, dict)]
            for d in datas:
                mi = d.get("mapindex")
                if isinstance(mi, dict) and 1 in mi and len(datas) >= 2:
                    other = rng.choice([x for x in datas if x is not mi[1]] or datas)
                    out.append(Mutation("mapindex[1] = another node's data", path,
                                        lambda mi=mi, o=other: _set(mi, 1, o)))
                for value in (2.5, 0, 99, -1, math.nan):
                    out.append(Mutation(f"selectindex = {value}", path,
                                        lambda d=d, v=value: _set(d, "selectindex", v)))
                if "nSplitOutputs" in d:
                    out.append(Mutation("nSplitOutputs = 99", path, lambda d=d: _set(d, "nSplitOutputs", 99)))
            for n in nodes:
                ch = n.fields.get("children") if isinstance(n, t7.TorchObject) else None
                if isinstance(ch, dict) and 1 in ch:
                    other = rng.choice(nodes)
                    out.append(Mutation("children[1] = another node", path, lambda c=ch, o=other: _set(c, 1, o)))
                    out.append(Mutation("children[1] removed", path, lambda c=ch: _set(c, 1, _DELETE)))
    return out


def _list_mutations(all_sites: list[Site], rng: random.Random) -> list[Mutation]:
    """Lists of tensors (saved recurrent states, sizes) one entry short or one too many."""
    out: list[Mutation] = []
    for s in all_sites:
        v = s.holder[s.key]
        if isinstance(v, list) and v and all(isinstance(x, torch.Tensor) for x in v):
            out.append(Mutation("list one entry short", s.path, lambda v=v: _set(v, len(v) - 1, _DELETE)))
            out.append(Mutation("list one entry too many", s.path, lambda v=v: _insert(v, len(v), v[-1])))
    return out


# ----------------------------------------------------------------------------------------------
# Running a mutated model
# ----------------------------------------------------------------------------------------------

def _rss(field_name: str) -> int:
    m = re.search(rf"{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(m.group(1)) * 1024 if m else 0


def _reset_peak() -> bool:
    """Reset the peak resident size (Linux clear_refs); False where not available."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.clone()
    if isinstance(x, list):
        return [_clone(v) for v in x]
    return x


@dataclass
class Outcome:
    case: str
    mutation: str
    path: str
    result: str  # refused | converted | forward-error | raw-convert | raw-forward
    detail: str = ""
    peak_mb: float = 0.0
    budget_mb: float = 0.0

    @property
    def raw(self) -> bool:
        return self.result.startswith("raw") or self.peak_mb > self.budget_mb

    def line(self) -> str:
        mem = f" [peak {self.peak_mb:.0f} MB > {self.budget_mb:.0f} MB]" if self.peak_mb > self.budget_mb else ""
        return f"{self.case}: {self.path}: {self.mutation}: {self.result} {self.detail}{mem}"


def run_one(case: Case, mutation: Mutation) -> Outcome:
    """Apply ``mutation``, convert, run a forward pass on the fixture input, undo."""
    obj, x, target = case.load()
    if TIMES is not None:
        import time
        start = time.perf_counter()
        try:
            return _run_one(case, mutation, obj, x, target)
        finally:
            TIMES[case.name] = TIMES.get(case.name, 0.0) + time.perf_counter() - start
    return _run_one(case, mutation, obj, x, target)


TIMES: dict[str, float] | None = None  # seconds per case, when reporting


def _run_one(case: Case, mutation: Mutation, obj: Any, x: Any, target: Any) -> Outcome:
    undo = mutation.apply()
    try:
        budget = 4 * tensor_bytes(obj) + 64 * MB
        out = Outcome(case.name, mutation.kind, mutation.path, "converted", budget_mb=budget / MB)
        measured = _reset_peak()
        base = _rss("VmRSS")
        try:
            model = from_lua(obj)
        except LuaModelError:
            out.result = "refused"
            return out
        except Exception as exc:  # noqa: BLE001 - what this test looks for
            out.result, out.detail = "raw-convert", f"{type(exc).__name__}: {_short(exc)}"
            return out
        finally:
            if measured:
                out.peak_mb = max(0, _rss("VmHWM") - base) / MB
        try:
            model.eval()
            with torch.no_grad():
                model(_clone(x), _clone(target)) if target is not None else model(_clone(x))
        except UserError as exc:
            out.result, out.detail = "forward-error", f"{type(exc).__name__}"
        except Exception as exc:  # noqa: BLE001
            out.result, out.detail = "raw-forward", f"{type(exc).__name__}: {_short(exc)}"
        return out
    finally:
        undo()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return text[:200]


class _AddressSpaceLimit:
    """Caps the process's address space for the duration (a runaway allocation fails instead of swapping)."""

    def __init__(self, extra: int):
        self.extra = extra

    def __enter__(self) -> None:
        self.old = resource.getrlimit(resource.RLIMIT_AS)
        limit = _rss("VmSize") + self.extra
        if self.old[1] == resource.RLIM_INFINITY or limit < self.old[1]:
            resource.setrlimit(resource.RLIMIT_AS, (limit, self.old[1]))

    def __exit__(self, *exc: Any) -> None:
        resource.setrlimit(resource.RLIMIT_AS, self.old)


def sample(cases: list[Case], n: int, seed: int, max_model_bytes: int | None = None,
           big_share: int = 1) -> list[tuple[Case, Mutation]]:
    """``n`` mutations spread over the cases (equal share per case; models larger than ``max_model_bytes``
    get ``big_share``), deterministic for ``seed``."""
    rng = random.Random(seed)
    picked: list[tuple[Case, Mutation]] = []
    small = [c for c in cases if max_model_bytes is None or c.model.stat().st_size <= max_model_bytes]
    share = max(1, n // max(1, len(small)))
    for case in cases:
        if case not in small and big_share == 0:
            continue
        obj, _, _ = case.load()
        cands = mutations(obj, random.Random(f"{seed}:{case.name}"))
        k = share if case in small else big_share
        if k == 0:
            continue
        structural = [m for m in cands if not m.kind.startswith("field")]
        fields = [m for m in cands if m.kind.startswith("field")]
        ks = min(len(structural), max(1, k // 3)) if structural else 0
        picked += [(case, m) for m in rng.sample(structural, ks)]
        picked += [(case, m) for m in rng.sample(fields, min(len(fields), k - ks))]
    return picked


def run_all(pairs: list[tuple[Case, Mutation]]) -> list[Outcome]:
    with _AddressSpaceLimit(12 * 2 ** 30):
        return [run_one(c, m) for c, m in pairs]


# ----------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cases() -> list[Case]:
    found = fixture_cases()
    if not found:
        pytest.skip(f"no fixture models under {REFERENCE_DIR}")
    return found


@pytest.mark.slow
def test_seeded_mutations_give_project_errors_only(cases: list[Case]) -> None:
    """About 200 seeded edits over the fixture models up to 2.5 MB (the larger DenseNets have the same classes;
    the script mode covers them): no raw exception at conversion or forward, and no conversion whose peak memory
    exceeds 4x the file's tensors + 64 MB."""
    outcomes = run_all(sample(cases, 200, seed=15, max_model_bytes=2 * MB + MB // 2, big_share=0))
    bad = [o for o in outcomes if o.raw]
    refused = sum(o.result == "refused" for o in outcomes)
    assert refused > len(outcomes) // 4, f"only {refused} of {len(outcomes)} edits refused"
    assert not bad, f"{len(bad)} of {len(outcomes)} edits gave raw errors:\n" + "\n".join(o.line() for o in bad)


def test_mutator_is_deterministic(cases: list[Case]) -> None:
    small = [c for c in cases if c.name == "zoo_tables"] or cases[:1]
    a = [(c.name, m.kind, m.path) for c, m in sample(small, 40, seed=3)]
    b = [(c.name, m.kind, m.path) for c, m in sample(small, 40, seed=3)]
    assert a == b and len(a) == 40


# ----------------------------------------------------------------------------------------------
# One exact error per class of invalid model named in the issue
# ----------------------------------------------------------------------------------------------

def _conv(**fields: Any) -> t7.TorchObject:
    base = dict(nInputPlane=3, nOutputPlane=4, kW=3, kH=3, dW=1, dH=1, padW=1, padH=1, weight=torch.ones(4, 3, 3, 3),
                bias=torch.zeros(4))
    return lua_module("nn.SpatialConvolution", **{**base, **fields})


def _bn(**fields: Any) -> t7.TorchObject:
    base = dict(running_mean=torch.zeros(4), running_var=torch.ones(4), weight=torch.ones(4), bias=torch.zeros(4),
                eps=1e-5, momentum=0.1, affine=True)
    return lua_module("nn.SpatialBatchNormalization", **{**base, **fields})


def _linear(**fields: Any) -> t7.TorchObject:
    return lua_module("nn.Linear", **{"weight": torch.ones(3, 4), "bias": torch.zeros(3), **fields})


_FIELD = "field '{}' = {}: should be "
ISSUE_CASES = {
    "size of 2^40 (memory)": (_conv(nInputPlane=2 ** 40), "nn.SpatialConvolution at model: " + _FIELD.format(
        "nInputPlane", "1099511627776") + "an integer in [1, 2147483647]"),
    "kW = true": (_conv(kW=True), "nn.SpatialConvolution at model: " + _FIELD.format("kW", "true") + "an integer"),
    "negative kernel": (_conv(kW=-3), "nn.SpatialConvolution at model: " + _FIELD.format("kW", "-3")
                        + "an integer in [1, 2147483647]"),
    "NaN padding": (_conv(padH=math.nan), "nn.SpatialConvolution at model: " + _FIELD.format("padH", "nan")
                    + "an integer"),
    "integer weight": (_conv(weight=torch.ones(4, 3, 3, 3, dtype=torch.long)), "nn.SpatialConvolution at model: "
                       + _FIELD.format("weight", "a LongTensor of size 4x3x3x3")
                       + "a floating-point tensor (Float/Double/Cuda), as Lua's float modules require"),
    "empty bias": (_conv(bias=torch.empty(0)), "nn.SpatialConvolution at model: " + _FIELD.format(
        "bias", "an empty FloatTensor") + "a non-empty tensor (nil when the module has none)"),
    "weight of another shape": (_conv(weight=torch.ones(4, 3, 3, 2)), "nn.SpatialConvolution at model: "
                                + _FIELD.format("weight", "a FloatTensor of size 4x3x3x2")
                                + "of size 4x3x3x3 (nOutputPlane x nInputPlane x kH x kW) or 4x27 (its 2-D view)"),
    "running_mean length": (_bn(running_mean=torch.zeros(3)), "nn.SpatialBatchNormalization at model: "
                            + _FIELD.format("running_var", "a FloatTensor of size 4")
                            + "of size 3 (running_mean's length)"),
    "1-element Linear bias": (_linear(bias=torch.zeros(1)), "nn.Linear at model: " + _FIELD.format(
        "bias", "a FloatTensor of size 1") + "of size 3 (outputSize = weight:size(1)), or nil for none"),
    "weight (7.2e16, 0)": (_linear(weight=torch.empty(72_000_000_000_000_000, 0)), "nn.Linear at model: "
                           + _FIELD.format("weight", "an empty FloatTensor") + "a non-empty tensor"),
    "VolumetricConvolution weight reshaped": (
        lua_module("nn.VolumetricConvolution", nInputPlane=2, nOutputPlane=2, kT=1, kW=2, kH=2, dT=1, dW=1, dH=1,
                   padT=0, padW=0, padH=0, weight=torch.ones(2, 2, 2, 2, 1), bias=torch.zeros(2)),
        "nn.VolumetricConvolution at model: " + _FIELD.format("weight", "a FloatTensor of size 2x2x2x2x1")
        + "of size 2x2x1x2x2 (nOutputPlane x nInputPlane x kT x kH x kW) or 2x8 (its 2-D view)"),
    "groups not dividing the planes": (
        lua_module("cudnn.SpatialConvolution", nInputPlane=3, nOutputPlane=4, kW=1, kH=1, dW=1, dH=1, padW=0,
                   padH=0, groups=2, weight=torch.ones(4, 3, 1, 1), bias=torch.zeros(4)),
        "cudnn.SpatialConvolution at model: " + _FIELD.format("groups", "2").replace("should be ", "")
        + "should divide nInputPlane = 3 and nOutputPlane = 4"),
    "modules a number": (lua_module("nn.Sequential", modules=3),
                         "nn.Sequential at model: " + _FIELD.format("modules", "3") + "a Lua list of modules"),
    "Sum without dimension": (lua_module("nn.Sum"), "nn.Sum at model: missing field 'dimension' (an integer)"),
    "View size inf": (lua_module("nn.View", size=t7.LuaList([math.inf])), "nn.View at model: "
                      + _FIELD.format("size", "{inf}") + "a list of integers (has inf)"),
    "SelectTable index 2.5": (lua_module("nn.SelectTable", index=2.5),
                              "nn.SelectTable at model: " + _FIELD.format("index", "2.5") + "an integer"),
}


@pytest.mark.parametrize("name", list(ISSUE_CASES))
def test_each_class_of_invalid_model_gives_its_exact_error(name: str) -> None:
    obj, message = ISSUE_CASES[name]
    with pytest.raises(LuaModelError) as err:
        from_lua(obj)
    assert str(err.value) == message


def _graph(case: str) -> t7.TorchObject:
    return t7.load(REFERENCE_DIR / "zoo_graph" / case / "model.t7")


def test_graph_edits_give_their_exact_errors(cases: list[Case]) -> None:
    g = _graph("b_two_in_two_out")
    g.fields["outnode"] = g.fields["innode"]
    with pytest.raises(LuaModelError) as err:
        from_lua(g)
    assert str(err.value) == ("nn.gModule at model: fields 'innode' and 'outnode' are the same node (forwardnodes[1]): "
                              "the graph's input and output are two different nodes (gModule.__init makes them)")
    g = _graph("b_two_in_two_out")
    g.fields["forwardnodes"][2].fields["data"]["selectindex"] = 2.5
    with pytest.raises(LuaModelError) as err:
        from_lua(g)
    assert str(err.value) == ("nn.gModule at model: field 'forwardnodes[3].data.selectindex' = 2.5: should be an "
                              "integer (the element of its input table it outputs)")


def test_a_cycle_and_a_chain_that_does_not_fit_give_their_exact_errors() -> None:
    seq = lua_module("nn.Sequential", modules=t7.LuaList([_conv(), lua_module("nn.ReLU")]))
    seq.fields["modules"].append(seq)
    with pytest.raises(LuaModelError) as err:
        from_lua(seq)
    assert str(err.value) == "nn.Sequential at model: contains itself (modules[3] is model)"
    swapped = lua_module("nn.Sequential", modules=t7.LuaList([_conv(), _conv()]))
    with pytest.raises(LuaModelError) as err:
        from_lua(swapped)
    assert str(err.value) == ("nn.SpatialConvolution at model.modules[2]: takes 3 planes (nInputPlane), but the "
                              "module before it gives 4")


def _report(argv: list[str]) -> int:
    import argparse
    import collections
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=750)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--max-mb", type=float, default=None, help="models above this size get one edit")
    parser.add_argument("--case", default=None, help="only cases whose name contains this")
    args = parser.parse_args(argv)
    global TIMES
    TIMES = {}
    cases = [c for c in fixture_cases() if args.case is None or args.case in c.name]
    pairs = sample(cases, args.n, args.seed, None if args.max_mb is None else int(args.max_mb * MB))
    import time
    start = time.perf_counter()
    outcomes = run_all(pairs)
    counts = collections.Counter(o.result for o in outcomes)
    print(f"{time.perf_counter() - start:.0f} s")
    print(f"{len(outcomes)} edits: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    for o in outcomes:
        if o.raw:
            print(o.line())
    print("seconds per case:", ", ".join(f"{k} {v:.1f}" for k, v in sorted(TIMES.items(), key=lambda kv: -kv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(_report(sys.argv[1:]))
