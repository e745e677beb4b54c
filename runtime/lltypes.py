"""The LLVM types graphc's generated code uses, and the type of a value of each dtype in
registers and in memory: shared by the emitter, the vector math it calls and every kernel."""
from __future__ import annotations

import llvmlite.ir as ll

from graphc.ir.types import DType

I1 = ll.IntType(1)
I8 = ll.IntType(8)
I32 = ll.IntType(32)
I64 = ll.IntType(64)
F32 = ll.FloatType()
F64 = ll.DoubleType()
PTR = ll.PointerType()

_REG = {DType.f32: F32, DType.f64: F64, DType.i32: I32, DType.i64: I64, DType.bool: I1}
_MEM = {**_REG, DType.bool: I8}


def reg_type(dtype: DType) -> ll.Type:
    """The type a value of ``dtype`` has in registers (bool is i1)."""
    return _REG[dtype]


def mem_type(dtype: DType) -> ll.Type:
    """The type a value of ``dtype`` has in memory (bool is one byte, as in NumPy)."""
    return _MEM[dtype]


def scalar_of(t: ll.Type) -> ll.Type:
    return t.element if isinstance(t, ll.VectorType) else t


def is_float(t: ll.Type) -> bool:
    return isinstance(scalar_of(t), (ll.FloatType, ll.DoubleType))
