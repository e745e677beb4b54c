"""Whole pipelines as IR text in and out (cases/O2/*.ir): autodiff and the passes together, each
case also checked with the interpreter against the -O0 result."""
from __future__ import annotations

import pytest

from tests.passes import cases


@pytest.mark.parametrize("case", cases.load("O2"), ids=str)
def test_o2_case(case: cases.Case) -> None:
    cases.check(case)
