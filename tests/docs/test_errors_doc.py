"""docs/errors.md shows real messages: each ```graph program (as m.graph) or ```python snippet
followed by a ```text block raises exactly the error whose first line that block shows."""
from __future__ import annotations

import pathlib
import re
import warnings

import pytest

import graphc

ROOT = pathlib.Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def blocks(page: pathlib.Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(page.read_text())]


def cases() -> list[tuple[str, str, str]]:
    """(language, code, expected first line) for each example followed by its message."""
    bs = blocks(ROOT / "docs" / "errors.md")
    return [(lang, code, bs[i + 1][1].splitlines()[0]) for i, (lang, code) in enumerate(bs)
            if lang in ("graph", "python") and i + 1 < len(bs) and bs[i + 1][0] == "text"]


def first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0]}"


def test_the_catalogue_has_examples_of_every_kind() -> None:
    kinds = {want.split(":")[0] for _, _, want in cases()}
    assert kinds >= {"GraphSyntaxError", "GraphTypeError", "GraphCallError",
                     "GraphArgumentTypeError", "GraphFileError", "NumericsError"}


def test_every_documented_error_is_the_error_graphc_gives() -> None:
    bs = blocks(ROOT / "docs" / "errors.md")
    namespace: dict[str, object] = {}
    checked = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", graphc.GraphWarning)
        for i, (lang, code) in enumerate(bs):
            expects = i + 1 < len(bs) and bs[i + 1][0] == "text"
            want = bs[i + 1][1].splitlines()[0] if expects else ""
            if lang == "graph":
                with pytest.raises(graphc.GraphError) as info:
                    graphc.compile_source(code, filename="m.graph", backend="interp")
                assert first_line(info.value) == want
                checked += 1
            elif lang == "python" and expects:
                with pytest.raises(Exception) as info:
                    exec(code, namespace)  # noqa: S102 - the doc's own code
                assert first_line(info.value) == want, code
                checked += 1
            elif lang == "python":
                exec(code, namespace)  # noqa: S102 - the doc's own code          # set-up shared by the snippets after it
    assert checked == len(cases()) >= 25
