"""IR-in / IR-out cases stored as files: ``cases/<pass>/<topic>.ir`` holds cases split by
``// -----``; each is ``// what it shows`` lines, the input IR, then ``// after`` and the expected
IR, or ``// unchanged`` for a negative case. ``GRAPHC_ACCEPT=1`` rewrites the expectations with
what the pass now gives, and the inputs with their canonical text (review the diff: never accept
just to pass)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import apply, canonical, check_pass, parse_one

ROOT = Path(__file__).parent / "cases"
SEPARATOR = "// -----"
AFTER, UNCHANGED = "// after", "// unchanged"


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


def check(case: Case) -> None:
    if os.environ.get("GRAPHC_ACCEPT") == "1":
        accept(case)
        case = read(case.pass_name, case.path)[case.index]
    check_pass(case.pass_name, case.before,
               case.before if case.after is None else case.after)


def accept(case: Case) -> None:
    """Store what the pass gives now as the case's expectation."""
    from graphc.ir.text import print_func
    func = parse_one(canonical(case.before))
    before, got = print_func(func), print_func(apply(case.pass_name, func))
    chunks = case.path.read_text().split("\n" + SEPARATOR + "\n")
    tail = UNCHANGED if got == before else f"{AFTER}\n{got}"
    parts = [case.title, before, tail]
    chunks[case.index] = "\n".join(p for p in parts if p)
    case.path.write_text(("\n" + SEPARATOR + "\n").join(c.strip("\n") for c in chunks) + "\n")
