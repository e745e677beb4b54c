"""graphc's native backend: IR Funcs to vectorised machine code through llvmlite. Its names load
on first use, so that ``import graphc`` (and runtime/stats.py) do not load LLVM."""
from __future__ import annotations

from typing import Any

__all__ = ["CompiledModule", "compile_module"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from graphc.runtime import module
        return getattr(module, name)
    raise AttributeError(f"module 'graphc.runtime' has no attribute '{name}'")
