"""What a kernel may hold, shared by vertical fusion (fusion.py) and horizontal fusion
(siblings.py): the limits on one kernel's size, which layout ops stay views outside kernels, the
names of a kernel's params, and opt-bisect's veto on forming one."""
from __future__ import annotations

from graphc.ir.core import Value
from graphc.ir.ops import registry
from graphc.passes.rewrite import Counter

# at most this many ops in one kernel: the backend lowers a body as one expression tree (its
# depth bounded by this), and LLVM optimises one kernel at a time in time superlinear in its size
MAX_MEMBERS = 256
# a row kernel runs one inner loop per reduction: an unrolled loop's T reductions of one value
# each (an RNN's activity penalty) would make one kernel whose code grows with T
MAX_REDUCTIONS = 8
# at most this many inputs (values read from outside) in one kernel: a sum over an unrolled
# loop's steps (a weight's gradient, a loss over every step) would read T buffers in one kernel
# whose code grows with T; capped, the sum becomes a chain of kernels of MAX_INPUTS inputs each,
# alike in all but their buffers, which the backend compiles once (runtime/dedup.py)
MAX_INPUTS = 16


def reduces(v: Value) -> bool:
    op = registry.lookup(v.op)
    return op is not None and op.kind == registry.REDUCE


def param_name(v: Value, k: int, used: set[str]) -> str:
    name = v.attrs["name"] if v.op == "arg" else f"in{k}"
    while name in used:
        name += "_"
    used.add(name)
    return name


def is_view(v: Value) -> bool:
    """A layout op left outside kernels: a view of its input (a reshape only of contiguous data,
    else it becomes a copy kernel)."""
    if v.op in ("transpose", "slice", "broadcast_to"):
        return True
    if v.op != "reshape":
        return False
    x = v.inputs[0]
    if x.op == "const":
        return isinstance(x.attrs["value"], tuple) or all(d == 1 for d in x.shape)
    return x.op not in ("transpose", "slice", "broadcast_to")


def allowed(counter: Counter | None, old: Value, new: Value) -> bool:
    """Opt-bisect: each kernel formed counts as one rewrite."""
    return counter is None or counter.allow(old, new)
