"""print -> parse -> print for every primitive in the op table, on each of its declared samples
(``OpDef.samples``, the format of ir/ops/rules.py's ``Sample``): a new op is covered unasked."""
from __future__ import annotations

from typing import Any

import pytest

from graphc.ir import Func, Loc, make
from graphc.ir.ops import registry
from graphc.ir.text import parse, parse_type
from graphc.ir.verify import verify

CASES = [pytest.param(op.name, s, id=f"{op.name}-{i}")
         for op in registry.all() if op.kind != registry.COMPOSITE
         for i, s in enumerate(op.samples)]


def build(name: str, sample: Any) -> Func:
    types = [parse_type(t) for t in sample.types]
    args = tuple(make("arg", name=f"a{i}", dtype=t.dtype, shape=t.shape)
                 for i, t in enumerate(types))
    out = make(name, *args, loc=Loc("ops.graph", 1, 1), **dict(sample.attrs))
    return Func(f"{name}.sample", args, (out,))


@pytest.mark.parametrize("name, sample", CASES)
def test_every_op_reads_back(name: str, sample: Any) -> None:
    func = build(name, sample)
    verify(func)
    text = str(func)
    again = parse(text)
    assert isinstance(again, Func) and str(again) == text
    assert again.results[0].attrs == func.results[0].attrs
    assert again.results[0].type == func.results[0].type

