"""The documentation stays true to the code: every operation a .graph file can call is in the
language reference, and the docs never point at files the repository does not have."""
from __future__ import annotations

import pathlib
import re

from graphc.ir.ops import registry

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_callable_op_is_in_the_language_reference() -> None:
    text = (ROOT / "docs" / "language.md").read_text()
    missing = [op.dsl_name for op in registry.all()
               if op.callable_from_dsl and op.kind != "fused"
               and not re.search(rf"\b{op.dsl_name}\b", text)]
    assert missing == []


def test_docs_link_only_to_files_that_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in re.findall(r"`((?:docs|examples)/[\w./-]+\.(?:md|graph|py))`",
                              page.read_text()):
            assert (ROOT / ref).exists(), f"{page.name} points at {ref}, which does not exist"
