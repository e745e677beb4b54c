"""Every op of the registry (composites through their decompositions), native vs the reference
interpreter, in f32 and f64, over each sample's symbolic-dim sizes (0, 1 and more) from one
compile. All samples of one op that share their sizes go into one function, one compile."""
from __future__ import annotations

from collections import defaultdict

import pytest

from graphc.ir.core import Func, make
from graphc.ir.ops import registry
from graphc.runtime import compile_module
from tests.ops.harness import Case, apply, cases, draw
from tests.runtime.conftest import assert_matches, reference


def groups() -> dict[tuple[str, tuple[int, ...]], list[list[Case]]]:
    """(op, sizes) -> the cases of each sample (one per size)."""
    out: dict[tuple[str, tuple[int, ...]], dict[object, list[Case]]] = defaultdict(dict)
    for c in cases():
        out[(c.op.name, c.sample.sizes)].setdefault(c.sample, []).append(c)
    return {k: list(v.values()) for k, v in out.items()}


GROUPS = groups()


def merged(samples: list[list[Case]], f64: bool) -> tuple[Func, list[tuple[int, int]]]:
    """One function computing every sample; returns it and each sample's (first param, count)."""
    params, results, spans = [], [], []
    for j, per_size in enumerate(samples):
        types = per_size[0].types(f64)
        args = [make("arg", name=f"s{j}_x{i}", dtype=t.dtype, shape=t.shape)
                for i, t in enumerate(types)]
        spans.append((len(params), len(args)))
        params += args
        results.append(apply(per_size[0], args, f64))
    return Func("ops", tuple(params), tuple(results)), spans


@pytest.mark.parametrize("f64", [False, True], ids=["f32", "f64"])
@pytest.mark.parametrize("key", list(GROUPS), ids=[f"{k[0]}{list(k[1])}" for k in GROUPS])
def test_native_matches_interpreter(key: tuple[str, tuple[int, ...]], f64: bool) -> None:
    samples = GROUPS[key]
    func, spans = merged(samples, f64)
    mod = compile_module({"ops": func})
    n_sizes = max(len(p) for p in samples)
    for s in range(n_sizes):
        args, want, env = {}, [], {}
        for j, per_size in enumerate(samples):
            case = per_size[min(s, len(per_size) - 1)]
            env.update(case.env)
            first, n = spans[j]
            ps = func.params[first:first + n]
            arrays = draw(case, [p.type for p in ps])
            args.update({p.attrs["name"]: a for p, a in zip(ps, arrays)})
            one = Func("one", tuple(ps), (func.results[j],))
            want += reference(one, arrays, dict(case.env))
        got = mod.call("ops", args, dims=env)
        assert_matches(got, want, f"{key[0]} with {env}")


def test_every_registered_op_is_covered() -> None:
    """const and dim have no samples of their own: test_features.py covers them."""
    covered = {k[0] for k in GROUPS} | {"const", "dim"}
    missing = [op.name for op in registry.all()
               if op.name not in covered and op.kind != registry.SPECIAL]
    assert missing == []
