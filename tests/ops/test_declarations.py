"""Facts about ops are declared on the op and checked when it is declared: an unknown trait or
a reduction whose fold no backend lowers is an error at declaration, never a wrong number later.
Passes and the backend ask the op (``registry.has``), so the traits they read must be there."""
from __future__ import annotations

import pytest

from graphc.ir.ops import registry


def declare(name: str, **fields) -> None:
    try:
        registry.defop(name, **fields)
    finally:
        registry._TABLE.pop(name, None)


def test_a_reduction_with_an_unknown_fold_is_refused_at_declaration() -> None:
    # kernels._combine once lowered any unknown fold as minimum: a "prod" declared the
    # documented way gave [1, 1] natively where the interpreter gave [24, 30]
    with pytest.raises(ValueError, match="combines by 'prod'"):
        declare("test_prod", kind=registry.REDUCE, combine="prod", identity=1.0)


def test_an_unknown_trait_is_refused_at_declaration() -> None:
    with pytest.raises(ValueError, match="unknown traits"):
        declare("test_op", kind=registry.ELEMENTWISE, traits=("cheap", "speedy"))


def test_every_reduction_folds_one_of_the_lowered_combines() -> None:
    folds = {op.combine for op in registry.all() if op.kind == registry.REDUCE}
    assert folds == set(registry.COMBINES)


@pytest.mark.parametrize("trait,ops", [
    (registry.VIEW, {"reshape", "transpose", "broadcast_to", "slice"}),
    (registry.CHEAP, {"add", "mul", "relu", "where", "cast", "reshape"}),
    (registry.PRESERVES_FINITE, {"tanh", "maximum", "take", "concat", "pad"}),
])
def test_traits_the_passes_read_are_declared(trait: str, ops: set[str]) -> None:
    have = {op.name for op in registry.all() if trait in op.traits}
    assert ops <= have
    assert "exp" not in have          # it overflows, costs a polynomial, and is no view
