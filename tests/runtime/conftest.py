"""Shared helpers for the native backend's tests: compile with a private cache directory and
compare native results with the reference interpreter."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pytest

import graphc
from graphc.ir import interp
from graphc.ir.core import Func


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                   ) -> None:
    """Tests never read or write the user's cache."""
    monkeypatch.setenv("GRAPHC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "graphc-cache"))


def tolerance(dtype: np.dtype) -> dict[str, float]:
    """f32 results near zero that come out of a cancellation (``1 - tanh(x)**2`` near
    saturation, times values of order 1) keep a few ulp of the operands' magnitude: the absolute
    tolerance is a few ulp of 1, so the vectorised and the scalar (debug) builds both pass."""
    return dict(rtol=2e-5, atol=5e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-13)


def assert_matches(got: Sequence[np.ndarray], want: Sequence[np.ndarray], what: str = "") -> None:
    assert len(got) == len(want), what
    for k, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape and g.dtype == w.dtype, (what, k, g.shape, w.shape, g.dtype,
                                                           w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, err_msg=f"{what} result {k}", **tolerance(w.dtype))
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"{what} result {k}")


def named(func: Func, arrays: Sequence[Any]) -> dict[str, Any]:
    return {p.attrs["name"]: a for p, a in zip(func.params, arrays)}


def reference(func: Func, arrays: Sequence[Any], env: dict[str, int] | None = None
              ) -> list[np.ndarray]:
    return interp.run(func, named(func, arrays), env)


def models_by_threads(src: str, threads: Sequence[int] = (1, 2, 3)) -> dict[object, graphc.Model]:
    """``src`` compiled for each thread count, and as the interpreter (key "interp"): what the
    tests that compare thread counts bitwise and against the oracle share."""
    out: dict[object, graphc.Model] = {t: graphc.compile_source(src, num_threads=t)
                                       for t in threads}
    out["interp"] = graphc.compile_source(src, backend="interp")
    return out
