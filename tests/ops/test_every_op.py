"""Every op in the registry, on every one of its samples: shape rule vs NumPy reference,
decompositions vs their reference, scalar lowerings vs the reference (also on NaN and Inf),
VJPs vs float64 central differences, and IR print -> parse -> print. A new op is tested by
declaring it with samples; no test needs writing."""
from __future__ import annotations

import functools
import operator
import warnings

import numpy as np
import pytest

from graphc.ir import interp
from graphc.ir.core import Func, make
from graphc.ir.ops import registry
from graphc.ir.ops.registry import COMPOSITE, ELEMENTWISE, REDUCE, SPECIAL
from graphc.ir.ops.rules import reduce_identity
from graphc.ir.text import parse_funcs, print_func
from graphc.ir.types import DType
from graphc.ir.verify import verify
from graphc.passes.autodiff import grad_of
from tests.ops.harness import Case, apply, args_of, cases, draw, numeric_grads, one_op, run

LEAD_OPS = ("arg", "const", "dim", "grad")
OPS = [op for op in registry.all() if op.name not in LEAD_OPS]
CASES = list(cases(OPS))


def by_id(cs: list[Case]) -> dict[str, object]:
    return dict(argvalues=cs, ids=[c.id for c in cs])


def assert_close(got: np.ndarray, want: np.ndarray, what: str, rtol: float | None = None
                 ) -> None:
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    if want.dtype.kind == "f":
        tol = rtol or (2e-6 if want.dtype == np.float32 else 1e-12)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def test_every_op_is_declared_with_samples() -> None:
    names = {op.name for op in OPS}
    assert names >= set("""neg abs sign exp log log1p sqrt rsqrt square reciprocal sin cos tanh
        sigmoid relu leaky_relu elu softplus gelu stop_gradient isfinite logical_not cast add sub
        mul div pow maximum minimum lt le gt ge eq ne logical_and logical_or where sum prod max min
        argmax argmin matmul reshape transpose broadcast_to slice pad concat take scatter_add
        one_hot mean logsumexp softmax log_softmax softmax_cross_entropy
        sparse_softmax_cross_entropy sigmoid_cross_entropy binary_cross_entropy mse clip
        expand_dims squeeze stack zeros ones full""".split())
    for op in OPS:
        assert op.samples, f"{op.name} has no samples"
        assert op.kind != SPECIAL
        assert (op.decompose is not None) == (op.kind == COMPOSITE), op.name
        assert op.ref is not None, op.name
        assert not op.differentiable or op.vjp is not None or op.expand is not None \
            or op.kind == COMPOSITE, op.name
        if op.kind == ELEMENTWISE:
            assert op.lower is not None, op.name
        if op.kind == REDUCE:
            assert op.combine in registry.COMBINES, op.name


@pytest.mark.parametrize("case", **by_id(CASES))
def test_infer_matches_ref(case: Case) -> None:
    """The declared type is what the NumPy reference produces (shape and exact dtype); for a
    composite, the decomposition computes what its reference does."""
    func = one_op(case)
    out, env = func.results[0], dict(case.env)
    hash(out.attrs)                                     # attributes are hashable
    arrays = draw(case, [p.type for p in func.params])
    if case.op.kind == COMPOSITE:
        assert all(registry.get(v.op).kind != COMPOSITE for v in func.values())
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # NumPy: "mean of empty slice"
            want = np.asarray(case.op.ref(*arrays, **{k: interp.concrete_attr(v, env)
                                                     for k, v in canonical_attrs(case).items()}))
        assert_close(run(func, arrays, env)[0], want, case.id, rtol=1e-5)
        assert out.type.concrete(env) == want.shape
        return
    attrs = {k: interp.concrete_attr(v, env) for k, v in out.attrs.items}
    if case.op.wants_out:
        attrs.update(out_shape=out.type.concrete(env), out_dtype=out.dtype.np)
    with np.errstate(all="ignore"):
        got = np.asarray(case.op.ref(*arrays, **attrs))
    assert got.shape == out.type.concrete(env), f"{out.type} vs {got.shape}"
    assert got.dtype == out.dtype.np, f"{out.type} vs {got.dtype}"


def canonical_attrs(case: Case) -> dict[str, object]:
    op, types = case.op, case.types()
    full = op.check_attrs(len(types), case.attrs())
    return op.canon(tuple(types), full) if op.canon else full


@pytest.mark.parametrize("case", **by_id(CASES))
def test_verify_print_parse_print(case: Case) -> None:
    func = one_op(case)
    verify(func)
    text = print_func(func)
    (back,) = parse_funcs(text)
    assert print_func(back) == text

