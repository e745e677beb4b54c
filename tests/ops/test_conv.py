"""conv2d / conv1d and pooling beyond the op-table sweep: the references against loops written
from the definition (as ``jax.lax.conv_general_dilated`` states it), JAX's "same" padding,
gradients at ties, and the errors."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from graphc.ir.core import make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.conv import conv_ref
from graphc.ir.ops.pool import pool_ref
from graphc.ir.types import Dim, DType, TensorType
from tests.ops.harness import args_of, evaluate, gradient


def naive_conv(x: np.ndarray, w: np.ndarray, stride: tuple, pads: tuple, dil: tuple,
               groups: int) -> np.ndarray:
    """out[n, o..., c] = sum over taps t and group inputs i of
    xpad[n, o*stride + t*dil, g*cg + i] * w[t, i, c], g = c // (cout / groups)."""
    rank = x.ndim - 2
    xp = np.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),))
    ks, cg, cout = w.shape[:rank], w.shape[-2], w.shape[-1]
    og = cout // groups
    outs = [(xp.shape[1 + a] - (ks[a] - 1) * dil[a] - 1) // stride[a] + 1 for a in range(rank)]
    out = np.zeros([x.shape[0]] + outs + [cout])
    for n, c in itertools.product(range(x.shape[0]), range(cout)):
        g = c // og
        for o in itertools.product(*map(range, outs)):
            acc = 0.0
            for t in itertools.product(*map(range, ks)):
                at = tuple(oo * s + tt * d for oo, s, tt, d in zip(o, stride, t, dil))
                for i in range(cg):
                    acc += xp[(n,) + at + (g * cg + i,)] * w[t + (i, c)]
            out[(n,) + o + (c,)] = acc
    return out


CONV2D = [  # x shape, w shape, stride, padding, dilation, groups, canonical pads
    ((2, 5, 6, 2), (3, 3, 2, 3), 1, "valid", 1, 1, ((0, 0), (0, 0))),
    ((1, 5, 5, 2), (3, 3, 2, 2), 2, "same", 1, 1, ((1, 1), (1, 1))),
    ((1, 6, 7, 1), (3, 2, 1, 2), 2, "same", 1, 1, ((0, 1), (0, 1))),   # odd pad on the high side
    ((2, 7, 6, 4), (2, 3, 2, 6), (2, 1), ((1, 2), (0, 1)), (2, 1), 2, ((1, 2), (0, 1))),
    ((1, 4, 4, 3), (1, 1, 1, 3), 1, 0, 1, 3, ((0, 0), (0, 0))),         # depthwise
    ((1, 6, 6, 2), (3, 3, 2, 1), 1, "same", 2, 1, ((2, 2), (2, 2))),
    ((0, 4, 4, 2), (2, 2, 2, 2), 1, 1, 1, 1, ((1, 1), (1, 1))),         # N = 0
]


@pytest.mark.parametrize("xs,ws,stride,padding,dilation,groups,pads", CONV2D)
def test_conv2d_matches_the_definition(xs, ws, stride, padding, dilation, groups, pads) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    out = make("conv2d", *args_of([TensorType(DType.f64, xs), TensorType(DType.f64, ws)]),
               **attrs)
    s2 = (stride,) * 2 if isinstance(stride, int) else stride
    d2 = (dilation,) * 2 if isinstance(dilation, int) else dilation
    want = naive_conv(x, w, s2, pads, d2, groups)
    assert out.shape == want.shape
    got = evaluate(lambda a, b: make("conv2d", a, b, **attrs), x, w)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv_ref(x, w, stride=s2, padding=pads, dilation=d2,
                                        groups=groups), want, rtol=1e-12, atol=1e-12)


def test_conv1d_matches_the_definition() -> None:
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 9, 4)), rng.standard_normal((3, 2, 4))
    got = evaluate(lambda a, b: make("conv1d", a, b, stride=2, padding=[1, 2], dilation=2,
                                     groups=2), x, w)
    np.testing.assert_allclose(got, naive_conv(x, w, (2,), ((1, 2),), (2,), 2), rtol=1e-12)


def test_conv_gradient_of_the_kernel_is_the_correlation_with_the_input() -> None:
    """d sum(conv(x, w)) / d w[t, i, c] = sum of the input window that tap t sees."""
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 5, 5, 1)), rng.standard_normal((2, 2, 1, 3))
    gx, gw = gradient(lambda a, b: make("conv2d", a, b, stride=2), x, w)
    for i, j in np.ndindex(2, 2):
        np.testing.assert_allclose(gw[i, j, 0], np.full(3, x[:, i:i + 3:2, j:j + 3:2].sum()))
    assert gx[:, 4].sum() == 0 and gx[:, :, 4].sum() == 0      # never seen with stride 2


