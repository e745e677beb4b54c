"""Code whose result is never used is never run, at any ``-O`` level and under opt-bisect: the
dce pass, which cuts what no result reads (the concat piece a slice skips, the padding a slice
takes back), is a pass correctness needs, in every pipeline. So a dead out-of-range slice is
no error at ``-O0`` either, as at ``-O1`` and above (it raised at ``-O0`` only)."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.elaborate import elaborate_source
from graphc.ir.core import Func
from graphc.passes import PIPELINES, REQUIRED, run_pipeline

# y[0:3] is out of range when K < 3, but the outer slice reads only x's part of the concat
SOURCE = """
graph g {
    input x: f32[N]
    input y: f32[K]
    z = concat([x, y[0:3]], 0)[0:N]
    output z
}
"""

PENDING = pytest.mark.xfail(
    "dce" not in REQUIRED, strict=True,
    reason="needs dce among the REQUIRED passes and in the -O0 pipeline (passes/__init__.py)")


def forward() -> Func:
    return elaborate_source(SOURCE, "<s>")["g"].forward


def reads_y(func: Func) -> bool:
    return any(v.op == "slice" and v.inputs[0] is func.params[1] for v in func.values())


@pytest.mark.parametrize("opt_level", [pytest.param(0, marks=PENDING), 1, 2, 3])
def test_every_pipeline_drops_a_slice_no_result_reads(opt_level: int) -> None:
    assert reads_y(forward())
    assert not reads_y(run_pipeline(forward(), opt_level))


@PENDING
def test_opt_bisect_never_cuts_dead_code_elimination() -> None:
    assert not reads_y(run_pipeline(forward(), 2, bisect=0))


@PENDING
def test_dce_is_a_required_pass_of_every_pipeline() -> None:
    assert "dce" in REQUIRED and all(set(REQUIRED) <= set(names) for names in PIPELINES)


@pytest.mark.parametrize("backend", ["interp", "native"])
@pytest.mark.parametrize("opt_level", [pytest.param(0, marks=PENDING), 1, 2, 3])
def test_a_dead_out_of_range_slice_is_no_error(opt_level: int, backend: str) -> None:
    model = graphc.compile_source(SOURCE, opt_level=opt_level, backend=backend)
    x = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(model(x=x, y=np.ones(2, np.float32))["z"], x)
