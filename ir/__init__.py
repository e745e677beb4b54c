"""graphc's IR: types, values, the op table, text form, verifier and reference interpreter."""
from graphc.ir.errors import (GraphCallError, GraphError, GraphFileError, GraphSyntaxError,  # noqa: F401
                       GraphTypeError, GraphWarning, Loc, NumericsError)
from graphc.ir.types import DType, Dim, TensorType  # noqa: F401
from graphc.ir.core import Attrs, Func, Value, at, const, make, toposort  # noqa: F401
import graphc.ir.ops  # noqa: F401  (declares every op)
from graphc.ir.text import (Module, parse, parse_funcs, parse_type, print_func,  # noqa: F401,E402
                     print_funcs)
from graphc.ir.verify import VerifyError, verify  # noqa: F401,E402
