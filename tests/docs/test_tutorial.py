"""The README's 5-minute tutorial runs as written (its graph saved as tiny.graph, its Python
blocks in order, its shell lines through the real `graphc`), and the dumps docs/ir.md explains
are what graphc prints for that graph today."""
from __future__ import annotations

import pathlib
import re
import shlex
import subprocess

import pytest

import graphc

ROOT = pathlib.Path(__file__).resolve().parents[2]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def section(page: str, title: str) -> str:
    start = page.index(f"## {title}")
    end = page.find("\n## ", start + 1)
    return page[start:end if end >= 0 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]


def tutorial() -> list[tuple[str, str]]:
    return blocks(section((ROOT / "README.md").read_text(), "A 5-minute tutorial"))


def test_the_readme_tutorial_runs(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from graphc.passes.manager import VERIFY_ENV
    monkeypatch.setenv(VERIFY_ENV, "0")            # as a user runs it
    monkeypatch.chdir(tmp_path)
    steps = tutorial()
    assert [lang for lang, _ in steps] == ["graph", "python", "python", "python", "python",
                                           "sh"]
    namespace: dict[str, object] = {}
    for lang, code in steps:
        if lang == "graph":
            name = code.split()[1].rstrip(":")        # "# tiny.graph: ..." names the file
            (tmp_path / name).write_text(code)
        elif lang == "python":
            exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
        else:
            for line in code.splitlines():
                argv = shlex.split(line.split("#")[0])
                r = subprocess.run(argv, check=False, capture_output=True, text=True,
                                   timeout=120)
                assert r.returncode == 0, (line, r.stdout, r.stderr)
                assert r.stdout.strip(), line
    out = capsys.readouterr().out
    assert "<graphc.Model tiny(" in out and "grad.w" in out
    assert abs(float(namespace["loss"])) < 1e-4      # type: ignore[arg-type]


def test_the_ir_doc_shows_what_graphc_prints() -> None:
    page = (ROOT / "docs" / "ir.md").read_text()
    dumps = {code.split("(")[0]: code for _, code in blocks(page) if code.startswith("func @")}
    source = next(code for _, code in blocks(page) if code.startswith("# tiny.graph"))
    assert source in dict(tutorial()).values(), "docs/ir.md's tiny.graph is not the README's"
    model = graphc.compile_source(source, filename="tiny.graph", backend="interp")
    assert dumps["func @tiny.backward"] == model.dump_ir("backward", after="autodiff") + "\n"
    assert dumps["func @tiny.forward"] == model.dump_ir("forward") + "\n", \
        "the -O2 pipeline changed: paste model.dump_ir('forward') into docs/ir.md and reread it"
