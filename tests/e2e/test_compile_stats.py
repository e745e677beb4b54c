"""What compile-time work rests on (issue 12): the object cache key sees into fused kernels'
bodies, a Func's value order is made once and handed out as a fresh list, and the collector's
pause during a compile nests and restores what it found. No native compile here."""
from __future__ import annotations

import dataclasses
import gc

import graphc
from graphc.ir.core import gc_paused, toposort
from graphc.runtime.module import func_text

SRC = """
graph g {{
    input x: f32[N, 4]
    param w: f32[4, 4]
    h = tanh(x @ w * 2.0) + {c}
    output loss = sum(h * h)
    grad loss
}}
"""


def optimized(c: str) -> dict:
    return graphc.compile_source(SRC.format(c=c), backend="interp").optimized


def test_the_cache_key_text_sees_into_fused_bodies() -> None:
    one, same, other = optimized("1.0"), optimized("1.0"), optimized("1.5")
    bodies = [v for v in one["forward"].values() if v.op == "fused"]
    assert bodies, "the forward pass should hold a fused kernel"
    for name in one:
        assert func_text(one[name]) == func_text(same[name])       # deterministic
    # the constant lives inside a fused body only: the text must still tell them apart
    assert func_text(one["forward"]) != func_text(other["forward"])
    assert "<body 0>" in func_text(one["forward"])


def test_values_are_ordered_once_and_handed_out_fresh() -> None:
    f = optimized("1.0")["backward"]
    first = f.values()
    assert first == toposort(f.results, f.params)
    first.clear()                               # a caller's list: the Func's order is intact
    assert f.values() == toposort(f.results, f.params)
    g = dataclasses.replace(f, results=f.results[:1])
    assert g.values() == toposort(g.results, g.params) and len(g.values()) <= len(f.values())


def test_the_collector_pause_nests_and_restores() -> None:
    was = gc.isenabled()
    try:
        gc.enable()
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()               # the outer pause still holds
        assert gc.isenabled()
        gc.disable()                                # a caller's own choice stands
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        (gc.enable if was else gc.disable)()
