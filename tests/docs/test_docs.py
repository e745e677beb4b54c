"""The documentation stays true to the code: every operation a .graph file can call is in the
language reference, and the docs never point at files the repository does not have."""
from __future__ import annotations

import pathlib
import re

from graphc import opdoc
from graphc.ir.ops import registry

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_every_callable_op_is_in_the_language_reference() -> None:
    """The language page's summary names every op (docs/ops.md, generated, has the details)."""
    text = (ROOT / "docs" / "language.md").read_text()
    missing = [op.dsl_name for op in registry.all()
               if opdoc.dsl_visible(op) and not re.search(rf"\b{op.dsl_name}\b", text)]
    assert missing == []


def test_docs_link_only_to_files_that_exist() -> None:
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for ref in re.findall(r"`((?:docs|examples)/[\w./-]+\.(?:md|graph|py))`",
                              page.read_text()):
            assert (ROOT / ref).exists(), f"{page.name} points at {ref}, which does not exist"


def test_markdown_links_point_at_files_and_headings_that_exist() -> None:
    """Relative links ``[text](file.md)`` and ``[text](#anchor)`` resolve (GitHub's anchors)."""
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        anchors = {re.sub(r"[^\w\- ]", "", h.lower()).strip().replace(" ", "-")
                   for h in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith(("http://", "https://")):
                continue
            path, _, anchor = target.partition("#")
            if path:
                assert (page.parent / path).exists(), f"{page.name} links to {target}"
            elif anchor:
                assert anchor in anchors, f"{page.name} links to #{anchor}, no such heading"
