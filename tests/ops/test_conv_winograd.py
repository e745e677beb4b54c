"""conv2d through Winograd's F(2x2, 3x3) or F(4x4, 3x3) (3x3, stride 1, enough channels): the
decomposition against the definition over paddings, odd sizes and N = 0 and 1; its gradients
(conv2d is bilinear, so a central difference along any direction is exact up to rounding)
through the transformed im2col/col2im and the batched GEMM. Natively:
tests/runtime/test_window_threads.py."""
from __future__ import annotations

import numpy as np
import pytest

from graphc.ir.core import Func, make
from graphc.ir.types import DType, TensorType
from graphc.passes.autodiff import grad_of
from tests.ops.harness import args_of, evaluate
from tests.ops.test_conv import naive_conv
from tests.runtime.conftest import reference

CASES = [  # x shape, w shape, padding, canonical pads
    ((2, 8, 8, 16), (3, 3, 16, 16), "same", ((1, 1), (1, 1))),       # the benchmark's
    ((1, 5, 7, 16), (3, 3, 16, 17), "valid", ((0, 0), (0, 0))),      # odd outputs: 3 x 5
    ((1, 6, 5, 17), (3, 3, 17, 16), ((0, 2), (1, 0)), ((0, 2), (1, 0))),
    ((1, 3, 3, 16), (3, 3, 16, 16), "valid", ((0, 0), (0, 0))),      # one output pixel
    ((0, 4, 4, 16), (3, 3, 16, 16), "same", ((1, 1), (1, 1))),       # N = 0
]


def conv(x: object, w: object, padding: object) -> object:
    return make("conv2d", x, w, padding=padding)


@pytest.mark.parametrize("xs,ws,padding,pads", CASES)
def test_winograd_matches_the_definition(xs, ws, padding, pads) -> None:
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    out = conv(*args_of([TensorType(DType.f64, xs), TensorType(DType.f64, ws)]), padding)
    assert out.op == "col2im" and out.attrs["transform"].startswith("winograd")
    got = evaluate(lambda a, b: conv(a, b, padding), x, w)
    np.testing.assert_allclose(got, naive_conv(x, w, (1, 1), pads, (1, 1), 1), atol=1e-12)


def test_small_or_strided_convolutions_keep_im2col() -> None:
    """Winograd only where it pays and applies: not 1 input channel, not stride 2, dilation
    2, groups or a 2x2 kernel."""
    def op(xs: tuple, ws: tuple, **a: object) -> str:
        x, w = args_of([TensorType(DType.f32, xs), TensorType(DType.f32, ws)])
        return make("conv2d", x, w, **a).op
    assert op((2, 8, 8, 1), (3, 3, 1, 32), padding="same") != "col2im"
    assert op((2, 8, 8, 32), (3, 3, 32, 64), padding="same") == "col2im"
    assert op((2, 8, 8, 32), (3, 3, 32, 64), stride=2) != "col2im"
    assert op((2, 8, 8, 32), (3, 3, 32, 64), dilation=2) != "col2im"
    assert op((2, 8, 8, 32), (3, 3, 16, 64), groups=2) != "col2im"
    assert op((2, 8, 8, 32), (2, 2, 32, 64)) != "col2im"


def test_the_tile_with_fewer_products() -> None:
    """4x4 output tiles (36 products each) on 8x8, 2x2 tiles (16 each) on 2x2, and on a 3x5
    output 2x4 tiles' 72 products against 2x2's 96; the more accurate 2x2 on a tie (6x6)."""
    def transform(hw: tuple) -> str:
        x, w = args_of([TensorType(DType.f32, (1,) + hw + (16,)),
                        TensorType(DType.f32, (3, 3, 16, 16))])
        return make("conv2d", x, w, padding="valid").attrs["transform"]
    assert transform((10, 10)) == "winograd4_out"
    assert transform((4, 4)) == "winograd_out"
    assert transform((5, 7)) == "winograd4_out"
    assert transform((8, 8)) == "winograd_out"


@pytest.mark.parametrize("case", CASES[1:4])
def test_winograd_gradients_along_a_direction(case) -> None:
    """<grad sum(conv * r), (dx, dw)> equals the central difference along (dx, dw)."""
    xs, ws, padding, pads = case
    rng = np.random.default_rng(1)
    x, w, dx, dw = (rng.standard_normal(s) for s in (xs, ws, xs, ws))
    r = rng.standard_normal(naive_conv(x[:0], w, (1, 1), pads, (1, 1), 1).shape[1:])
    gx, gw = _grads(padding, x, w, r)

    def loss(t: float) -> float:
        return float(np.sum(naive_conv(x + t * dx, w + t * dw, (1, 1), pads, (1, 1), 1) * r))
    h = 1e-3
    want = (loss(h) - loss(-h)) / (2 * h)
    got = float(np.sum(gx * dx) + np.sum(gw * dw))
    assert abs(got - want) <= 1e-8 * (1 + abs(want))


def _grads(padding: object, x: np.ndarray, w: np.ndarray, r: np.ndarray) -> list:
    xa, wa, ra = args_of([TensorType(DType.f64, a.shape) for a in (x, w, r)])
    loss = make("sum", conv(xa, wa, padding) * ra, axis=None)
    gx, gw = grad_of(loss, [xa, wa])
    return reference(Func("g", (xa, wa, ra), (gx, gw)), [x, w, r])
