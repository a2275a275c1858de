"""The one reading of Authorization headers (bridge/rules/tokens.py) that every door uses."""

from __future__ import annotations

import base64

from bridge.rules import tokens


def test_bearer_reads_the_token_whatever_the_scheme_case() -> None:
    assert tokens.bearer("Bearer abc") == "abc"
    assert tokens.bearer("bearer  abc ") == "abc"
    assert tokens.bearer("Basic abc") is None
    assert tokens.bearer("Bearer ") is None
    assert tokens.bearer(None) is None


def test_basic_password_is_the_part_after_the_colon() -> None:
    value = base64.b64encode(b"anyone:s3cret").decode()
    assert tokens.basic_password(f"Basic {value}") == "s3cret"
    assert tokens.basic_password("Basic %%%") == ""  # does not decode: a wrong secret
    assert tokens.basic_password("Bearer x") is None


def test_an_empty_expected_secret_matches_nothing() -> None:
    assert not tokens.same_secret("", "")
    assert not tokens.same_secret(None, "x")
    assert tokens.same_secret("x", "x")
    assert not tokens.same_secret("\udcff", "x")  # a lone surrogate from a header is no crash
