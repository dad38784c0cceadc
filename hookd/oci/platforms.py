"""Platforms (``os/architecture[/variant]``) with the aliases containerd normalises."""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}", re.ASCII)

_ARCH_ALIASES = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "i386": ("386", None),
    "i686": ("386", None),
    "aarch64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
}


def normalize(os_name: str, architecture: str, variant: str | None) -> tuple[str, str, str | None]:
    """Normalise like containerd: ``x86_64``→``amd64``, ``aarch64``→``arm64``, arm64's ``v8``
    is its default (no variant), ``arm`` without a variant is ``v7``, ``7``→``v7``."""
    os_name = os_name.lower()
    architecture = architecture.lower()
    variant = variant.lower() if variant else None
    if architecture in _ARCH_ALIASES:
        architecture, implied = _ARCH_ALIASES[architecture]
        variant = variant or implied
    if variant is not None and variant.isdigit():
        variant = f"v{variant}"
    if architecture == "arm64" and variant == "v8":
        variant = None
    if architecture == "arm" and variant is None:
        variant = "v7"
    return os_name, architecture, variant


@dataclass(frozen=True)
class Platform:
    """A normalised platform, e.g. ``linux/amd64`` or ``linux/arm/v7``."""

    os: str
    architecture: str
    variant: str | None = None

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``"linux/amd64"``, ``"linux/arm64/v8"``, ``"linux/arm/v7"``; raises ValueError."""
        parts = text.strip().split("/")
        if len(parts) not in (2, 3) or not all(_WORD_RE.fullmatch(p.lower()) for p in parts):
            raise ValueError(f"platform {text!r} is not os/architecture[/variant]")
        return cls(*normalize(parts[0], parts[1], parts[2] if len(parts) == 3 else None))

    def __str__(self) -> str:
        base = f"{self.os}/{self.architecture}"
        return f"{base}/{self.variant}" if self.variant else base
