"""Kernels of the convolution and pooling primitives (ir/ops/conv.py, ir/ops/pool.py): im2col,
its transpose col2im (a gather, so each element is written once, in a fixed order), their
transformed forms (Winograd's tiles: planes of linear combinations of a window's taps; col2im's
adds an image's windows in row-major order), and the max over tiling windows with its gradient.

Every kernel's work is a loop over the batch whose iterations touch disjoint parts of the
result, so it runs as parts on the worker pool (runtime/pool.py) when the build has threads:
each image is computed by the same code in the same order whichever thread runs it."""
from __future__ import annotations

from collections.abc import Callable

import llvmlite.ir as ll

from graphc.ir.ops.conv import TRANSFORMS
from graphc.ir.types import DimLike, dim_prod
from graphc.runtime import pool
from graphc.runtime.emit import I64, reg_type
from graphc.runtime.kernel import Kernel
from graphc.runtime.lowering import combine, shape_of
from graphc.runtime.plan import (
    Step,
    View,
)

Body = Callable[[Kernel, ll.Value, ll.Value], None]
BLOCK_ELEMENTS = 4096       # a transformed im2col's stack buffer of planes: 16 KB of f32


def _per_image(k: Kernel, s: Step, batch: DimLike, per_item: tuple[DimLike, ...], body: Body,
               name: str) -> None:
    """``body(kk, lo, hi)`` over images lo..hi-1 of ``batch``, split over the pool's threads
    when the build has them (``per_item``: the dims of what one image touches)."""
    pool.split_loop(k, k.dim(batch), k.dim(dim_prod(per_item)),
                    lambda kk, lo, hi, _: body(kk, lo, hi), name=name)


def _tap_at(k: Kernel, o: ll.Value, t: ll.Value, stride: int, dil: int, lo: int,
            n: ll.Value) -> tuple[ll.Value, ll.Value]:
    """(input row, whether it is inside [0, n)) that window tap ``t`` of output row ``o``
    reads: o*stride + t*dil - lo."""
    b = k.b
    at = b.sub(b.add(b.mul(o, ll.Constant(I64, stride)), b.mul(t, ll.Constant(I64, dil))),
               ll.Constant(I64, lo))
    return at, b.icmp_unsigned("<", at, n)          # unsigned: a negative row is outside too


def _window_attrs(s: Step) -> tuple[tuple[int, int, int, int], ...]:
    a = s.value.attrs
    return tuple(zip(a["window"], a["stride"], a["dilation"], a["lo"]))


def emit_im2col(k: Kernel, s: Step) -> None:
    """Per output pixel and tap, a run of C channels copied from the tap's input pixel, or
    zeros where it falls in the padding: no padded copy of the input, one pass over the
    patches, each run unit-stride on both sides. Without dilation along W, a window row that
    lies inside the input is one run of KW*C (its taps are neighbours on both sides)."""
    if s.value.attrs["transform"]:
        _emit_im2col_planes(k, s)
        return
    x = s.args[0]
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    cc = s.value.inputs[0].shape[3]
    rows = dw == 1 and isinstance(x, View) and x.strides[3] == 1 and x.strides[2] == cc

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em, b = k.em, k.b
        n, h, w, c = (k.dim(d) for d in shape_of(x))
        oh, ow = k.dim(s.out.shape[1]), k.dim(s.out.shape[2])
        zero = em.const(0, reg_type(s.out.dtype))

        def taps(ni: ll.Value, oi: ll.Value, oj: ll.Value, ti: ll.Value, hi_: ll.Value,
                 in_h: ll.Value) -> None:
            with em.loop(ll.Constant(I64, kw), "tj") as tj:
                wi, in_w = _tap_at(k, oj, tj, sw, dw, lw, w)
                base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj), ll.Constant(I64, cc))
                with b.if_else(b.and_(in_h, in_w)) as (inside, outside):
                    with inside, em.loop(c, "cc") as ci:
                        k.store(k.load(x, [ni, hi_, wi, ci]), s.out,
                                [ni, oi, oj, b.add(base, ci)])
                    with outside, em.loop(c, "cz") as ci:
                        k.store(zero, s.out, [ni, oi, oj, b.add(base, ci)])

        with k.unless_empty(s.out.shape), \
                em.loop_nest([n, oh, ow], "col", (0, lo, hi)) as (ni, oi, oj), \
                em.loop(ll.Constant(I64, kh), "ti") as ti:
            hi_, in_h = _tap_at(k, oi, ti, sh, dh, lh, h)
            if rows:
                w0, _ = _tap_at(k, oj, ll.Constant(I64, 0), sw, dw, lw, w)
                fits = b.and_(b.icmp_signed(">=", w0, ll.Constant(I64, 0)),
                              b.icmp_signed("<=", b.add(w0, ll.Constant(I64, kw)), w))
                with b.if_else(b.and_(in_h, fits)) as (whole, edge):
                    with whole, em.loop(ll.Constant(I64, kw * cc), "cr") as e:
                        base = b.mul(ti, ll.Constant(I64, kw * cc))
                        k.store(k.load(x, [ni, hi_, w0, e]), s.out,
                                [ni, oi, oj, b.add(base, e)])
                    with edge:
                        taps(ni, oi, oj, ti, hi_, in_h)
            else:
                taps(ni, oi, oj, ti, hi_, in_h)
    _per_image(k, s, s.out.shape[0], s.out.shape[1:], body, "im2col")