# ---------------------------------------------------------------------------- lowerings


class NumpyEmitter:
    """The backend emitter's contract (runtime/emit.py), on NumPy arrays."""
    add, sub, mul, div = np.add, np.subtract, np.multiply, np.divide
    maximum, minimum = np.maximum, np.minimum
    neg, abs, exp, log, log1p, expm1 = np.negative, np.abs, np.exp, np.log, np.log1p, np.expm1
    sqrt, sin, cos, tanh = np.sqrt, np.sin, np.cos, np.tanh
    lt, le, gt, ge, eq, ne = np.less, np.less_equal, np.greater, np.greater_equal, np.equal, \
        np.not_equal
    select = staticmethod(np.where)
    and_, or_, not_ = np.logical_and, np.logical_or, np.logical_not
    isnan, isfinite = np.isnan, np.isfinite

    @staticmethod
    def const(value: object, like: np.ndarray) -> np.ndarray:
        return np.asarray(value, dtype=np.asarray(like).dtype)

    @staticmethod
    def pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return registry.get("pow").ref(np.asarray(a), np.asarray(b))

    @staticmethod
    def cast(a: np.ndarray, dtype: DType) -> np.ndarray:
        return registry.get("cast").ref(np.asarray(a), dtype=dtype)   # the saturating rule

    @staticmethod
    def widen(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, np.float64)

    @staticmethod
    def narrow(a: np.ndarray, like: np.ndarray) -> np.ndarray:
        return np.asarray(a).astype(np.asarray(like).dtype)


ELEMENTWISE_CASES = [c for c in CASES if c.op.kind == ELEMENTWISE]
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e30, -1e30, 0.5, -3.0])


@pytest.mark.parametrize("case", **by_id(ELEMENTWISE_CASES))
def test_lowering_matches_ref(case: Case) -> None:
    func = one_op(case)
    arrays = draw(case, [p.type for p in func.params])
    check_lowering(case, arrays)


@pytest.mark.parametrize("op", [op for op in OPS if op.kind == ELEMENTWISE],
                         ids=lambda op: op.name)
def test_lowering_on_nan_and_inf(op: registry.OpDef) -> None:
    """NaN and infinities go through the scalar lowering as through NumPy (relu(NaN) is NaN)."""
    case = next(c for c in ELEMENTWISE_CASES if c.op is op)
    types = case.types()
    n = len(types)
    arrays = []
    for i, t in enumerate(types):
        shape = [1] * n
        shape[i] = SPECIALS.size
        a = SPECIALS.reshape(shape)
        arrays.append(a.astype(t.dtype.np) if t.dtype.is_float else
                      np.resize(np.arange(SPECIALS.size) % 2 == 0, shape).astype(t.dtype.np))
    check_lowering(case, arrays)


def check_lowering(case: Case, arrays: list[np.ndarray]) -> None:
    attrs = canonical_attrs(case)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = np.asarray(case.op.ref(*arrays, **attrs))
        got = np.asarray(case.op.lower(NumpyEmitter(), *arrays, **attrs))
    assert_close(got, want, case.id, rtol=1e-5)


def fold(combine: str, identity: object, x: np.ndarray) -> np.ndarray:
    """What a backend loop computes: start from the identity, combine along the last axis."""
    acc = np.full(x.shape[:-1], identity, x.dtype)
    idx = np.zeros(x.shape[:-1], np.int64)
    for k in range(x.shape[-1]):
        v = x[..., k]
        if not combine.startswith("arg"):
            acc = {"add": np.add, "mul": np.multiply, "max": np.maximum,
                   "min": np.minimum}[combine](acc, v)
        else:
            better = (v > acc) if combine == "argmax" else (v < acc)
            take = better | (np.isnan(v) & ~np.isnan(acc))     # the first NaN wins, as NumPy
            acc, idx = np.where(take, v, acc), np.where(take, k, idx)
    return idx if combine.startswith("arg") else acc


