"""graphc's passes, each a ``Pass`` object named after its module, and the pipelines that ``-O0``
.. ``-O3`` run, written as pipeline specs (``"autodiff,simplify,cse,dce"``; grammar in
passes/manager.py, which holds the pass table). ``run_pipeline`` runs one, verifying after each
pass. Autodiff runs first; the optimisations leave a function that still holds grad ops
unchanged."""
from __future__ import annotations

from graphc.passes.manager import (  # noqa: F401
    LEVELS,
    PASSES,
    PIPELINES,
    REQUIRED,
    Pass,
    PassStat,
    Step,
    describe_pipeline,
    format_pipeline,
    format_stats,
    parse_pipeline,
    pipeline,
    run_pipeline,
)