def emit_col2im(k: Kernel, s: Step) -> None:
    """im2col's transpose as a gather, not a scatter: each input pixel sums, over the taps in
    row-major order (as the reference does, so the sums are the same), the channel runs of the
    output pixels whose window covers it. Each element is written by one iteration alone: no
    races between threads and no dependence on their order."""
    if s.value.attrs["transform"]:
        _emit_col2im_planes(k, s)
        return
    p = s.args[0]
    (kh, sh, dh, lh), (kw, sw, dw, lw) = _window_attrs(s)
    cc = s.out.shape[3]

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em, b = k.em, k.b
        n, h, w, c = (k.dim(d) for d in s.out.shape)
        oh, ow = (k.dim(d) for d in shape_of(p)[1:3])
        zero = em.const(0, reg_type(s.out.dtype))
        with k.unless_empty(s.out.shape), \
                em.loop_nest([n, h, w], "im", (0, lo, hi)) as (ni, hi_, wi):
            with em.loop(c, "iz") as ci:
                k.store(zero, s.out, [ni, hi_, wi, ci])
            with em.loop(ll.Constant(I64, kh), "ti") as ti:
                oi, in_h = _source(k, hi_, ti, sh, dh, lh, oh)
                with em.loop(ll.Constant(I64, kw), "tj") as tj:
                    oj, in_w = _source(k, wi, tj, sw, dw, lw, ow)
                    base = b.mul(b.add(b.mul(ti, ll.Constant(I64, kw)), tj),
                                 ll.Constant(I64, cc))
                    with b.if_then(b.and_(in_h, in_w)), em.loop(c, "ia") as ci:
                        at = [ni, hi_, wi, ci]
                        k.store(em.add(k.load(s.out, at),
                                       k.load(p, [ni, oi, oj, b.add(base, ci)])), s.out, at)
    _per_image(k, s, s.out.shape[0], shape_of(p)[1:], body, "col2im")


def _combine(k: Kernel, terms: list[tuple[float, ll.Value]], zero: ll.Value) -> ll.Value:
    """sum of coef * value, in order, zero coefficients skipped and +-1 as adds and subtracts
    (the transforms' coefficients are 0, +-1 and +-1/2, so each product is exact)."""
    em = k.em
    acc = None
    for coef, v in terms:
        if coef == 0:
            continue
        term = v if abs(coef) == 1 else em.mul(em.const(abs(coef), v.type), v)
        if acc is None:
            acc = term if coef > 0 else em.neg(term)
        else:
            acc = em.add(acc, term) if coef > 0 else em.sub(acc, term)
    return zero if acc is None else acc


