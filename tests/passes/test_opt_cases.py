"""Every pass has IR-text cases (tests/passes/cases/<pass>/*.ir) run through ``graphc opt FILE
-p SPEC``; this file runs the folders no other test file does (autodiff, checkpoint, fusion,
memplan) and checks that no pass is without cases."""
from __future__ import annotations

import pytest

from graphc.passes import PASSES
from tests.passes import cases

OWN = ("autodiff", "checkpoint", "fusion", "memplan")


def test_every_pass_has_ir_text_cases() -> None:
    assert [name for name in PASSES if not cases.load(name)] == []


@pytest.mark.parametrize("case", [c for name in OWN for c in cases.load(name)],
                         ids=lambda c: f"{c.pass_name}-{c}")
def test_case(case: cases.Case) -> None:
    cases.check(case)


def test_a_case_runs_the_spec_it_names() -> None:
    case = next(c for c in cases.load("fusion") if "policy=single" in c.title)
    assert case.spec == "fusion{policy=single}"
    assert next(iter(cases.load("fusion"))).spec == "fusion"
