"""The pass registry and manager: pipelines, --dump-after, verify-each, statistics, opt-bisect,
and the rewrite engine's contract."""
from __future__ import annotations

import itertools
import warnings
from pathlib import Path

import numpy as np
import pytest

import graphc.passes
from graphc.ir import interp
from graphc.ir.core import Func, Value, make
from graphc.ir.errors import GraphCallError, GraphError
from graphc.ir.text import print_func
from graphc.ir.types import TensorType
from graphc.passes import (
    LEVELS,
    PASSES,
    PIPELINES,
    REQUIRED,
    Pass,
    describe_pipeline,
    format_stats,
    run_pipeline,
)
from graphc.passes.manager import PassError
from graphc.passes.rewrite import Counter, PassContext, rewrite
from tests.conftest import canonical, parse_one

MLP = canonical("""
    func @f(%x: f32[N,3], %W: f32[3,2], %b: f32[2]) -> (f32[], f32[3,2], f32[2]) {
      %0 = matmul %x, %W : f32[N,2]
      %1 = add %0, %b : f32[N,2]
      %2 = relu %1 : f32[N,2]
      %3 = sum %2 {axis=[0, 1], keepdims=false} : f32[]
      %4 = dim {dtype=f32, value=N} : f32[]
      %5 = div %3, %4 : f32[]
      %6 = grad %5, %W : f32[3,2]
      %7 = grad %5, %b : f32[2]
      return %5, %6, %7
    }""")


def mlp() -> Func:
    return parse_one(MLP)


def test_passes_are_named_after_their_modules() -> None:
    assert list(PASSES) == ["autodiff", "constant_fold", "simplify", "cse", "dce", "checkpoint",
                            "fusion", "memplan"]
    for name, p in PASSES.items():
        assert p.run.__module__ == f"graphc.passes.{name}"
        assert p.doc and "\n" not in p.doc


def test_every_pipeline_starts_with_autodiff_and_only_names_passes() -> None:
    # -O0: only what correctness needs, then one op per kernel and their memory plan
    assert PIPELINES[0] == REQUIRED + ("fusion", "memplan")
    assert LEVELS[0].endswith("fusion{policy=single},memplan")
    for names in PIPELINES:                     # every level ends with kernels and memory
        assert names[0] == "autodiff" and set(names) <= set(PASSES)
        assert names[-2:] == ("fusion", "memplan")
    assert len(PIPELINES[3]) > len(PIPELINES[2]) > len(PIPELINES[1]) > len(PIPELINES[0])


def test_describe_pipeline_lists_the_default_pipeline() -> None:
    assert [n for n, _ in describe_pipeline()] == list(PIPELINES[2])
    assert dict(describe_pipeline())["cse"] == PASSES["cse"].doc


def test_bad_opt_level_and_unknown_pass_are_user_errors() -> None:
    with pytest.raises(GraphCallError, match="opt_level"):
        run_pipeline(mlp(), 7)
    with pytest.raises(GraphCallError, match="did you mean 'simplify'"):
        run_pipeline(mlp(), after="simplfy")
    with pytest.raises(GraphCallError, match="-O0 pipeline"):
        run_pipeline(mlp(), 0, after="cse")


def test_after_stops_after_the_named_pass() -> None:
    f = mlp()
    assert print_func(run_pipeline(f, after="autodiff")) == print_func(PASSES["autodiff"].run(f))
    assert "grad" in print_func(f) and "grad" not in print_func(run_pipeline(f, after="autodiff"))


def test_dump_sees_every_pass_in_order() -> None:
    seen: list[str] = []
    out = run_pipeline(mlp(), 3, dump=lambda name, f: seen.append(name))
    assert seen == list(PIPELINES[3])
    assert out is not None


def test_stats_count_ops_and_rewrites_per_pass() -> None:
    stats: list[graphc.passes.manager.PassStat] = []
    out = run_pipeline(mlp(), 2, stats=stats)
    assert [s.name for s in stats] == list(PIPELINES[2])
    for a, b in itertools.pairwise(stats):
        assert a.ops_after == b.ops_before
    assert stats[0].ops_before == 8 and stats[-1].ops_after == len(out.values()) - 3
    assert stats[-1].ops_after < stats[0].ops_after          # -O2 beats -O0
    assert sum(s.rewrites for s in stats[1:]) > 0
    table = format_stats(stats).splitlines()
    assert table[0].split() == ["pass", "ops", "before", "ops", "after", "rewrites", "ms"]
    assert table[-1].split()[:3] == ["total", "8", str(stats[-1].ops_after)]


def test_verify_each_names_the_pass_that_broke_the_ir(monkeypatch: pytest.MonkeyPatch) -> None:
    def bad(func: Func, ctx: PassContext, options: object) -> Func:   # a miscompile:
        # an exp that claims a wrong type
        x = func.params[0]
        broken = Value("exp", (x,), TensorType(x.dtype, (5,)))
        return Func(func.name, func.params, (broken,) + func.results[1:], func.result_names)
    monkeypatch.setitem(PASSES, "cse", Pass("cse", bad, "breaks the IR"))
    with pytest.raises(PassError, match="pass 'cse'"):
        run_pipeline(mlp(), 2)
    run_pipeline(mlp(), 2, verify_each=False)        # unchecked, it goes through