def _separable(k: Kernel, pq: tuple, vals: list[list[ll.Value]], zero: ll.Value,
               transpose: bool) -> list[list[ll.Value]]:
    """kron(P, Q) applied to a window's values as P v Q^T (or its transpose P^T v Q): two
    passes of small sums, not one of |P|*|Q| terms per result."""
    p, q = pq
    if transpose:       # v is [len(P), len(Q)] planes; result [taps of P, taps of Q]
        rows = [[_combine(k, [(p[i][a], vals[i][j]) for i in range(len(p))], zero)
                 for j in range(len(q))] for a in range(len(p[0]))]
        return [[_combine(k, [(q[j][bb], rows[a][j]) for j in range(len(q))], zero)
                 for bb in range(len(q[0]))] for a in range(len(p[0]))]
    rows = [[_combine(k, [(p[i][a], vals[a][bb]) for a in range(len(p[0]))], zero)
             for bb in range(len(q[0]))] for i in range(len(p))]
    return [[_combine(k, [(q[j][bb], rows[i][bb]) for bb in range(len(q[0]))], zero)
             for j in range(len(q))] for i in range(len(p))]


def _tile_taps(k: Kernel, s: Step, oi: ll.Value, oj: ll.Value, hw: tuple[ll.Value, ll.Value]
               ) -> tuple[list[tuple[ll.Value, ll.Value]], list[tuple[ll.Value, ll.Value]]]:
    """Per window row and per window column of tile (oi, oj): (the input index clamped into
    the input, whether it is inside), so a load is always in bounds and a select zeroes it."""
    b = k.b
    out = []
    for o, (size, stride, dil, lo), n in zip((oi, oj), _window_attrs(s), hw):
        axis = []
        for t in range(size):
            at, inside = _tap_at(k, o, ll.Constant(I64, t), stride, dil, lo, n)
            axis.append((b.select(inside, at, ll.Constant(I64, 0)), inside))
        out.append(axis)
    return out[0], out[1]


