"""The op table. Importing this package declares every op (each module calls ``defop``)."""
from ir.ops import special  # noqa: F401
from ir.ops import registry  # noqa: F401

# Each module below declares its ops on import; keep the order stable (it is the test order).
import importlib as _importlib

for _mod in ("elementwise", "reduce", "linalg", "shape", "create", "nn"):
    try:
        _importlib.import_module(f"ir.ops.{_mod}")
    except ModuleNotFoundError as _e:  # modules land one by one while the table is built
        if _e.name != f"ir.ops.{_mod}":
            raise
