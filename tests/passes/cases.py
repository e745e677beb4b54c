"""IR-in / IR-out cases stored as files: ``cases/<pass>/<topic>.ir`` holds cases split by
``// -----``; each is ``// what it shows`` lines, the input IR, then ``// after`` and the expected
IR, or ``// unchanged`` for a negative case. A ``// spec: SPEC`` line among the first ones runs
that pipeline spec instead of the folder's pass (``fusion{policy=single}``). Every case runs
through ``graphc opt FILE -p SPEC -o OUT`` (the CLI's own code path, called in-process), and the
interpreter must give the same results before and after (but for autodiff, whose input it cannot
run). ``GRAPHC_ACCEPT=1`` rewrites the expectations with what the pass now gives, and the inputs
with their canonical text (review the diff: never accept just to pass)."""
from __future__ import annotations

import contextlib
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import canonical, diff, parse_one, reference, same_results

ROOT = Path(__file__).parent / "cases"
SEPARATOR = "// -----"
AFTER, UNCHANGED = "// after", "// unchanged"
SPEC = "// spec:"


@dataclass(frozen=True)
class Case:
    pass_name: str
    path: Path
    index: int
    title: str
    before: str
    after: str | None            # None: the pass must leave the IR as it is

    def __str__(self) -> str:
        return f"{self.path.stem}-{self.index}"

    @property
    def spec(self) -> str:
        """The pipeline spec this case runs: its ``// spec:`` line, else the folder's pass."""
        for line in self.title.splitlines():
            if line.startswith(SPEC):
                return line[len(SPEC):].strip()
        return self.pass_name


def load(pass_name: str) -> list[Case]:
    return [case for path in sorted((ROOT / pass_name).glob("*.ir"))
            for case in read(pass_name, path)]


def read(pass_name: str, path: Path) -> list[Case]:
    chunks = path.read_text().split("\n" + SEPARATOR + "\n")
    return [split(pass_name, path, i, chunk) for i, chunk in enumerate(chunks)]


def split(pass_name: str, path: Path, index: int, chunk: str) -> Case:
    lines = chunk.strip("\n").splitlines()
    title = [ln for ln in lines if ln.startswith("//") and ln not in (AFTER, UNCHANGED)]
    body = lines[len(title):]
    marks = [i for i, ln in enumerate(body) if ln in (AFTER, UNCHANGED)]
    assert len(marks) == 1, f"{path}: case {index} needs one '{AFTER}' or '{UNCHANGED}' line"
    m = marks[0]
    after = None if body[m] == UNCHANGED else "\n".join(body[m + 1:])
    return Case(pass_name, path, index, "\n".join(title), "\n".join(body[:m]), after)


def opt(text: str, spec: str) -> str:
    """What ``graphc opt FILE -p SPEC`` prints for IR ``text`` (the CLI's main, in-process)."""
    from graphc.cli import main
    with tempfile.TemporaryDirectory() as d:
        src, out = Path(d) / "in.ir", Path(d) / "out.ir"
        src.write_text(text + "\n")
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            code = main(["opt", str(src), "-p", spec, "-o", str(out)])
        assert code == 0, f"graphc opt -p {spec} failed: {err.getvalue()}"
        return out.read_text().rstrip()


def check(case: Case) -> None:
    if os.environ.get("GRAPHC_ACCEPT") == "1":
        accept(case)
        case = read(case.pass_name, case.path)[case.index]
    from graphc.ir.text import print_func
    before = canonical(case.before)
    after = before if case.after is None else canonical(case.after)
    func = parse_one(before)
    assert print_func(func) == before, "`before` is not canonical IR text:\n" + diff(
        before, print_func(func))
    got = opt(before, case.spec)
    assert got == after, f"{case.spec} gave (-expected +actual):\n" + diff(after, got)
    if case.pass_name != "autodiff":
        same_results(reference(func), reference(parse_one(got)))


def accept(case: Case) -> None:
    """Store what the pass gives now as the case's expectation."""
    from graphc.ir.text import print_func
    func = parse_one(canonical(case.before))
    before = print_func(func)
    got = opt(before, case.spec)
    chunks = case.path.read_text().split("\n" + SEPARATOR + "\n")
    tail = UNCHANGED if got == before else f"{AFTER}\n{got}"
    parts = [case.title, before, tail]
    chunks[case.index] = "\n".join(p for p in parts if p)
    case.path.write_text(("\n" + SEPARATOR + "\n").join(c.strip("\n") for c in chunks) + "\n")
