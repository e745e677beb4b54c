"""Crashes and silent wrong answers found by the adversarial audit, each pinned by a test that
failed before its fix: many results, dim arithmetic that overflows 64 bits, value-changing
conversions at call time, masked arrays, and results too large to allocate."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc import GraphCallError


def many_params_source(n: int) -> str:
    decl = "\n".join(f"    param w{i}: f32[3] = normal(1.0)" for i in range(n))
    loss = " + ".join(f"sum(w{i} * x)" for i in range(n))
    return f"graph g {{\n    input x: f32[3]\n{decl}\n    loss = {loss}\n    output loss\n" \
           f"    grad loss\n}}\n"


@pytest.mark.parametrize("n", [63, 64, 70, 130])
def test_more_than_64_results(backend: str, n: int) -> None:
    # value_and_grad has n + 1 results and sgd_step n + 1: the old 64-bit "direct output" mask
    # truncated bit 64 and up and the native code crashed or wrote the wrong arrays
    m = graphc.compile_source(many_params_source(n), backend=backend)
    p = m.init_params(seed=1)
    x = np.arange(3, dtype=np.float32) + 1
    out, grads = m.value_and_grad(x=x, **p)
    want = sum(float(np.dot(p[f"w{i}"], x)) for i in range(n))
    assert out["loss"] == pytest.approx(want, rel=1e-5)
    for i in range(n):
        np.testing.assert_array_equal(grads[f"w{i}"], x)
    before = {k: v.copy() for k, v in p.items()}
    loss = m.sgd_step(p, 0.5, x=x)
    assert loss == pytest.approx(want, rel=1e-5)
    for i in range(n):
        np.testing.assert_allclose(p[f"w{i}"], before[f"w{i}"] - 0.5 * x, rtol=1e-6)


def test_many_outputs(backend: str) -> None:
    outs = ", ".join(f"y{i}" for i in range(80))
    body = "\n".join(f"    y{i} = x * {i}.0" for i in range(80))
    src = f"graph g {{\n    input x: f32[N]\n{body}\n    output {outs}\n}}\n"
    m = graphc.compile_source(src, backend=backend)
    x = np.linspace(-1, 1, 5, dtype=np.float32)
    out = m(x=x)
    for i in range(80):
        np.testing.assert_array_equal(out[f"y{i}"], x * np.float32(i))


DIM_VALUE = """
graph g {
    input x: f32[N]
    y = sum(x) + N*N*N*N
    output y
}
"""


def test_dim_arithmetic_that_overflows_64_bits_is_an_error(backend: str) -> None:
    m = graphc.compile_source(DIM_VALUE, backend=backend)
    assert float(m(x=np.ones(3, np.float32))["y"]) == 84.0
    with pytest.raises(GraphCallError, match=r"N\*N\*N\*N .* too large .*N = 65536") as e:
        m(x=np.zeros(65536, np.float32))      # 2**64: natively it wrapped to 0
    assert e.value.loc is not None and e.value.loc.line == 4


MATMUL = """
graph g {
    input x: f32[N, K]
    input y: f32[K, M]
    output z = x @ y
}
"""


def _empty(shape: tuple[int, int]) -> np.ndarray:
    return np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape, (0, 0))


@pytest.mark.parametrize("n", [2**33, 2**30])
def test_result_too_large_to_allocate(backend: str, n: int) -> None:
    # [n, n] from zero-size operands: 2**33 overflows the byte count, 2**30 fits in 64 bits
    # but no machine has 4 EiB; both used to escape as NumPy's ValueError
    m = graphc.compile_source(MATMUL.replace("output z = x @ y", "z = x @ y\n    output z"),
                              backend=backend)
    with pytest.raises(GraphCallError, match="too large|out of memory"):
        m(x=_empty((n, 0)), y=_empty((0, n)))


LABELS = """
graph g {
    input y: i32[N]
    input k: i64[N]
    input x: f32[N]
    s = sum(cast(y, f32)) + sum(cast(k, f32)) + sum(x)
    output s
}
"""


@pytest.mark.parametrize("arg,value,match", [
    ("y", np.array([1, 2**32], np.int64), r"'y' \(int64\) holds 4294967296 at index \(1,\)"),
    ("y", np.array([-2**31 - 1, 0], np.int64), r"holds -2147483649 at index \(0,\)"),
    ("k", np.array([0, 2**64 - 1], np.uint64), r"'k' \(uint64\) holds 18446744073709551615"),
    ("x", np.array([1.0, 1e300]), r"'x' \(float64\) holds 1e\+300 at index \(1,\).*overflows"),
])
def test_value_changing_conversion_is_an_error(backend: str, arg: str, value: np.ndarray,
                                               match: str) -> None:
    m = graphc.compile_source(LABELS, backend=backend)
    args = {"y": np.zeros(2, np.int32), "k": np.zeros(2, np.int64),
            "x": np.zeros(2, np.float32), arg: value}
    with pytest.raises(GraphCallError, match=match):
        m(**args)


def test_conversions_that_keep_values_still_work(backend: str) -> None:
    m = graphc.compile_source(LABELS, backend=backend)
    out = m(y=np.array([2**31 - 1, -2**31], np.int64), k=np.array([5, 7], np.uint64),
            x=np.array([np.inf, 1.5]))       # an Inf that is already Inf is kept
    want = np.float32(2**31 - 1) + np.float32(-2**31) + np.float32(12) + np.float32(np.inf)
    assert float(out["s"]) == float(want)


def test_masked_arrays_are_rejected(backend: str) -> None:
    m = graphc.compile_source(LABELS, backend=backend)
    x = np.ma.masked_array(np.ones(2, np.float32), mask=[False, True])
    with pytest.raises(GraphCallError, match="'x' is a masked array"):
        m(y=np.zeros(2, np.int32), k=np.zeros(2, np.int64), x=x)


BAD_INDEX = """
graph g {
    input logits: f32[N, 4]
    input labels: i32[N]
    input idx: i64[M]
    loss = sum(sparse_softmax_cross_entropy(logits, labels))
    rows = take(logits, idx)
    output loss, rows
}
"""


@pytest.mark.parametrize("labels,idx,match", [
    ([1, 3, 9, 2, -1], [0, 1], r"a label is out of range \[0, 4\): 9 at labels\[2\]"),
    ([1, 3, 0, 2, 1], [0, 4, 7, -9], r"take: index 7 is out of range for an axis of size 5 "
                                      r"at indices\[2\]"),
])
def test_bad_labels_and_indices_name_value_position_and_bound(backend: str, labels: list,
                                                              idx: list, match: str) -> None:
    # natively the message used to say only "a label is out of range [0, 4)"
    m = graphc.compile_source(BAD_INDEX, backend=backend)
    with pytest.raises(GraphCallError, match=match):
        m(logits=np.zeros((5, 4), np.float32), labels=np.array(labels, np.int32),
          idx=np.array(idx, np.int64))


def test_a_static_size_beyond_64_bits_is_a_compile_error() -> None:
    # 2**62 * 4 elements * 4 bytes: each dim fits int64, the byte size does not
    with pytest.raises(graphc.GraphTypeError, match="byte size of f32.* too large") as e:
        graphc.compile_source("graph g {\n    input x: f32[4611686018427387904, 4]\n"
                              "    output y = x * 2.0\n}\n", backend="interp")
    assert e.value.loc is not None and e.value.loc.line == 2 and "^" in str(e.value)
