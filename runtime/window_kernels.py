"""Kernels of the convolution and pooling primitives (ir/ops/conv.py): im2col, its transpose
col2im (a gather, so each element is written once, in a fixed order), and the max over tiling
windows with its gradient."""
from __future__ import annotations

from typing import Callable

import llvmlite.ir as ll

from graphc.runtime.emit import I64, reg_type
from graphc.runtime.kernel import (
    Kernel,
    combine,
    shape_of,
)
from graphc.runtime.plan import (
    Step,
    View,
)


def _tap_at(k: Kernel, o: ll.Value, t: ll.Value, stride: int, dil: int, lo: int,
            n: ll.Value) -> tuple[ll.Value, ll.Value]:
    """(input row, whether it is inside [0, n)) that window tap ``t`` of output row ``o``
    reads: o*stride + t*dil - lo."""
    b = k.b
    at = b.sub(b.add(b.mul(o, ll.Constant(I64, stride)), b.mul(t, ll.Constant(I64, dil))),
               ll.Constant(I64, lo))
    return at, b.icmp_unsigned("<", at, n)          # unsigned: a negative row is outside too


def _window_attrs(s: Step) -> tuple[tuple[int, int], ...]:
    a = s.value.attrs
    return tuple(zip(a["window"], a["stride"], a["dilation"], a["lo"]))


def emit_im2col(k: Kernel, s: Step) -> None:
    """Per output pixel and tap, a run of C channels copied from the tap's input pixel, or
    zeros where it falls in the padding: no padded copy of the input, one pass over the
    patches, each run unit-stride on both sides. Without dilation along W, a window row that
    lies inside the input is one run of KW*C (its taps are neighbours on both sides)."""
    x = s.args[0]
    em, b = k.em, k.b
    n, h, w, c = (k.dim(d) for d in shape_of(x))
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    oh, ow = k.dim(s.out.shape[1]), k.dim(s.out.shape[2])
    cc = s.value.inputs[0].shape[3]
    zero = em.const(0, reg_type(s.out.dtype))
    rows = dw == 1 and isinstance(x, View) and x.strides[3] == 1 and x.strides[2] == cc

    def taps(ni: ll.Value, oi: ll.Value, oj: ll.Value, ti: ll.Value, hi_: ll.Value,
             in_h: ll.Value) -> None:
        with em.loop(ll.Constant(I64, kw), "tj") as tj:
            wi, in_w = _tap_at(k, oj, tj, sw, dw, lw, w)
            base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj), ll.Constant(I64, cc))
            with b.if_else(b.and_(in_h, in_w)) as (inside, outside):
                with inside, em.loop(c, "cc") as ci:
                    k.store(k.load(x, [ni, hi_, wi, ci]), s.out, [ni, oi, oj, b.add(base, ci)])
                with outside, em.loop(c, "cz") as ci:
                    k.store(zero, s.out, [ni, oi, oj, b.add(base, ci)])

    with k.unless_empty(s.out.shape), em.loop_nest([n, oh, ow], "col") as (ni, oi, oj), \
            em.loop(ll.Constant(I64, kh), "ti") as ti:
        hi_, in_h = _tap_at(k, oi, ti, sh, dh, lh, h)
        if rows:
            w0, _ = _tap_at(k, oj, ll.Constant(I64, 0), sw, dw, lw, w)
            fits = b.and_(b.icmp_signed(">=", w0, ll.Constant(I64, 0)),
                          b.icmp_signed("<=", b.add(w0, ll.Constant(I64, kw)), w))
            with b.if_else(b.and_(in_h, fits)) as (whole, edge):
                with whole, em.loop(ll.Constant(I64, kw * cc), "cr") as e:
                    base = b.mul(ti, ll.Constant(I64, kw * cc))
                    k.store(k.load(x, [ni, hi_, w0, e]), s.out, [ni, oi, oj, b.add(base, e)])
                with edge:
                    taps(ni, oi, oj, ti, hi_, in_h)
        else:
            taps(ni, oi, oj, ti, hi_, in_h)


def emit_col2im(k: Kernel, s: Step) -> None:
    """im2col's transpose as a gather, not a scatter: each input pixel sums, over the taps in
    row-major order (as the reference does, so the sums are the same), the channel runs of the
    output pixels whose window covers it. Each element is written by one iteration alone: no
    races between threads and no dependence on their order."""
    p = s.args[0]
    em, b = k.em, k.b
    n, h, w, c = (k.dim(d) for d in s.out.shape)
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    oh, ow = (k.dim(d) for d in shape_of(p)[1:3])
    cc = s.out.shape[3]
    zero = em.const(0, reg_type(s.out.dtype))
    with k.unless_empty(s.out.shape), em.loop_nest([n, h, w], "im") as (ni, hi_, wi):
        with em.loop(c, "iz") as ci:
            k.store(zero, s.out, [ni, hi_, wi, ci])
        with em.loop(ll.Constant(I64, kh), "ti") as ti:
            oi, in_h = _source(k, hi_, ti, sh, dh, lh, oh)
            with em.loop(ll.Constant(I64, kw), "tj") as tj:
                oj, in_w = _source(k, wi, tj, sw, dw, lw, ow)
                base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj), ll.Constant(I64, cc))
                with b.if_then(b.and_(in_h, in_w)), em.loop(c, "ia") as ci:
                    at = [ni, hi_, wi, ci]
                    k.store(em.add(k.load(s.out, at), k.load(p, [ni, oi, oj, b.add(base, ci)])),
                            s.out, at)