def _emit_im2col_planes(k: Kernel, s: Step) -> None:
    """im2col with a transform (Winograd's input tiles): per window and channel run, the
    window's taps read once (zero in the padding: a select, so the channel loop has no branch)
    and the transform's planes made, plane r going to out[r, n, i, j, :]. The planes lie far
    apart (a power of two, often), so storing each window's R runs straight there would
    thrash the cache sets they share: a block of windows along a row is made into a stack
    buffer first, then each plane's run of the block copied out whole."""
    x = s.args[0]
    pq = TRANSFORMS[s.value.attrs["transform"]]
    nplanes, cc = s.out.shape[0], s.out.shape[4]
    block = max(1, BLOCK_ELEMENTS // (nplanes * cc))
    if isinstance(s.out.shape[3], int):
        block = max(1, min(block, s.out.shape[3]))
    et = reg_type(s.out.dtype)

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em, b = k.em, k.b
        n, h, w, c = (k.dim(d) for d in shape_of(x))
        th, tw = k.dim(s.out.shape[2]), k.dim(s.out.shape[3])
        zero = em.const(0, et)
        buf = em.alloca_entry(ll.ArrayType(et, nplanes * block * cc), "planes")
        nonempty = b.and_(b.icmp_signed(">", h, ll.Constant(I64, 0)),
                          b.icmp_signed(">", w, ll.Constant(I64, 0)))
        blk = ll.Constant(I64, block)
        nblocks = b.sdiv(b.add(tw, ll.Constant(I64, block - 1)), blk)
        with k.unless_empty(s.out.shape), b.if_else(nonempty) as (some, none):
            with some, em.loop_nest([n, th, nblocks], "wt", (0, lo, hi)) as (ni, oi, jb):
                j0 = b.mul(jb, blk)
                count = b.select(b.icmp_signed("<", b.sub(tw, j0), blk), b.sub(tw, j0), blk)
                with em.loop(count, "wu") as u:
                    oj = b.add(j0, u)
                    rows, cols = _tile_taps(k, s, oi, oj, (h, w))
                    ok = [[b.and_(ri, ci_) for _, ci_ in cols] for _, ri in rows]
                    with em.loop(c, "wc") as ci:
                        vals = [[em.select(ok[a][bb],
                                           k.load(x, [ni, rows[a][0], cols[bb][0], ci]), zero)
                                 for bb in range(len(cols))] for a in range(len(rows))]
                        planes = _separable(k, pq, vals, zero, transpose=False)
                        for i, row in enumerate(planes):
                            for j, v in enumerate(row):
                                at = b.add(b.mul(b.add(ll.Constant(I64, (i * len(row) + j) *
                                                                   block), u),
                                                 ll.Constant(I64, cc)), ci)
                                b.store(v, b.gep(buf, [ll.Constant(I64, 0), at], inbounds=True))
                run = b.mul(count, ll.Constant(I64, cc))
                with em.loop(ll.Constant(I64, nplanes), "wr") as r, em.loop(run, "we") as e:
                    at = b.add(b.mul(r, ll.Constant(I64, block * cc)), e)
                    v = b.load(b.gep(buf, [ll.Constant(I64, 0), at], inbounds=True), typ=et)
                    # [r, n, i, j0, e]: e runs on through the block's windows (j, c adjacent)
                    k.store(v, s.out, [r, ni, oi, j0, e])
            # no input pixel at all (only padding): every plane is 0
            with none, em.loop_nest([k.dim(d) for d in s.out.shape], "wz", (1, lo, hi)) as idx:
                k.store(zero, s.out, idx)
    _per_image(k, s, s.out.shape[1], (s.out.shape[0],) + s.out.shape[2:], body, "planes")


def _emit_col2im_planes(k: Kernel, s: Step) -> None:
    """col2im with a transform: per window, its taps from its planes (the transposed
    transform), then each tap inside the output added at its pixel: an image's windows in
    row-major order. Windows that tile the output (Winograd's output tiles: stride = window,
    none before the first pixel or past the last) store their taps as they make them; else
    the image is zeroed first and the taps go through a stack buffer."""
    p = s.args[0]
    a = s.value.attrs
    pq = TRANSFORMS[a["transform"]]
    cc = s.out.shape[3]
    et = reg_type(s.out.dtype)
    covered = all(isinstance(t, int) and isinstance(d, int) and t * st >= d for t, st, d in
                  zip(shape_of(p)[2:4], a["stride"], s.out.shape[1:3]))
    tiles = covered and a["stride"] == a["window"] and a["lo"] == (0, 0) and \
        a["dilation"] == (1, 1)
    ntaps = a["window"][0] * a["window"][1]

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em, b = k.em, k.b
        n, h, w, c = (k.dim(d) for d in s.out.shape)
        th, tw = (k.dim(d) for d in shape_of(p)[2:4])
        zero = em.const(0, et)
        buf = em.alloca_entry(ll.ArrayType(et, ntaps * cc), "taps")

        def cell(t: int, ci: ll.Value) -> ll.Value:
            return b.gep(buf, [ll.Constant(I64, 0), b.add(ll.Constant(I64, t * cc), ci)],
                         inbounds=True)
        with k.unless_empty(s.out.shape):
            if not tiles:
                with em.loop_nest([n, h, w, c], "cz", (0, lo, hi)) as idx:
                    k.store(zero, s.out, idx)
            with em.loop_nest([n, th, tw], "ct", (0, lo, hi)) as (ni, oi, oj):
                rows, cols = _tile_taps(k, s, oi, oj, (h, w))

                def taps_at(ci: ll.Value) -> list[list[ll.Value]]:
                    vals = [[k.load(p, [ll.Constant(I64, i * len(pq[1]) + j), ni, oi, oj, ci])
                             for j in range(len(pq[1]))] for i in range(len(pq[0]))]
                    return _separable(k, pq, vals, zero, transpose=True)

                def buffered() -> None:
                    with em.loop(c, "cp") as ci:
                        for ta, row in enumerate(taps_at(ci)):
                            for tb, v in enumerate(row):
                                b.store(v, cell(ta * len(row) + tb, ci))
                    for ta, (hi_, in_h) in enumerate(rows):
                        for tb, (wi, in_w) in enumerate(cols):
                            with b.if_then(b.and_(in_h, in_w)), em.loop(c, "ca") as ci:
                                v = b.load(cell(ta * len(cols) + tb, ci), typ=et)
                                at = [ni, hi_, wi, ci]
                                k.store(v if tiles else em.add(k.load(s.out, at), v), s.out, at)
                if not tiles:
                    buffered()
                else:                       # a window wholly inside: no buffer
                    inside = rows[0][1]
                    for _, ok in rows[1:] + cols:
                        inside = b.and_(inside, ok)
                    with b.if_else(inside, likely=True) as (whole, edge):
                        with whole, em.loop(c, "cd") as ci:
                            for (hi_, _), row in zip(rows, taps_at(ci)):
                                for (wi, _), v in zip(cols, row):
                                    k.store(v, s.out, [ni, hi_, wi, ci])
                        with edge:
                            buffered()
    _per_image(k, s, s.out.shape[0], s.out.shape[1:] + (4,), body, "unplanes")


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


def _window_pixels(k: Kernel, window: tuple[int, int], oi: ll.Value, oj: ll.Value
                   ) -> list[tuple[ll.Value, ll.Value]]:
    """(h, w) of every pixel of output pixel (oi, oj)'s window, row-major (windows tile x)."""
    b = k.b
    return [(b.add(b.mul(oi, ll.Constant(I64, window[0])), ll.Constant(I64, a)),
             b.add(b.mul(oj, ll.Constant(I64, window[1])), ll.Constant(I64, c)))
            for a in range(window[0]) for c in range(window[1])]


def emit_window_max(k: Kernel, s: Step) -> None:
    """Per output pixel and channel: -inf, then the max (NaN wins, as the max reduction's)
    with each of its window's pixels in row-major order, in registers: one store."""
    x = s.args[0]
    window = s.value.attrs["window"]

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em = k.em
        n, oh, ow, c = (k.dim(d) for d in s.out.shape)
        start = em.const(float("-inf"), reg_type(s.out.dtype))
        with k.unless_empty(s.out.shape), \
                em.loop_nest([n, oh, ow], "wm", (0, lo, hi)) as (ni, oi, oj):
            pixels = _window_pixels(k, window, oi, oj)
            with em.loop(c, "wc") as ci:
                acc = start
                for h, w in pixels:
                    acc = combine(k, "max", acc, k.load(x, [ni, h, w, ci]))
                k.store(acc, s.out, [ni, oi, oj, ci])
    _per_image(k, s, s.out.shape[0], shape_of(x)[1:], body, "wmax")


def emit_window_max_grad(k: Kernel, s: Step) -> None:
    """Per window and channel, in registers: its pixels equal to the max marked 1 (else 0)
    and counted, g / count, then each pixel's mark times it stored. The same numbers as the
    max rule's g * hit / count (hit is 0 or 1), with one division per window, not per
    pixel, and one pass over x and the result."""
    x, out, g = s.args
    window = s.value.attrs["window"]

    def body(k: Kernel, lo: ll.Value, hi: ll.Value) -> None:
        em = k.em
        n, oh, ow, c = (k.dim(d) for d in shape_of(out))
        et = reg_type(s.out.dtype)
        one, zero = em.const(1, et), em.const(0, et)
        with k.unless_empty(shape_of(out)), \
                em.loop_nest([n, oh, ow], "wg", (0, lo, hi)) as (ni, oi, oj):
            pixels = _window_pixels(k, window, oi, oj)
            with em.loop(c, "wh") as ci:
                top = k.load(out, [ni, oi, oj, ci])
                hits = [em.select(em.eq(k.load(x, [ni, h, w, ci]), top), one, zero)
                        for h, w in pixels]
                count = zero
                for hit in hits:
                    count = em.add(count, hit)
                share = em.div(k.load(g, [ni, oi, oj, ci]), count)
                for (h, w), hit in zip(pixels, hits):
                    k.store(em.mul(hit, share), s.out, [ni, h, w, ci])
    _per_image(k, s, s.out.shape[0], s.out.shape[1:], body, "wmaxgrad")
