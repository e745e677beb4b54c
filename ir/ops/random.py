"""Random numbers from a counter-based generator (Philox-4x32-10, Salmon et al. 2011): element i
of a random op is a pure function of (key, stream, i), so the interpreter and native code give
the same bits at any thread count, and recomputing a value (checkpointing) gives it again.

``key`` is an integer scalar operand (an input, or a literal); ``stream`` is an attribute that
the front end numbers afresh for every random call it elaborates, so two random ops never share
numbers for one key and common-subexpression elimination, which compares attributes, never
merges two of them. ``random_normal`` is Box-Muller on two 53-bit uniforms: exactly N(0, 1)."""
from __future__ import annotations

from typing import Any

import numpy as np

from graphc.ir.core import Value, make
from graphc.ir.errors import GraphTypeError
from graphc.ir.ops.registry import COMPOSITE, CREATE, REQUIRED, defop
from graphc.ir.ops.rules import (
    FLOAT,
    N,
    as_dtype,
    as_int,
    as_shape,
    call,
    fail,
    no_grad,
    require,
    sample,
)
from graphc.ir.types import Dim, DimLike, DType, TensorType, dim_add, dim_mul, dim_prod

# Philox-4x32 constants (Random123)
M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
ROUNDS = 10
MASK = 0xFFFFFFFF


def philox(n: int, key: int, stream: int, start: int = 0) -> tuple[np.ndarray, ...]:
    """The four 32-bit words of Philox-4x32-10 for counters (i, stream, 0), start <= i <
    start + n, as uint64."""
    i = np.arange(start, start + n, dtype=np.uint64)
    c = [i & MASK, i >> np.uint64(32), np.full(n, stream & MASK, np.uint64),
         np.zeros(n, np.uint64)]
    k0, k1 = key & MASK, (key >> 32) & MASK
    for r in range(ROUNDS):
        if r:
            k0, k1 = (k0 + W0) & MASK, (k1 + W1) & MASK
        p0, p1 = c[0] * np.uint64(M0), c[2] * np.uint64(M1)
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0), p1 & np.uint64(MASK),
             (p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1), p0 & np.uint64(MASK)]
    return tuple(c)


