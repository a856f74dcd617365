"""The bodies every room shares: the error document, the health probe's answer, and the
store's naming rules as JSON-schema patterns. Bodies are named by direction
(``...Create``, ``...Public``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

# The store's naming rules (aae.store.validate_name) as JSON-schema patterns, so that the
# OpenAPI document says what a name is: 1-64 letters, digits, '.', '_', '-', starting with
# a letter or digit, no '..'; an alias is also not all digits; a version is a number
# (canonical: no leading zero) or an alias. tests/service/test_openapi.py checks that
# they accept exactly what the store accepts.
_WORD = r"[A-Za-z0-9_-]"
_ALIAS = (rf"(?:[A-Za-z]|[0-9]+[A-Za-z_-])(?:\.?{_WORD})*\.?"
          rf"|[0-9]+\.(?:{_WORD}(?:\.?{_WORD})*\.?)?")
NAME_PATTERN = rf"^[A-Za-z0-9](?:\.?{_WORD})*\.?$"
ALIAS_PATTERN = rf"^(?:{_ALIAS})$"
VERSION_PATTERN = rf"^(?:[1-9][0-9]*|{_ALIAS})$"


class Problem(BaseModel):
    """An error, as ``application/problem+json`` (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = Field(
        None, description="for invalid requests: where (loc) and what (msg) is wrong")


class Health(BaseModel):
    status: str
    detail: str | None = None