def test_rewrite_keeps_locs_and_rebuilds_only_what_changed() -> None:
    f = parse_one(canonical("""
        func @f(%x: f32[4]) -> (f32[4], f32[4]) {
          %0 = neg %x : f32[4]  # a.graph:1:1
          %1 = neg %0 : f32[4]  # a.graph:2:1
          %2 = exp %1 : f32[4]  # a.graph:3:1
          %3 = tanh %x : f32[4]  # a.graph:4:1
          return %2, %3
        }"""))
    out = rewrite(f, lambda v: v.inputs[0].inputs[0] if v.op == "neg" and
                  v.inputs[0].op == "neg" else v)
    exp, tanh = out.results
    assert exp is not f.results[0] and exp.inputs == (f.params[0],)
    assert str(exp.loc) == "a.graph:3:1" and tanh is f.results[1]
    assert rewrite(f, lambda v: v) is f


def test_rewrite_rejects_a_change_of_type() -> None:
    f = mlp()
    with pytest.raises(AssertionError, match="changed its type"):
        rewrite(f, lambda v: f.params[0] if v.op == "relu" else v)


def test_counter_stops_after_the_limit_but_never_cuts_exempt_passes() -> None:
    f = parse_one(canonical("""
        func @f(%x: f32[4]) -> (f32[4]) {
          %0 = exp %x : f32[4]
          %1 = exp %x : f32[4]
          %2 = exp %x : f32[4]
          %3 = add %0, %1 : f32[4]
          %4 = add %3, %2 : f32[4]
          return %4
        }"""))
    counter = Counter(limit=1, pass_name="cse")
    once = PASSES["cse"].run(f, PassContext(counter))
    assert counter.count == 2 and counter.applied == 1 and len(once.values()) == 5
    counter.exempt = True
    assert len(PASSES["cse"].run(f, PassContext(counter)).values()) == 4


def test_bisect_zero_is_o0_and_n_applies_n_rewrites(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    f = mlp()
    o0 = print_func(run_pipeline(f, 0))
    assert print_func(run_pipeline(f, 3, bisect=0)) == o0
    total = sum(s.rewrites for s in stats_of(f, None)[1:])
    assert total >= 3
    assert sum(s.rewrites for s in stats_of(f, 2)) == 2
    monkeypatch.setenv("GRAPHC_OPT_BISECT", "1")
    assert sum(s.rewrites for s in stats_of(f, None)) == 1
    err = capsys.readouterr().err
    assert "BISECT: running rewrite (1)" in err and "BISECT: NOT running rewrite (2)" in err
    monkeypatch.setenv("GRAPHC_OPT_BISECT", "two")
    with pytest.raises(GraphError, match="GRAPHC_OPT_BISECT"):
        run_pipeline(f)


def stats_of(f: Func, bisect: int | None) -> list[graphc.passes.manager.PassStat]:
    stats: list[graphc.passes.manager.PassStat] = []
    run_pipeline(f, 3, stats=stats, bisect=bisect)
    return stats


def test_bisect_finds_a_miscompiling_rewrite(monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """The workflow the docs describe: plant a wrong rule, bisect on N, read the culprit."""
    from graphc.passes import simplify

    def fold_exp_wrongly(v: Value, facts: simplify.Facts) -> Value | None:
        return make("neg", v.inputs[0])
    monkeypatch.setitem(simplify.RULES, "exp", (fold_exp_wrongly,))
    f = parse_one(canonical("""
        func @f(%x: f32[4]) -> (f32[4]) {
          %0 = const 1.0 : f32[]
          %1 = mul %x, %0 : f32[4]
          %2 = neg %1 : f32[4]
          %3 = neg %2 : f32[4]
          %4 = exp %3 : f32[4]  # bad.graph:7:3
          return %4
        }"""))
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    want = interp.run(f, [x])[0]

    def good(n: int) -> bool:
        return bool(np.allclose(interp.run(run_pipeline(f, 2, bisect=n), [x])[0], want))
    lo, hi = 0, 100                          # good(lo), not good(hi)
    assert good(lo) and not good(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if good(mid) else (lo, mid)
    capsys.readouterr()
    run_pipeline(f, 2, bisect=hi)
    culprit = [ln for ln in capsys.readouterr().err.splitlines() if f"({hi})" in ln]
    assert culprit == [f"BISECT: running rewrite ({hi}) simplify: exp -> neg at bad.graph:7:3"]


def test_zero_gradient_warning_is_the_front_ends_not_ours() -> None:
    """Passes after autodiff never warn: only autodiff knows a gradient is structurally zero."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run_pipeline(PASSES["autodiff"].run(mlp()), 3)


def test_accept_rewrites_an_expectation_on_purpose(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.passes import cases
    case_file = tmp_path / "neg.ir"
    case_file.write_text(canonical("""
        // fold_neg_neg
        func @f(%x: f32[4]) -> (f32[4]) {
          %0 = neg %x : f32[4]
          %1 = neg %0 : f32[4]
          return %1
        }
        // unchanged
        // -----
        // a single neg stays
        func @f(%x: f32[4]) -> (f32[4]) {
          %0 = neg %x : f32[4]
          return %0
        }
        // unchanged""") + "\n")
    first, second = cases.read("simplify", case_file)
    with pytest.raises(AssertionError, match="simplify gave"):
        cases.check(first)
    monkeypatch.setenv("GRAPHC_ACCEPT", "1")
    cases.check(first)
    cases.check(second)
    monkeypatch.delenv("GRAPHC_ACCEPT")
    first, second = cases.read("simplify", case_file)
    assert first.after == "func @f(%x: f32[4]) -> (f32[4]) {\n  return %x\n}"
    assert second.after is None and second.title == "// a single neg stays"
