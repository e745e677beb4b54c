"""graphc's IR: types, values, the op table, text form, verifier and reference interpreter."""
from ir.errors import (GraphCallError, GraphError, GraphFileError, GraphSyntaxError,  # noqa: F401
                       GraphTypeError, GraphWarning, Loc, NumericsError)
from ir.types import DType, Dim, TensorType  # noqa: F401
from ir.core import Attrs, Func, Value, at, const, make, toposort  # noqa: F401
import ir.ops  # noqa: F401  (declares every op)
from ir.text import (Module, parse, parse_funcs, parse_type, print_func,  # noqa: F401,E402
                     print_funcs)
from ir.verify import VerifyError, verify  # noqa: F401,E402
