"""graphc's native backend: IR Funcs to vectorised machine code through llvmlite."""
from graphc.runtime.module import CompiledModule, compile_module  # noqa: F401
