"""The op table. Importing this package declares every op (each module calls ``defop``); the
import order is the table's order, which the per-op tests follow."""
from graphc.ir.ops import (  # noqa: F401,E401
    create,
    elementwise,
    fused,  # noqa: F401,E402  (kernels of the fusion pass; after every op they hold)
    linalg,
    nn,
    reduce,
    registry,  # noqa: F401
    shape,
    special,  # noqa: F401
)
