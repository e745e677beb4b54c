"""constant_fold as IR text in and out (cases/constant_fold/*.ir), each case also checked with
random, NaN and Inf inputs."""
from __future__ import annotations

import pytest

from tests.passes import cases


@pytest.mark.parametrize("case", cases.load("constant_fold"), ids=str)
def test_constant_fold_case(case: cases.Case) -> None:
    cases.check(case)
