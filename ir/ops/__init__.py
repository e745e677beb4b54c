"""The op table. Importing this package declares every op (each module calls ``defop``); the
import order is the table's order, which the per-op tests follow."""
# isort: skip_file
from graphc.ir.ops import registry  # noqa: F401
from graphc.ir.ops import special  # noqa: F401
from graphc.ir.ops import elementwise, reduce, linalg, shape, create, nn  # noqa: F401,E401
from graphc.ir.ops import conv, pool, norm, random, flip  # noqa: F401,E401
from graphc.ir.ops import fused  # noqa: F401,E402  (fusion kernels: after every op they hold)