def unit53(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """A float64 in [0, 1) from 32 + 21 random bits: exact, every multiple of 2^-53."""
    return ((hi << np.uint64(21)) | (lo >> np.uint64(11))).astype(np.float64) * 2.0 ** -53


def random_ref(key: np.ndarray, *, shape: tuple, dtype: DType, stream: int, dist: str,
               out_shape: tuple, out_dtype: np.dtype, counter: int = 0) -> np.ndarray:
    n = int(np.prod(out_shape, dtype=np.int64))
    r = philox(n, int(np.asarray(key).astype(np.int64)) & 0xFFFFFFFFFFFFFFFF, stream,
               int(counter))
    if dist == "uniform":
        if dtype is DType.f32:
            u = (r[0] >> np.uint64(8)).astype(np.float32) * np.float32(2.0 ** -24)
        else:
            u = unit53(r[0], r[1])
        return u.astype(out_dtype).reshape(out_shape)
    u1 = 1.0 - unit53(r[0], r[1])                # (0, 1]: log never sees 0
    u2 = unit53(r[2], r[3])
    z = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return z.astype(out_dtype).reshape(out_shape)


def _canon_random(name: str, types: tuple[TensorType, ...], attrs: dict[str, Any]
                  ) -> dict[str, Any]:
    key = types[0]
    if not key.dtype.is_int or key.rank != 0:
        raise fail(name, types, "the key must be an integer scalar")
    dtype = as_dtype(attrs["dtype"])
    if not dtype.is_float:
        raise GraphTypeError(f"{name}: dtype must be a float type, got {dtype}")
    start = attrs.get("counter", 0)
    if not isinstance(start, Dim) and (not isinstance(start, int) or start < 0):
        raise GraphTypeError(f"{name}: counter must be a dim >= 0, got {start!r}")
    return {"shape": as_shape(name, attrs["shape"]), "dtype": dtype,
            "stream": as_int(name, "stream", attrs["stream"]), "counter": start}


# ``counter``: where the element counter starts (0 in .graph code): a micro-batch's slice of a
# draw takes the slice's rows of the whole batch's draw (``slice_of_batch``)
RANDOM_ATTRS = (("shape", REQUIRED), ("dtype", DType.f32), ("stream", 0), ("counter", 0))
RANDOM_OPS = ("random_uniform", "random_normal")
RANDOM_SAMPLES = (sample("i64[]", shape=(N, 3)), sample("i32[]", shape=(2, N), dtype=DType.f64),
                  sample("i64[]", shape=(), stream=7),
                  sample("i64[]", shape=(5,), stream=3, domain=((-3, 3),)))


def _dist(name: str, dist: str, attrs: dict[str, Any]) -> str:
    if attrs["dist"] != dist:
        raise GraphTypeError(f"{name}: draws from the {dist} distribution, not {attrs['dist']!r}")
    return dist


def random_op(name: str, dist: str) -> None:
    # ``dist`` is fixed per op (an attribute so that the kernel and the reference read it)
    defop(name, CREATE, ("key",), attrs=RANDOM_ATTRS + (("dist", dist),),
          canon=lambda types, a: dict(_canon_random(name, types, a), dist=_dist(name, dist, a)),
          infer=lambda key, *, shape, dtype, stream, dist, counter=0: TensorType(dtype, shape),
          ref=random_ref, wants_out=True, vjp=no_grad, differentiable=False,
          samples=RANDOM_SAMPLES, domain=((-2 ** 31, 2 ** 31 - 1),))


random_op("random_uniform", "uniform")
random_op("random_normal", "normal")


def slice_of_batch(v: Value, j: int, batch: DimLike) -> Value:
    """Random op ``v`` (any other value as it is) as slice ``j`` of a batch cut into slices
    of ``batch`` rows draws it. A draw whose shape holds ``batch`` counts on past the j
    earlier slices' elements: with ``batch`` leading, those are the rows j*batch... of the
    whole batch's draw, so micro-batches see the numbers the whole batch would (dropout's
    masks); elsewhere, each slice draws afresh. A draw without it is the same for every slice,
    as it is once for the whole batch."""
    if v.op not in RANDOM_OPS or j == 0 or not any(d == batch for d in v.attrs["shape"]):
        return v
    skip = dim_mul(j, dim_prod(v.attrs["shape"]))
    return make(v.op, *v.inputs, loc=v.loc,
                **{**v.attrs.as_dict(), "counter": dim_add(v.attrs["counter"], skip)})


# ---------------------------------------------------------------------------- dropout


def _canon_dropout(types: tuple[TensorType, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    x, rate, key = types
    require("dropout", FLOAT, x)
    # a literal rate may come typed f32 beside an f64 x (it is cast to x's dtype)
    if rate.rank != 0 or not rate.dtype.is_float or not key.dtype.is_int or key.rank != 0:
        raise fail("dropout", types, "needs x, a float scalar rate and an integer scalar key")
    return {"stream": as_int("dropout", "stream", attrs["stream"])}


def _dropout(x: Value, rate: Value, key: Value, *, stream: int) -> Value:
    """Inverted dropout: each element kept with probability 1 - rate and scaled by 1/(1-rate);
    the scale is masked before it meets x, so rate 1 gives zeros with a zero gradient."""
    u = make("random_uniform", key, shape=x.shape, dtype=x.dtype, stream=stream)
    rate = rate if rate.dtype is x.dtype else make("cast", rate, dtype=x.dtype)
    scale = call("where", call("ge", u, rate), 1 / (1 - rate), 0)
    return x * scale


def _dropout_ref(x: np.ndarray, rate: np.ndarray, key: np.ndarray, *, stream: int
                 ) -> np.ndarray:
    u = random_ref(key, shape=x.shape, dtype=DType.from_np(x.dtype), stream=stream,
                   dist="uniform", out_shape=x.shape, out_dtype=x.dtype)
    rate = np.asarray(rate).astype(x.dtype)
    with np.errstate(divide="ignore"):
        return x * np.where(u >= rate, 1 / (1 - rate), 0).astype(x.dtype)


defop("dropout", COMPOSITE, ("x", "rate", "key"), attrs=(("stream", 0),),
      canon=_canon_dropout, decompose=_dropout, ref=_dropout_ref,
      domain=((-2.0, 2.0), (0.2, 0.6), (-100, 100)),
      samples=(sample("f32[N,4]", "f32[]", "i64[]"),
               sample("f64[2,N]", "f64[]", "i32[]", stream=5),
               sample("f64[N,2]", "f32[]", "i64[]")))
