"""Test-only ops for the IR text and verifier tests, registered for one test at a time:
``probe`` takes any operands and one attribute of every kind; ``probe_fused`` holds a body
Func, as a fused kernel will (the names keep clear of the real op table)."""
from __future__ import annotations

from typing import Any

import pytest

from graphc.ir.core import Func
from graphc.ir.ops import registry
from graphc.ir.ops.registry import SPECIAL, OpDef
from graphc.ir.types import DType, TensorType


def _probe_type(*_: TensorType, dt: DType, shape: Any, **__: Any) -> TensorType:
    return TensorType(dt, tuple(shape))        # tuple(3) raises TypeError: a raw-exception case


PROBE = OpDef("probe", SPECIAL, ("*xs",), infer=_probe_type,
              attrs=(("b", False), ("d", 0), ("dt", DType.f32), ("f", 0.0), ("i", 0),
                     ("n", None), ("s", ""), ("shape", ()), ("t", ())))


def _fused_type(*types: TensorType, body: Func) -> TensorType:
    return body.results[0].type


FUSED = OpDef("probe_fused", SPECIAL, ("*xs",), infer=_fused_type,
              attrs=(("body", registry.REQUIRED),))


@pytest.fixture
def test_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    """Declare ``probe`` and ``probe_fused`` for this test only (the registry is frozen)."""
    for op in (PROBE, FUSED):
        monkeypatch.setitem(registry._TABLE, op.name, op)
