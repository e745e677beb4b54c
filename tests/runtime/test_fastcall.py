"""The native trampoline that fills a call's pointer block (runtime/fastcall.py): the object
offsets it relies on are measured, not assumed; every array lands in its own slot, many
arrays included; and the Python fallback (used where the layout cannot be measured) gives
the same results."""
from __future__ import annotations

import numpy as np
import pytest

import graphc
from graphc.runtime import fastcall

MANY = "graph g {\n" + "".join(f" input a{k}: f64[N]\n" for k in range(40)) + \
    " s = " + " + ".join(f"{k + 1}.0 * a{k}" for k in range(40)) + "\n output s\n}\n"


def test_offsets_are_measured_on_live_objects() -> None:
    size, items = fastcall._tuple_offsets()
    t = (1.5, "x", None)
    import ctypes
    assert ctypes.c_ssize_t.from_address(id(t) + size).value == 3
    assert ctypes.c_void_p.from_address(id(t) + items + 8).value == id(t[1])
    a = np.arange(5.0)[1:]
    assert ctypes.c_void_p.from_address(id(a) + fastcall._data_offset()).value == a.ctypes.data
    assert fastcall.trampoline() is not None


@pytest.mark.parametrize("fallback", [False, True])
def test_every_array_lands_in_its_slot(monkeypatch: pytest.MonkeyPatch, fallback: bool) -> None:
    model = graphc.compile_source(MANY)
    if fallback:            # as where the object layout could not be measured
        monkeypatch.setitem(fastcall._STATE, "fn", None)
    rng = np.random.default_rng(0)
    for n in (1, 33):
        args = {f"a{k}": rng.standard_normal(n) for k in range(40)}
        want = sum((k + 1) * args[f"a{k}"] for k in range(40))
        np.testing.assert_allclose(model(**args)["s"], want, rtol=1e-12)
        # views that are not the start of their buffer: the pointer is the view's own
        views = {k: np.concatenate([[9.0], v])[1:] for k, v in args.items()}
        np.testing.assert_allclose(model(**views)["s"], want, rtol=1e-12)


def test_error_codes_come_back_through_the_trampoline() -> None:
    model = graphc.compile_source("graph g {\n input x: f32[N]\n input i: i64[M]\n"
                                  " y = take(x, i)\n output y\n}\n")
    with pytest.raises(graphc.GraphCallError, match="out of range"):
        model(x=np.ones(3, np.float32), i=np.array([0, 7]))
