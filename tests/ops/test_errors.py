"""Ill-typed ops are GraphTypeErrors that name the types involved (and suggest a keyword or op
name when one is close); they carry the location of the ``at`` block they were made in."""
from __future__ import annotations

import re

import pytest

from graphc.ir.core import at, make
from graphc.ir.errors import GraphTypeError, Loc
from graphc.ir.types import Dim, DType, TensorType
from tests.ops.harness import args_of

N, M = Dim.sym("N"), Dim.sym("M")


def arg(dtype: DType, *shape: object):
    return args_of([TensorType(dtype, tuple(shape))])[0]


def fails(match: str, op: str, *xs: object, **attrs: object) -> None:
    with pytest.raises(GraphTypeError, match=re.escape(match)):
        make(op, *xs, **attrs)


def test_matmul_names_both_types_and_the_inner_dims() -> None:
    fails("matmul: f32[N,784] @ f32[785,256]: inner dims 784 and 785 differ", "matmul",
          arg(DType.f32, N, 784), arg(DType.f32, 785, 256))


@pytest.mark.parametrize("op, sym", [("add", "+"), ("mul", "*"), ("maximum", ","),
                                     ("lt", "<"), ("matmul", "@")])
def test_mixed_dtypes_name_both_types(op: str, sym: str) -> None:
    sep = ", " if sym == "," else f" {sym} "
    fails(f"f32[3,3]{sep}f64[3,3]", op, arg(DType.f32, 3, 3), arg(DType.f64, 3, 3))


@pytest.mark.parametrize("a, b", [((3,), (4,)), ((N, 3), (N, 4)), ((2, N), (3, 1))])
def test_shapes_that_do_not_broadcast(a: tuple, b: tuple) -> None:
    x, y = arg(DType.f32, *a), arg(DType.f32, *b)
    fails(f"add: {x.type} + {y.type}: shapes do not broadcast", "add", x, y)


@pytest.mark.parametrize("a, b, out", [((N, 4), (M, 4), "f32[N,4]"), ((N,), (3,), "f32[3]"),
                                       ((1, M), (N, 1), "f32[N,M]")])
def test_symbolic_dims_meet_other_dims_with_a_call_time_check(a: tuple, b: tuple,
                                                               out: str) -> None:
    # the language: a symbolic dim against any other dim must be equal, checked at call time
    # (ir.shapecheck; see tests/ir/test_shapecheck.py)
    x, y = arg(DType.f32, *a), arg(DType.f32, *b)
    assert str(make("add", x, y).type) == out


@pytest.mark.parametrize("op", ["div", "exp", "sqrt", "sigmoid", "mean", "logsumexp",
                                "softmax"])
def test_float_only_ops_reject_integers(op: str) -> None:
    x = arg(DType.i32, 3)
    with pytest.raises(GraphTypeError, match=r"i32\[3\].*float"):
        make(op, *([x, x] if op == "div" else [x]))


def test_other_dtype_rules() -> None:
    fails("where(f32[3], f32[3], f32[3]): the condition must be bool", "where",
          *[arg(DType.f32, 3)] * 3)
    fails("logical_and(f32[3], f32[3]): needs a bool dtype", "logical_and",
          *[arg(DType.f32, 3)] * 2)
    fails("sum(bool[3])", "sum", arg(DType.bool, 3))
    fails("one_hot(f32[3]): labels must be integers", "one_hot", arg(DType.f32, 3), depth=2)
    fails("take(f32[3], f32[2]): indices must be integers", "take", arg(DType.f32, 3),
          arg(DType.f32, 2))
    fails("unknown dtype 'f16'", "cast", arg(DType.f32, 3), dtype="f16")
    fails("clip(f32[3], f64[], f32[]): dtypes f32 and f64 differ", "clip", arg(DType.f32, 3),
          arg(DType.f64), 1.0)
    fails("float literal 2.5", "full", shape=(2,), value=2.5, dtype=DType.i32)
    with pytest.raises(GraphTypeError, match=re.escape("float literal 2.5 used with i32[3]")):
        arg(DType.i32, 3) + 2.5


