"""Broken sources never crash the front end: valid programs with random characters or tokens
deleted, inserted or replaced either elaborate or raise a GraphError that has a location and
quotes the source line with a caret."""
from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from graphc.elaborate import elaborate_source
from graphc.errors import GraphError
from tests.frontend.test_elaborate import MLP, RNN, TBPTT

FEATURES = """\
const K = 2; const S = 0.5
fn pair(a, b) { return a * S + b, a - b }
graph g {
    input x: f32[N, 3]
    input c: bool[N, 3]
    input k: i64[N]
    param W: f32[3, K] = uniform(-0.1, 0.1)
    h, d = pair(x, x)
    y = where(c, h, 0.0) @ W
    z = sum(y, axis=-1, keepdims=true) / N + mean(d[1:, 0])
    e = take(x, k, axis=0)
    o = one_hot(argmax(x, axis=1), 3, dtype=f32)
    for t in 0..K { z = z + y[:, t:t+1] ** 2 }
    output z
    output q = concat([x, x], 1).mT
    s = sum(z)
    grad s wrt W, x
}
"""
CORPUS = [MLP, RNN, TBPTT, FEATURES]
CHARS = "abxyzNTW0123456789 \n\t()[]{}<>=+-*/@.,:;#\"'_!e"
TOKEN = re.compile(r"[A-Za-z_]\w*|\d+\.\d+|\d+|\*\*|\.\.|[<>=!]=|\S|\s+")
VOCAB = sorted({t for s in CORPUS for t in TOKEN.findall(s) if t.strip()} | {"-1", "99", "[]"})

edits = st.lists(st.tuples(st.sampled_from("dir"), st.floats(0, 1), st.integers(0, 10**6)),
                 min_size=1, max_size=4)


def apply(parts: list[str], ops: list[tuple[str, float, int]], pool: str | list[str]) -> str:
    for kind, where, pick in ops:
        i = min(int(where * len(parts)), len(parts) - 1)
        if kind == "d" and len(parts) > 1:
            del parts[i]
        elif kind == "i":
            parts.insert(i, pool[pick % len(pool)])
        else:
            parts[i] = pool[pick % len(pool)]
    return "".join(parts)


RAW_TOKEN = re.compile(r"\b(LPAR|RPAR|LSQB|RSQB|LBRACE|RBRACE|COMMA|_SEP|NAME|INT|FLOAT|"
                       r"STRING|CMP|__ANON_\d+|\$END)\b")


def assert_elaborates_or_reports(src: str) -> None:
    try:
        elaborate_source(src, "t.graph")
    except GraphError as e:
        assert e.loc is not None and e.loc.file == "t.graph", str(e)
        assert "^" in str(e), str(e)
        assert not RAW_TOKEN.search(e.message), e.message     # words, not grammar names


def test_corpus_is_valid() -> None:
    for src in CORPUS:
        elaborate_source(src, "t.graph")


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), edits)
def test_character_mutations(src: str, ops: list[tuple[str, float, int]]) -> None:
    assert_elaborates_or_reports(apply(list(src), ops, CHARS))


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(CORPUS), edits)
def test_token_mutations(src: str, ops: list[tuple[str, float, int]]) -> None:
    assert_elaborates_or_reports(apply(TOKEN.findall(src), ops, VOCAB))
