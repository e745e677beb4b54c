"""Shared test helpers. ``check_pass`` tests a pass (or a whole ``-O`` pipeline) as IR text in,
IR text out, and checks with the reference interpreter that the results did not change.
Import it (``from tests.conftest import check_pass``) or take the ``check_pass`` fixture."""
from __future__ import annotations

import difflib
import textwrap
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from graphc.ir import interp
from graphc.ir.core import Func

SIZES = (3, 1, 0)          # every symbolic dim is bound to each in turn by ``same_results``


def check_pass(name: str, before: str, after: str, *, semantic: bool = True) -> str:
    """Parse ``before`` (which must print back as itself), verify it, run the pass ``name`` (or
    the pipeline "O0".."O3"), verify, and compare the printed result with ``after`` exactly.
    With ``semantic``, also check that the interpreter gives the same results before (with its
    grad ops expanded) and after, on random inputs, then with NaN and Inf mixed in. Returns the
    printed result."""
    from graphc.ir.text import print_func
    before, after = canonical(before), canonical(after)
    func = parse_one(before)
    assert print_func(func) == before, "`before` is not canonical IR text:\n" + diff(
        before, print_func(func))
    out = apply(name, func)
    text = print_func(out)
    assert text == after, f"{name} gave (-expected +actual):\n" + diff(after, text)
    if semantic and name != "autodiff":
        same_results(reference(func), reference(out))
    return text


@pytest.fixture(name="check_pass")
def _check_pass_fixture() -> Callable[..., str]:
    return check_pass


def canonical(text: str) -> str:
    return textwrap.dedent(text).strip("\n").rstrip()


def diff(a: str, b: str) -> str:
    return "\n".join(difflib.unified_diff(a.splitlines(), b.splitlines(), lineterm="", n=2))


def parse_one(text: str) -> Func:
    from graphc.ir.text import parse_funcs
    from graphc.ir.verify import verify
    funcs = parse_funcs(text)
    assert len(funcs) == 1, f"expected one function, got {len(funcs)}"
    verify(funcs[0])
    return funcs[0]


def apply(name: str, func: Func) -> Func:
    """Run one pass by name, or a pipeline as "O0".."O3", then verify the result."""
    from graphc.ir.verify import verify
    from graphc.passes import PASSES, run_pipeline
    if name.startswith("O") and name[1:].isdigit():
        out = run_pipeline(func, int(name[1:]))
    else:
        out = PASSES[name].run(func)
    verify(out)
    return out

# ---------------------------------------------------------------------------- semantics


def reference(func: Func) -> Func:
    """What the interpreter can run: ``func``, with its grad ops expanded (the -O0 pipeline)."""
    if not any(v.op == "grad" for v in func.values()):
        return func
    from graphc.passes import PASSES
    return PASSES["autodiff"].run(func)


def symbols(func: Func) -> list[str]:
    return sorted({s for p in func.params for s in p.type.symbols})


def bindings(func: Func) -> Iterator[dict[str, int]]:
    """Each of SIZES for every symbol, skipping those the function's shapes rule out (a
    symbolic dim broadcast against a static 3 only admits 3: ir.shapecheck)."""
    from graphc.ir import shapecheck
    from graphc.ir.errors import GraphCallError
    names = symbols(func)
    reqs = shapecheck.requirements(func)
    for n in SIZES if names else SIZES[:1]:
        env = {s: n for s in names}
        try:
            shapecheck.check(reqs, env)
        except GraphCallError:
            continue
        yield env


def random_args(func: Func, env: dict[str, int], rng: np.random.Generator,
                special: bool = False) -> dict[str, np.ndarray]:
    """Arrays for every param; floats are normal (with NaN, Inf and -Inf mixed in if
    ``special``), ints in [0, 3), bools fair coins."""
    args: dict[str, np.ndarray] = {}
    for p in func.params:
        shape = p.type.concrete(env)
        if p.dtype.is_float:
            a = rng.standard_normal(shape)
            if special and a.size:
                flat = a.reshape(-1)
                picks = rng.integers(0, flat.size, size=max(1, flat.size // 3))
                flat[picks] = rng.choice([np.nan, np.inf, -np.inf], size=picks.size)
        elif p.dtype.is_int:
            a = rng.integers(0, 3, size=shape)
        else:
            a = rng.random(shape) < 0.5
        args[p.attrs["name"]] = np.asarray(a, dtype=p.dtype.np)
    return args


def same_results(before: Func, after: Func, *, seed: int = 0, rtol: float = 1e-5,
                 atol: float = 1e-6) -> None:
    """``after`` computes what ``before`` does: same NaNs, same infinities, numbers up to
    rounding, for every dim binding in ``SIZES``, without and with NaN/Inf arguments."""
    rng = np.random.default_rng(seed)
    for env in bindings(before):
        for special in (False, True):
            args = random_args(before, env, rng, special)
            want = interp.run(before, args, env)
            got = interp.run(after, args, env)
            for i, (w, g) in enumerate(zip(want, got)):
                assert_same(w, g, f"result {i} with {env}, special={special}", rtol, atol)


def assert_same(want: np.ndarray, got: np.ndarray, what: str, rtol: float, atol: float) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (
        f"{what}: {got.dtype}{list(got.shape)} != {want.dtype}{list(want.shape)}")
    if want.dtype.kind == "f":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True,
                                   err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


@pytest.fixture(autouse=True)
def _verify_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model a test compiles verifies (and prints/reads back) its IR after each pass:
    ``GRAPHC_VERIFY_EACH=1`` (passes/manager.py). A test that times what users wait for sets it
    to 0 (``monkeypatch.setenv``); a model's own ``verify_each=`` still wins."""
    from graphc.passes.manager import VERIFY_ENV
    monkeypatch.setenv(VERIFY_ENV, "1")
