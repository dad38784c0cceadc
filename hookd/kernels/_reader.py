"""Bounded, checked reads from an untrusted file.

Every read names what it is reading, is checked against the size the file had when it was opened,
and is capped, so a hostile header can only make us raise ``KernelInspectionError``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from hookd.kernels.model import KernelInspectionError

#: No single structure hookd reads is larger than this (the note segments are capped lower).
MAX_SINGLE_READ: Final = 4 << 20
SCAN_CHUNK: Final = 1 << 20


def describe_oserror(error: OSError) -> str:
    return error.strerror or str(error)


class KernelFile:
    """A read-only descriptor on a regular file of at most ``max_size`` bytes."""

    def __init__(self, path: Path, *, max_size: int, what: str = "kernel image") -> None:
        self.path = path
        # O_NONBLOCK: opening a FIFO must not hang waiting for a writer; fstat() then refuses it.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
        try:
            self._fd = os.open(path, flags)
        except FileNotFoundError:
            raise KernelInspectionError(f"{path} does not exist.") from None
        except OSError as error:
            raise KernelInspectionError(
                f"{path} cannot be opened: {describe_oserror(error)}."
            ) from None
        try:
            info = os.fstat(self._fd)
            if not stat.S_ISREG(info.st_mode):
                raise KernelInspectionError(f"{path} is not a regular file, so it is not a {what}.")
            if info.st_size == 0:
                raise KernelInspectionError(f"{path} is empty, so it is not a {what}.")
            if info.st_size > max_size:
                raise KernelInspectionError(
                    f"{path} is {info.st_size} bytes, more than the {max_size}-byte limit for a "
                    f"{what}."
                )
        except BaseException:
            os.close(self._fd)
            raise
        self.size: int = info.st_size

    def __enter__(self) -> KernelFile:
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self._fd)

    def _pread(self, offset: int, length: int) -> bytes:
        parts: list[bytes] = []
        remaining = length
        while remaining > 0:
            try:
                piece = os.pread(self._fd, remaining, offset + (length - remaining))
            except OSError as error:
                raise KernelInspectionError(
                    f"{self.path} cannot be read: {describe_oserror(error)}."
                ) from None
            if not piece:
                break
            parts.append(piece)
            remaining -= len(piece)
        return b"".join(parts)

    def read_at(self, offset: int, length: int, *, what: str) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or ``KernelInspectionError`` naming ``what``."""
        if offset < 0 or length < 0 or offset + length > self.size:
            raise KernelInspectionError(
                f"{self.path} is truncated or malformed: its {what} (bytes {offset}-"
                f"{offset + length}) lies beyond the end of the file ({self.size} bytes)."
            )
        if length > MAX_SINGLE_READ:
            raise KernelInspectionError(
                f"{self.path} is malformed: its {what} is {length} bytes, more than the "
                f"{MAX_SINGLE_READ}-byte limit."
            )
        data = self._pread(offset, length)
        if len(data) != length:
            raise KernelInspectionError(f"{self.path} shrank while it was being read.")
        return data

    def read_upto(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer at the end of the file; none past it)."""
        if offset < 0 or offset >= self.size:
            return b""
        return self._pread(offset, min(length, self.size - offset, MAX_SINGLE_READ))

    def chunks(self, start: int, end: int) -> Iterator[bytes]:
        """``[start, min(end, size of file))`` in pieces of at most ``SCAN_CHUNK`` bytes."""
        end = min(end, self.size)
        position = start
        while position < end:
            data = self._pread(position, min(SCAN_CHUNK, end - position))
            if not data:
                raise KernelInspectionError(f"{self.path} shrank while it was being read.")
            yield data
            position += len(data)

    def windows(self, start: int, overlap: int) -> Iterator[tuple[int, bytes]]:
        """``(offset, data)`` chunks of ``[start, size of file)``, each led by the last ``overlap``
        bytes of the one before, so that a pattern across a chunk boundary is seen whole."""
        carry, position = b"", start
        for chunk in self.chunks(start, self.size):
            buffer = carry + chunk
            yield position - len(carry), buffer
            position += len(chunk)
            carry = buffer[-overlap:]
