"""``flush_denormals``: a model's native calls run with subnormal floats flushed to zero (FTZ:
a subnormal result becomes 0) and read as zero (DAZ: a subnormal operand counts as 0).

Why: x86 computes with a subnormal operand or result through a microcode assist, ~100 cycles
instead of ~4, and training makes them: Adam's moments of a dead unit decay by beta each step
until ~10% of them are subnormal, and a step gets 2-4x slower. XLA runs with FTZ/DAZ on CPU;
PyTorch offers ``torch.set_flush_denormal``. graphc's default stays IEEE, as its reference
interpreter is.

How: the mode lives in a per-thread control register (x86 MXCSR bits 15 FZ and 6 DAZ; aarch64
FPCR bit 24 FZ, which flushes operands and results both). The exported driver of a model built
with the option is a wrapper (``wrap_entry``) that saves the caller's register, sets the bits,
calls the driver and puts the saved value back, whatever the driver returned: the caller's
Python and NumPy never see the mode, also after a failing call. The worker pool's threads
(runtime/pool.py) load the register value that the region's caller published, so a region's
tasks run in its caller's mode whichever thread runs them. On any other machine the option has
no effect (``supported``): it is a speed hint, and IEEE results are the reference's."""
from __future__ import annotations

import platform

import llvmlite.ir as ll

_I32, _I64, _PTR = ll.IntType(32), ll.IntType(64), ll.PointerType()
# the control register's flush bits, by the kind of machine
FLUSH_BITS = {"x86": (1 << 15) | (1 << 6), "aarch64": 1 << 24}


def kind() -> str | None:
    """"x86" (x86-64: MXCSR), "aarch64" (FPCR), or None: no flush mode graphc knows."""
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64"):
        return "x86"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    return None


def supported() -> bool:
    """Whether flush_denormals changes anything on this machine."""
    return kind() is not None


def _declare(module: ll.Module, name: str, ty: ll.FunctionType) -> ll.Function:
    fn = module.globals.get(name)
    return fn if fn is not None else ll.Function(module, ty, name)


def _get(b: ll.IRBuilder, arch: str) -> ll.Value:
    """The control register as an i64."""
    module = b.module
    if arch == "x86":
        slot = b.alloca(_I32, name="mxcsr")
        b.call(_declare(module, "llvm.x86.sse.stmxcsr",
                        ll.FunctionType(ll.VoidType(), [_PTR])), [slot])
        return b.zext(b.load(slot, typ=_I32), _I64)
    return b.call(_declare(module, "llvm.aarch64.get.fpcr", ll.FunctionType(_I64, [])), [])


def _set(b: ll.IRBuilder, arch: str, value: ll.Value) -> None:
    module = b.module
    if arch == "x86":
        slot = b.alloca(_I32, name="mxcsr.new")
        b.store(b.trunc(value, _I32), slot)
        b.call(_declare(module, "llvm.x86.sse.ldmxcsr",
                        ll.FunctionType(ll.VoidType(), [_PTR])), [slot])
    else:
        b.call(_declare(module, "llvm.aarch64.set.fpcr",
                        ll.FunctionType(ll.VoidType(), [_I64])), [value])


def wrap_entry(inner: ll.Function, name: str) -> ll.Function:
    """The exported ``name``: ``inner`` (an entry's driver, ``i32 (ptr)``) run with the flush
    bits set, the caller's register restored after it at its one return."""
    arch = kind()
    assert arch is not None, "flush_denormals builds a wrapper only where it is supported"
    fn = ll.Function(inner.module, inner.function_type, name)
    fn.attributes.add("noinline")
    b = ll.IRBuilder(fn.append_basic_block("entry"))
    saved = _get(b, arch)
    _set(b, arch, b.or_(saved, ll.Constant(_I64, FLUSH_BITS[arch])))
    rc = b.call(inner, list(fn.args))
    _set(b, arch, saved)
    b.ret(rc)
    return fn


def pool_ir() -> str:
    """``i64 @fp_get()`` and ``void @fp_set(i64)`` for the worker pool's IR text: the calling
    thread's control register (nothing, and 0, where ``kind`` is None)."""
    arch = kind()
    if arch == "x86":
        return """declare void @llvm.x86.sse.stmxcsr(ptr)
declare void @llvm.x86.sse.ldmxcsr(ptr)
define internal i64 @fp_get() {
  %p = alloca i32
  call void @llvm.x86.sse.stmxcsr(ptr %p)
  %v = load i32, ptr %p
  %w = zext i32 %v to i64
  ret i64 %w
}
define internal void @fp_set(i64 %w) {
  %p = alloca i32
  %v = trunc i64 %w to i32
  store i32 %v, ptr %p
  call void @llvm.x86.sse.ldmxcsr(ptr %p)
  ret void
}
"""
    if arch == "aarch64":
        return """declare i64 @llvm.aarch64.get.fpcr()
declare void @llvm.aarch64.set.fpcr(i64)
define internal i64 @fp_get() {
  %w = call i64 @llvm.aarch64.get.fpcr()
  ret i64 %w
}
define internal void @fp_set(i64 %w) {
  call void @llvm.aarch64.set.fpcr(i64 %w)
  ret void
}
"""
    return """define internal i64 @fp_get() {
  ret i64 0
}
define internal void @fp_set(i64 %w) {
  ret void
}
"""
