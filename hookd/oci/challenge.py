"""Parsing ``WWW-Authenticate`` (RFC 7235 / RFC 9110 §11.6.1).

A header may carry several challenges, each a scheme followed by either a token68 or a
comma-separated list of ``name=value`` parameters whose values are tokens or quoted strings.
Quoted values may contain commas (``scope="repository:a:pull,push"``), so the header cannot be
split on commas. Anything that does not follow the grammar raises :class:`ValueError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]"
_TOKEN_RE = re.compile(f"{_TCHAR}+", re.ASCII)
# after the scheme: a token68 that is the whole challenge, or name=token / name="quoted"
_TOKEN68_RE = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)[ \t]*(?=,|\Z)", re.ASCII)
_PARAM_RE = re.compile(
    rf'[ \t]*({_TCHAR}+)[ \t]*=[ \t]*(?:({_TCHAR}+)|"((?:[^"\\]|\\.)*)")', re.ASCII | re.DOTALL
)
_BARE_TOKEN_RE = re.compile(f"{_TCHAR}++[ \t]*+(?!=)", re.ASCII)  # the next challenge's scheme
_COMMAS_RE = re.compile(r"[ \t,]*")  # empty list elements are allowed
_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # in a quoted string
_MAX_HEADER = 8192


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` lower-cased, parameter names lower-cased."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token68: str | None = None


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in ``header`` in order; an empty header gives an empty list."""
    if len(header) > _MAX_HEADER:
        raise ValueError("WWW-Authenticate header is too long")
    challenges: list[Challenge] = []
    pos = _skip_commas(header, 0)[0]
    while pos < len(header):
        scheme = _TOKEN_RE.match(header, pos)
        if scheme is None:
            raise ValueError("expected an authentication scheme")
        challenge, pos = _parse_rest(header, scheme.end(), scheme.group().lower())
        challenges.append(challenge)
        pos = _skip_commas(header, pos)[0]
    return challenges


def _skip_commas(text: str, pos: int) -> tuple[int, bool]:
    """Past ``OWS , OWS`` runs; True if there was at least one comma."""
    match = _COMMAS_RE.match(text, pos)
    end = match.end() if match else pos  # (it always matches)
    return end, "," in text[pos:end]


def _parse_rest(text: str, pos: int, scheme: str) -> tuple[Challenge, int]:
    """After the scheme: nothing, a token68, or auth-params up to the next challenge."""
    if pos == len(text) or text[pos] == ",":
        return Challenge(scheme), pos
    if text[pos] not in " \t":
        raise ValueError("expected a space after the authentication scheme")
    token68 = _TOKEN68_RE.match(text, pos)
    if token68 is not None:
        return Challenge(scheme, token68=token68.group(1)), token68.end()
    params: dict[str, str] = {}
    while True:
        param = _PARAM_RE.match(text, pos)
        if param is None:
            if params and _BARE_TOKEN_RE.match(text, pos):
                break  # a bare token after a comma: the scheme of the next challenge
            raise ValueError("expected an auth-param (name=token or name=\"quoted string\")")
        name, token, quoted = param.groups()
        if quoted is not None:
            if _CONTROL_RE.search(quoted):
                raise ValueError("control character in a quoted string")
            token = re.sub(r"\\(.)", r"\1", quoted, flags=re.DOTALL)
        params.setdefault(name.lower(), token)
        pos, comma = _skip_commas(text, param.end())
        if not comma and pos < len(text):
            raise ValueError("expected ',' between auth-params")
        if pos == len(text):
            break
    return Challenge(scheme, params=MappingProxyType(params)), pos
