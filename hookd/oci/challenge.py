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

_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", re.ASCII)
_TOKEN68_RE = re.compile(r"[A-Za-z0-9._~+/-]+=*", re.ASCII)
_WS = " \t"
_MAX_HEADER = 8192


@dataclass(frozen=True)
class Challenge:
    """One challenge: ``scheme`` lower-cased, parameter names lower-cased."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    token68: str | None = None


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def quoted(self) -> str:
        """Read a quoted-string; the scanner is on its opening quote."""
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                if self.pos >= len(self.text):
                    break
                char = self.text[self.pos]
                self.pos += 1
            if char != "\t" and not " " <= char <= "~" and ord(char) < 0x80:
                raise ValueError("control character in a quoted string")
            out.append(char)
        raise ValueError("unterminated quoted string")

    def skip_commas(self) -> bool:
        """Skip ``OWS , OWS`` runs; True if at least one comma was skipped."""
        found = False
        while True:
            self.skip_ws()
            if self.peek() != ",":
                return found
            self.pos += 1
            found = True


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in ``header`` in order; an empty header gives an empty list."""
    if len(header) > _MAX_HEADER:
        raise ValueError("WWW-Authenticate header is too long")
    scanner = _Scanner(header)
    challenges: list[Challenge] = []
    scanner.skip_commas()
    while not scanner.at_end():
        scheme = scanner.match(_TOKEN_RE)
        if scheme is None:
            raise ValueError("expected an authentication scheme")
        challenges.append(_parse_rest(scanner, scheme.lower()))
        scanner.skip_commas()
    return challenges


def _parse_rest(scanner: _Scanner, scheme: str) -> Challenge:
    """After the scheme: nothing, a token68, or auth-params up to the next challenge."""
    if scanner.at_end() or scanner.peek() == ",":
        return Challenge(scheme)
    if scanner.peek() not in _WS:
        raise ValueError("expected a space after the authentication scheme")
    scanner.skip_ws()
    start = scanner.pos
    token68 = scanner.match(_TOKEN68_RE)
    if token68 is not None:
        scanner.skip_ws()
        if scanner.at_end() or scanner.peek() == ",":
            return Challenge(scheme, token68=token68)
        scanner.pos = start
    params: dict[str, str] = {}
    while True:
        mark = scanner.pos
        name = scanner.match(_TOKEN_RE)
        if name is None:
            raise ValueError("expected an auth-param name")
        scanner.skip_ws()
        if scanner.peek() != "=":
            if not params:
                raise ValueError("expected '=' after an auth-param name")
            scanner.pos = mark  # a bare token: the scheme of the next challenge
            break
        scanner.pos += 1
        scanner.skip_ws()
        if scanner.peek() == '"':
            value = scanner.quoted()
        else:
            token = scanner.match(_TOKEN_RE)
            if token is None:
                raise ValueError("expected a token or quoted-string value")
            value = token
        params.setdefault(name.lower(), value)
        if not scanner.skip_commas():
            if not scanner.at_end():
                raise ValueError("expected ',' between auth-params")
            break
        if scanner.at_end():
            break
    return Challenge(scheme, params=MappingProxyType(params))
