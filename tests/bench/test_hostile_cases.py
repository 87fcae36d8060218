"""The hostile corpus generator (bench/hostile_cases.py) and the runner's answer checks (bench/hostile.py).
The corpus against the real gateway: tests/serving/test_fuzz.py."""

from __future__ import annotations

from collections import Counter

from bench.hostile import check_answer
from bench.hostile_cases import CATEGORIES, HostileRequest, corpus


def test_the_corpus_is_seeded_covers_every_category_and_is_mostly_distinct() -> None:
    a, b, other = corpus(7, 1300), corpus(7, 1300), corpus(8, 1300)
    assert [r.raw("h:1") for r in a] == [r.raw("h:1") for r in b]
    assert [r.raw("h:1") for r in a] != [r.raw("h:1") for r in other]
    assert Counter(r.category for r in a) == {name: 100 for name in CATEGORIES}
    assert len({r.raw("h:1") for r in a}) > 1000
    # Any prefix covers every category (CI runs a prefix).
    assert {r.category for r in corpus(7, len(CATEGORIES))} == set(CATEGORIES)


def test_raw_requests_carry_exactly_the_abuse() -> None:
    reqs = corpus(0, 2600)
    two_lengths = next(r for r in reqs if r.label == "two Content-Lengths")
    assert two_lengths.raw("h:1").count(b"Content-Length") == 2
    utf8 = next(r for r in reqs if r.category == "invalid_utf8" and r.label.startswith("raw bytes"))
    try:
        utf8.body.decode("utf-8")
        raise AssertionError("body should not be UTF-8")
    except UnicodeDecodeError:
        pass
    assert any(b"NaN" in r.body or b"Infinity" in r.body for r in reqs if r.category == "odd_numbers")


def test_answer_checks() -> None:
    req = HostileRequest("x", "y", b"{}")
    shaped = b'{"error": {"message": "m", "type": "t", "param": null, "code": "c"}}'
    assert check_answer(req, 400, {}, shaped) is None
    assert check_answer(req, 400, {}, b"<html>400</html>") is not None
    assert check_answer(req, 400, {}, b'{"detail": "bad"}') is not None  # FastAPI's bare 422 shape
    assert check_answer(req, 503, {}, shaped) is not None  # 5xx is never acceptable in the corpus
    sse = {"content-type": "text/event-stream"}
    assert check_answer(req, 200, sse, b'data: {"choices": []}\n\ndata: [DONE]\n\n') is None
    assert check_answer(req, 200, sse, b'data: {"choices": []}\n\n') is not None  # cut short
    assert check_answer(req, 200, sse, b'data: {"error": "boom"}\n\ndata: [DONE]\n\n') is not None
    assert check_answer(HostileRequest("x", "y", method="HEAD"), 405, {}, b"") is None