@pytest.mark.parametrize("case", **by_id([c for c in CASES if c.op.kind == REDUCE]))
@pytest.mark.parametrize("nan", [False, True], ids=["", "nan"])
def test_combine_and_identity_match_ref(case: Case, nan: bool) -> None:
    out = one_op(case).results[0]
    (x,) = draw(case, case.types())
    if nan and x.dtype.kind == "f" and x.size:
        x.reshape(-1)[x.size // 2] = np.nan
    axis, keepdims = out.attrs["axis"], out.attrs["keepdims"]
    rest = [i for i in range(x.ndim) if i not in axis]
    moved = np.transpose(x, rest + list(axis))
    flat = moved.reshape(moved.shape[:len(rest)] + (int(np.prod(moved.shape[len(rest):])),))
    got = fold(case.op.combine, reduce_identity(case.op.identity, DType.from_np(x.dtype)), flat)
    want = case.op.ref(x, axis=axis, keepdims=keepdims)
    assert_close(got.reshape(want.shape).astype(want.dtype), want, case.id, rtol=1e-5)

# ---------------------------------------------------------------------------- gradients


def grad_cases() -> list[Case]:
    out = []
    for c in CASES:
        floats = [t for t in c.types(f64=True) if t.dtype.is_float]
        if c.op.differentiable and c.sample.grad and floats:
            ty = one_op(c, f64=True).results[0].type
            if ty.dtype.is_float:
                out.append(c)
    return out


def grad_funcs(case: Case) -> tuple[Func, Func, list[int]]:
    """(loss, gradient) functions of the op's inputs and a weight ``w``: loss = sum(out * w)."""
    types = case.types(f64=True)
    args = args_of(types)
    out = apply(case, args, f64=True)
    w = make("arg", name="w", dtype=out.dtype, shape=out.shape)
    loss = make("sum", out * w)
    wrt = [i for i, t in enumerate(types) if t.dtype.is_float]
    grads = grad_of(loss, [args[i] for i in wrt])
    grads = [g if g is not None else make("const", value=0.0, dtype=DType.f64,
                                          shape=args[i].shape) for g, i in zip(grads, wrt)]
    params = tuple(args) + (w,)
    return Func("loss", params, (loss,)), Func("grads", params, tuple(grads)), wrt


@pytest.mark.parametrize("case", **by_id(grad_cases()))
def test_vjp_matches_finite_differences(case: Case) -> None:
    loss, grads, wrt = grad_funcs(case)
    verify(grads)
    env = dict(case.env)
    arrays = draw(case, case.types(f64=True))
    w_shape = loss.params[-1].type.concrete(env)
    arrays.append(case.rng().uniform(0.5, 1.5, size=w_shape))
    got = run(grads, arrays, env)
    want = numeric_grads(loss, arrays, wrt, env)
    defined = np.isfinite(run(loss, arrays, env)[0])      # the mean of nothing is NaN
    for i, g, n in zip(wrt, got, want):
        assert g.shape == arrays[i].shape
        if not defined:
            continue
        np.testing.assert_allclose(g, n, rtol=1e-5, atol=1e-6, err_msg=f"d/d x{i}: {case.id}")


@pytest.mark.parametrize("case", **by_id([c for c in grad_cases() if c.env != (("N", 0),)]))
def test_second_order_matches_finite_differences_of_the_vjp(case: Case) -> None:
    """Nested autodiff: the Hessian-vector product (VJP rules differentiated again) equals the
    central difference of the first gradient along a random direction."""
    loss, grads, wrt = grad_funcs(case)
    env = dict(case.env)
    arrays = draw(case, case.types(f64=True))
    arrays.append(case.rng().uniform(0.5, 1.5, size=loss.params[-1].type.concrete(env)))
    dirs = [case.rng().standard_normal(arrays[i].shape) for i in wrt]
    vs = [make("arg", name=f"v{i}", dtype=DType.f64, shape=grads.params[i].shape) for i in wrt]
    inner = functools.reduce(operator.add, [make("sum", g * v) for g, v in zip(grads.results, vs)])
    hvp = grad_of(inner, [grads.params[i] for i in wrt])
    hvp = [h if h is not None else make("const", value=0.0, dtype=DType.f64,
                                        shape=grads.params[i].shape) for h, i in zip(hvp, wrt)]
    hvp_func = Func("hvp", grads.params + tuple(vs), tuple(hvp))
    verify(hvp_func)
    got = run(hvp_func, arrays + dirs, env)
    h = 1e-5

    def moved(step: float) -> list[np.ndarray]:
        out = list(arrays)
        for i, d in zip(wrt, dirs):
            out[i] = arrays[i] + step * d
        return out

    plus, minus = run(grads, moved(h), env), run(grads, moved(-h), env)
    if not np.isfinite(run(loss, arrays, env)[0]):
        return
    for i, g, p, m in zip(wrt, got, plus, minus):
        np.testing.assert_allclose(g, (p - m) / (2 * h), rtol=1e-4, atol=1e-5,
                                   err_msg=f"d2/d x{i}: {case.id}")
