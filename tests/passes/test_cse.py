"""cse as IR text in and out (cases/cse/*.ir), each case also checked with the interpreter on
random, NaN and Inf inputs."""
from __future__ import annotations

import pytest

from tests.passes import cases


@pytest.mark.parametrize("case", cases.load("cse"), ids=str)
def test_cse_case(case: cases.Case) -> None:
    cases.check(case)
