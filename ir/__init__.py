"""graphc's IR: types, values, the op table, text form, verifier and reference interpreter."""
import graphc.ir.ops  # noqa: F401  (declares every op)
from graphc.ir.core import Attrs, Func, Value, at, const, make, toposort  # noqa: F401
from graphc.ir.errors import (  # noqa: F401
    GraphCallError,
    GraphError,
    GraphFileError,
    GraphSyntaxError,
    GraphTypeError,
    GraphWarning,
    Loc,
    NumericsError,
)
from graphc.ir.text import (  # noqa: F401
    Module,
    parse,
    parse_funcs,
    parse_type,
    print_func,
    print_funcs,
)
from graphc.ir.types import Dim, DType, TensorType  # noqa: F401
from graphc.ir.verify import VerifyError, verify  # noqa: F401
