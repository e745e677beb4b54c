"""Where a compile's time goes, phase by phase (``model.compile_stats``, ``graphc compile
--time-passes``): front end, each IR pass, then per entry point the plan, LLVM IR generation,
LLVM optimisation, machine code, cache I/O and linking. Phases add up over entry points, so the
table reads as "what the whole model cost"."""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# the order a table lists phases in (others follow in the order they were first timed)
ORDER = ("parse+elaborate", "passes", "plan", "cache key", "cache read", "llvm ir",
         "llvm parse", "llvm opt", "machine code", "cache write", "link")


@dataclass
class CompileStats:
    """Seconds per phase, seconds per IR pass (``passes`` sums them) and counts: entry points
    compiled by LLVM or found in the cache, kernels the plans asked for and the distinct LLVM
    functions that emitted them (identical kernels share one function)."""
    phases: dict[str, float] = field(default_factory=dict)
    passes: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - start)

    def add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + seconds

    def add_pass(self, name: str, seconds: float) -> None:
        self.passes[name] = self.passes.get(name, 0.0) + seconds
        self.add("passes", seconds)

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + n

    @property
    def total(self) -> float:
        return sum(self.phases.values())

    def as_dict(self) -> dict[str, Any]:
        return {"phases": dict(self.phases), "passes": dict(self.passes),
                "counts": dict(self.counts), "total": self.total}

    def table(self) -> str:
        """A fixed-width table: phases (IR passes indented under ``passes``), total, counts."""
        names = [p for p in ORDER if p in self.phases] + \
            [p for p in self.phases if p not in ORDER]
        rows = []
        for p in names:
            rows.append((p, self.phases[p]))
            if p == "passes":
                rows.extend((f"  {q}", s) for q, s in self.passes.items())
        rows.append(("total", self.total))
        width = max(len(r[0]) for r in rows)
        lines = [f"{'phase':<{width}} {'ms':>10}"]
        lines += [f"{n:<{width}} {s * 1e3:>10.2f}" for n, s in rows]
        lines += [f"{n}: {c}" for n, c in self.counts.items()]
        return "\n".join(lines)

    def __getitem__(self, name: str) -> float:
        return self.phases[name]