def test_comparisons_give_bool_and_argmax_gives_i64() -> None:
    x = arg(DType.i32, N, 3)
    assert make("le", x, x).dtype is DType.bool
    assert make("argmax", x, axis=1).type == TensorType(DType.i64, (N,))


def test_keywords_and_names_suggest_the_close_one() -> None:
    x = arg(DType.f32, 3)
    fails("'sum' has no keyword 'axs'; did you mean 'axis'?", "sum", x, axs=0)
    fails("'softmax' has no keyword 'axes'; did you mean 'axis'?", "softmax", x, axes=0)
    fails("unknown op 'sofmax'; did you mean 'softmax'?", "sofmax", x)
    fails("did you mean 'mean'?", "mse", x, x, reduction="means")
    fails("'reshape' needs the argument 'shape'", "reshape", x)
    fails("'matmul' takes 2 tensor arguments (x, y), got 1", "matmul", x)


@pytest.mark.parametrize("op, attrs, match", [
    ("reshape", dict(shape=(5, -1)), "the -1 does not resolve exactly (12*N elements / 5)"),
    ("reshape", dict(shape=(-1, -1)), "more than one -1"),
    ("reshape", dict(shape=(N, 5)), "cannot reshape f32[N,4,3] (12*N elements) to [N,5]"),
    ("transpose", dict(perm=(0, 0, 1)), "is not a permutation"),
    ("sum", dict(axis=3), "axis 3 is out of range for rank 3"),
    ("max", dict(axis=(1, -2)), "repeated axis"),
    ("mean", dict(keepdims=1), "keepdims must be true or false, got 1"),
    ("leaky_relu", dict(alpha="big"), "alpha must be a number, got 'big'"),
    ("slice", dict(start=(0, 5)), "out of range for axis 1 of f32[N,4,3]"),
    ("slice", dict(step=(1, 0)), "the step must be positive"),
    ("slice", dict(start=(0, 3), stop=(0, 1)), "3:1:1 is out of range"),
    ("slice", dict(start=(1,), step=(2,)), "is not an exact polynomial"),
    ("squeeze", dict(axis=0), "axis 0 of f32[N,4,3] has size N, not 1"),
    ("broadcast_to", dict(shape=(N, 5, 3)), "cannot broadcast f32[N,4,3] to [N,5,3]"),
    ("pad", dict(lo=(1, 1), hi=(0, 0, 0)), "lo needs one value per axis"),
    ("expand_dims", dict(axis=4), "axis 4 is out of range for rank 4"),
])
def test_bad_attributes(op: str, attrs: dict, match: str) -> None:
    fails(match, op, arg(DType.f32, N, 4, 3), **attrs)


def test_list_ops_check_their_operands() -> None:
    a, b = arg(DType.f32, N, 3), arg(DType.f32, N, 4)
    fails("concat(f32[N,3], f32[N,4]): shapes differ off axis 0", "concat", a, b)
    fails("stack(f32[N,3], f32[N,4]): shapes differ", "stack", a, b)
    fails("concat needs at least one tensor", "concat")
    fails("scatter_add(f32[N,3], i64[2], f32[N,3]): updates must have shape [2,3]",
          "scatter_add", a, arg(DType.i64, 2), a)


def test_losses_check_their_operands() -> None:
    logits = arg(DType.f32, N, 10)
    fails("softmax_cross_entropy(f32[N,10], f32[N,9])", "softmax_cross_entropy", logits,
          arg(DType.f32, N, 9))
    fails("sparse_softmax_cross_entropy(f32[N,10], f32[N])", "sparse_softmax_cross_entropy",
          logits, arg(DType.f32, N))
    fails("binary_cross_entropy(f32[N,10], f64[N,10]): dtypes f32 and f64 differ",
          "binary_cross_entropy", logits, arg(DType.f64, N, 10))


def test_errors_carry_the_location_of_the_at_block() -> None:
    loc = Loc("mlp.graph", 14, 9)
    with at(loc), pytest.raises(GraphTypeError) as e:
        make("mean", arg(DType.i64, 3))
    assert e.value.loc == loc and str(e.value).startswith("mlp.graph:14:9: ")