def _source(k: Kernel, i: ll.Value, t: ll.Value, stride: int, dil: int, lo: int,
            n: ll.Value) -> tuple[ll.Value, ll.Value]:
    """(output row, whether there is one in [0, n)) whose tap ``t`` reads input row ``i``:
    o = (i + lo - t*dil) / stride, when that divides exactly."""
    b = k.b
    num = b.sub(b.add(i, ll.Constant(I64, lo)), b.mul(t, ll.Constant(I64, dil)))
    if stride == 1:
        return num, b.icmp_unsigned("<", num, n)
    st = ll.Constant(I64, stride)
    o = b.sdiv(num, st)
    exact = b.and_(b.icmp_signed(">=", num, ll.Constant(I64, 0)),
                   b.icmp_signed("==", b.srem(num, st), ll.Constant(I64, 0)))
    return o, b.and_(exact, b.icmp_unsigned("<", o, n))


def _window_taps(k: Kernel, window: tuple[int, int], oi: ll.Value, oj: ll.Value,
                 body: Callable[[ll.Value, ll.Value], None]) -> None:
    """body(h, w) for every pixel of the window of output pixel (oi, oj) (windows tile x)."""
    b = k.b
    with k.em.loop(ll.Constant(I64, window[0]), "wa") as a, \
            k.em.loop(ll.Constant(I64, window[1]), "wb") as c:
        body(b.add(b.mul(oi, ll.Constant(I64, window[0])), a),
             b.add(b.mul(oj, ll.Constant(I64, window[1])), c))


def emit_window_max(k: Kernel, s: Step) -> None:
    """Each output pixel's C channels start at -inf and take the max (NaN wins, as the max
    reduction's) of each of its window's pixels in turn: unit-stride runs of C."""
    x = s.args[0]
    em = k.em
    n, oh, ow, c = (k.dim(d) for d in s.out.shape)
    start = em.const(float("-inf"), reg_type(s.out.dtype))
    with k.unless_empty(s.out.shape), em.loop_nest([n, oh, ow], "wm") as (ni, oi, oj):
        with em.loop(c, "wi") as ci:
            k.store(start, s.out, [ni, oi, oj, ci])

        def take(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "wc") as ci:
                at = [ni, oi, oj, ci]
                k.store(combine(k, "max", k.load(s.out, at), k.load(x, [ni, h, w, ci])),
                        s.out, at)
        _window_taps(k, s.value.attrs["window"], oi, oj, take)


def emit_window_max_grad(k: Kernel, s: Step) -> None:
    """Per window: its pixels equal to the max marked 1 (else 0) and counted per channel, the
    count turned into g / count, then the marks scaled by it. The same numbers as the max
    rule's g * hit / count (hit is 0 or 1), with one division per window, not per pixel."""
    x, out, g = s.args
    em, b = k.em, k.b
    n, oh, ow, c = (k.dim(d) for d in shape_of(out))
    et = reg_type(s.out.dtype)
    one, zero = em.const(1, et), em.const(0, et)
    count = em.alloca_entry(ll.ArrayType(et, int(s.out.shape[3])), "ties")

    def cell(ci: ll.Value) -> ll.Value:
        return b.gep(count, [ll.Constant(I64, 0), ci], inbounds=True)
    window = s.value.attrs["window"]
    with k.unless_empty(shape_of(out)), em.loop_nest([n, oh, ow], "wg") as (ni, oi, oj):
        with em.loop(c, "wz") as ci:
            b.store(zero, cell(ci))

        def mark(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "wh") as ci:
                hit = em.select(em.eq(k.load(x, [ni, h, w, ci]), k.load(out, [ni, oi, oj, ci])),
                                one, zero)
                k.store(hit, s.out, [ni, h, w, ci])
                b.store(em.add(b.load(cell(ci), typ=et), hit), cell(ci))
        _window_taps(k, window, oi, oj, mark)
        with em.loop(c, "wq") as ci:
            b.store(em.div(k.load(g, [ni, oi, oj, ci]), b.load(cell(ci), typ=et)), cell(ci))

        def scale(h: ll.Value, w: ll.Value) -> None:
            with em.loop(c, "ws") as ci:
                at = [ni, h, w, ci]
                k.store(em.mul(k.load(s.out, at), b.load(cell(ci), typ=et)), s.out, at)
        _window_taps(k, window, oi, oj, scale)