def test_symbolic_batch_and_spatial_dims() -> None:
    n, h = Dim.sym("N"), Dim.sym("H")
    x, w = args_of([TensorType(DType.f32, (n, h, 7, 2)), TensorType(DType.f32, (3, 3, 2, 4))])
    assert make("conv2d", x, w, padding="same").shape == (n, h, 7, 4)
    assert make("conv2d", x, w, stride=(1, 2)).shape == (n, h - 2, 3, 4)
    with pytest.raises(GraphTypeError, match="no polynomial"):
        make("conv2d", x, w, stride=2)


@pytest.mark.parametrize("attrs,match", [
    ({"groups": 3}, "groups=3"), ({"padding": "full"}, "padding must be"),
    ({"stride": 0}, "positive"), ({"dilation": (1, 2, 3)}, "1 or 2 integers"),
    ({"padding": [[1, 1]]}, "integer"), ({"padding": -1}, "negative padding"),
])
def test_conv_errors(attrs: dict, match: str) -> None:
    x, w = args_of([TensorType(DType.f32, (1, 4, 4, 2)), TensorType(DType.f32, (3, 3, 2, 2))])
    with pytest.raises(GraphTypeError, match=match):
        make("conv2d", x, w, **attrs)


def test_conv_errors_on_layouts() -> None:
    x, w, big = args_of([TensorType(DType.f32, (1, 4, 2)), TensorType(DType.f32, (3, 2, 2)),
                         TensorType(DType.f32, (1, 6, 6, 2))])
    with pytest.raises(GraphTypeError, match=r"needs x \[N,H,W,C\]"):
        make("conv2d", x, w)
    with pytest.raises(GraphTypeError, match="does not fit"):
        make("conv1d", x, make("reshape", make("concat", w, w, axis=0), shape=(6, 2, 2)))
    with pytest.raises(GraphTypeError, match="needs x"):
        make("max_pool2d", x)
    assert make("max_pool2d", big, window=3, padding="same").shape == (1, 2, 2, 2)


def test_pooling_matches_loops() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 7, 3))
    for how, op in (("max", "max_pool2d"), ("sum", "avg_pool2d")):
        got = evaluate(lambda a, op=op: make(op, a, window=(3, 2), stride=(2, 1), padding=1), x)
        want = pool_ref(how, x, window=(3, 2), stride=(2, 1), padding=((1, 1), (1, 1)))
        assert got.shape == (2, 3, 8, 3)
        np.testing.assert_allclose(got, want)
        # the first output row's window covers the pad row and rows 0 and 1
        top = x[:, :2, :2].max(axis=(1, 2)) if how == "max" else x[:, :2, :2].sum(axis=(1, 2)) / 6
        np.testing.assert_allclose(got[:, 0, 1], top)


def test_max_pool_ties_share_the_gradient() -> None:
    x = np.array([[1.0, 1.0, 0.0, 3.0], [1.0, -1.0, 3.0, 3.0]]).reshape(1, 2, 4, 1)
    (g,) = gradient(lambda a: make("max_pool2d", a, window=2), x)
    np.testing.assert_array_equal(g.reshape(2, 4), [[1 / 3, 1 / 3, 0, 1 / 3],
                                                    [1 / 3, 0, 1 / 3, 1 / 3]])
    # overlapping windows add their shares
    (g,) = gradient(lambda a: make("max_pool2d", a, window=(1, 2), stride=1), x)
    np.testing.assert_array_equal(g.reshape(2, 4), [[0.5, 1.5, 0, 1], [1, 0, 1.5, 0.5]])


def test_gradients_go_through_im2col_col2im_and_window_max_grad() -> None:
    """The input's gradient of a convolution is one col2im (not a pad per tap and an add), the
    forward one im2col and a matmul that keeps NHWC (so the bias fuses into the GEMM), and
    max-pooling over tiles is window_max with window_max_grad as its gradient."""
    from graphc.ir.core import Func
    from graphc.passes.autodiff import grad_of
    x = args_of([TensorType(DType.f32, (Dim.sym("N"), 8, 8, 4))])[0]
    w = args_of([TensorType(DType.f32, (3, 3, 4, 6))])[0]
    out = make("max_pool2d", make("conv2d", x, w, padding="same"), window=2)
    (gx,) = grad_of(make("sum", out, axis=None), [x])
    ops = [v.op for v in Func("g", (x, w), (gx,)).values()]
    assert ops.count("im2col") == 1 and ops.count("col2im") == 1
    assert ops.count("window_max") == 1 and ops.count("window_max_grad") == 1
    assert "pad" not in ops and "concat" not in ops and "max" not in ops
    mm = next(v for v in Func("f", (x, w), (out,)).values() if v.op == "matmul")
    assert mm.type.rank == 4
