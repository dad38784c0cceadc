"""Kernel command lines: merge required tokens into what is there, without duplicates."""

from __future__ import annotations

import re
from collections.abc import Iterable

# console= is the key the kernel takes several times: messages go to every console named, and
# the last one becomes /dev/console, where init writes (Documentation/admin-guide/
# serial-console.rst). A VT console (console=tty0) is added after a serial one: OpenNebula's
# KVM driver gives a VM no serial port, so an export's console=ttyS0 alone leads nowhere. A
# VT console a person named already wins over hookd's.
_VT_CONSOLE = re.compile(r"console=tty[0-9]+")
# Flags that contradict each other: a person's choice wins, as for a key's value. The kernel
# takes the last of ro/rw (init/do_mounts.c), so appending rw after a person's ro would
# silently overrule it.
_CONFLICTS: dict[str, frozenset[str]] = {"rw": frozenset({"ro"}), "ro": frozenset({"rw"})}
# A token: unquoted characters and double-quoted runs (an unclosed quote runs to the end).
_TOKEN = re.compile(r'(?:[^\s"]+|"[^"]*"?)+')


def split(cmdline: str | None) -> list[str]:
    """Split on whitespace, keeping double-quoted values (``foo="a b"``) in one token."""
    return _TOKEN.findall(cmdline or "")


def _key(token: str) -> str:
    return token.split("=", 1)[0]


def present(tokens: Iterable[str], required: str) -> bool:
    tokens = list(tokens)
    if required in tokens:
        return True
    if any(token in _CONFLICTS.get(required, ()) for token in tokens):
        return True
    key = _key(required)
    if _VT_CONSOLE.fullmatch(required):
        return any(_VT_CONSOLE.fullmatch(token) for token in tokens)
    if "=" not in required or key == "console":
        return False
    # A person's value for the same key wins (e.g. panic=10 instead of panic=1).
    return any(_key(token) == key and "=" in token for token in tokens)


def merge(current: str | None, required: Iterable[str]) -> str:
    """``current`` with every required token that is missing appended, in order."""
    tokens = split(current)
    for token in required:
        if not present(tokens, token):
            tokens.append(token)
    return " ".join(tokens)


def contradicted(current: str | None, required: Iterable[str]) -> list[str]:
    """Required flags left out because the command line holds their opposite (ro for rw)."""
    tokens = split(current)
    return [token for token in required
            if token not in tokens and any(t in _CONFLICTS.get(token, ()) for t in tokens)]


def has_key(cmdline: str | None, key: str) -> bool:
    return any(_key(token) == key for token in split(cmdline))
