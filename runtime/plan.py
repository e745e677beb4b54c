"""The planner's names where the code generator, ``module`` and the tests import them today: the
plan's data (runtime/plantypes.py), the error codes (runtime/errcodes.py) and ``make_plan``
(runtime/kernelplan.py). Nothing is defined here; import from those modules in new code."""
from __future__ import annotations

from graphc.runtime.errcodes import (  # noqa: F401
    DETAIL_WORDS,
    ERR_ARG_NUMERICS,
    ERR_BOUNDS,
    ERR_DEBUG_BOUNDS,
    ERR_INDEX,
    ERR_NUMERICS,
)
from graphc.runtime.kernelplan import finish_results, make_plan  # noqa: F401
from graphc.runtime.plantypes import (  # noqa: F401
    Acc,
    Buffer,
    Check,
    Lazy,
    Operand,
    Plan,
    Reg,
    Step,
    View,
    broadcast_view,
    buffers_read,
    contiguous,
    contiguous_strides,
    is_contiguous,
    symbols_of,
)
