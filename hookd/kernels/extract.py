"""``extract_vmlinux``: the ELF vmlinux inside a bzImage (what the kernel tree's
``scripts/extract-vmlinux`` does, with limits).

The payload is located from the boot header (``payload_offset``/``payload_length``, protocol
2.08+) or, failing that, by scanning for compression magics and trying each hit in file order.
It is decompressed as a stream (``zlib``/``lzma``/``bz2`` in-process; ``lz4``, ``zstd`` and
``lzop`` as subprocesses fed through a pipe), with the output capped and a wall-clock deadline, and
written to a temporary file beside the destination that is inspected before it is renamed.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from hookd.kernels._reader import KernelFile, describe_oserror
from hookd.kernels.bootimg import (
    COMPRESSION_MAGICS,
    identify_compression,
    is_bzimage,
    parse_bzimage,
    protected_mode_offset,
)
from hookd.kernels.elf import ELF_MAGIC
from hookd.kernels.inspection import inspect_kernel
from hookd.kernels.model import (
    EXTRACT_TIMEOUT_SECONDS,
    MAX_KERNEL_SIZE,
    MAX_VMLINUX_SIZE,
    KernelExtractionError,
    KernelInspectionError,
    KernelReport,
)

#: Exit statuses that mean success: lzop exits 2 for a warning, e.g. "ignoring trailing garbage",
#: which is what follows the stream when its end is not known (the scan path); the output is
#: verified as an ELF either way.
_OK_STATUS: Final[dict[str, tuple[int, ...]]] = {"lzop": (0, 2)}

#: compression -> (program, Debian package, arguments)
TOOLS: Final[dict[str, tuple[str, str, tuple[str, ...]]]] = {
    "lz4": ("lz4", "lz4", ("-d", "-c", "-q")),
    "zstd": ("zstd", "zstd", ("-d", "-c", "-q")),
    "lzo": ("lzop", "lzop", ("-d", "-c", "-q")),
}
_READ_CHUNK: Final = 1 << 20
_OUTPUT_STEP: Final = 4 << 20
_MAX_CANDIDATES: Final = 64
_ANY_MAGIC: Final = re.compile(b"|".join(re.escape(magic) for _, magic in COMPRESSION_MAGICS))
#: Enough for the longest magic and the byte after it (bzip2's block size digit).
_MAGIC_OVERLAP: Final = max(len(magic) for _, magic in COMPRESSION_MAGICS) + 1
#: lib/lz4: legacy frames hold 8 MiB blocks; LZ4_COMPRESSBOUND(8 MiB) = 8 MiB + 8 MiB/255 + 16.
_LZ4_LEGACY_MAGIC: Final = 0x184C2102
_LZ4_MAX_BLOCK: Final = (8 << 20) + (8 << 20) // 255 + 16
#: RFC 8878 §3.1.1.2: Block_Size is at most 128 KiB.
_ZSTD_MAX_BLOCK: Final = 128 << 10


class _Failed(Exception):
    """One payload candidate did not yield a vmlinux (the message says why)."""


@dataclass(frozen=True)
class _Candidate:
    offset: int
    end: int
    compression: str
    #: The uncompressed size appended after the stream (size_append), when the header bounds it.
    expected_size: int | None
    from_header: bool


class _Gunzip:
    """``zlib.decompressobj`` behind the ``lzma``/``bz2`` decompressor interface."""

    def __init__(self) -> None:
        self._inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)

    @property
    def eof(self) -> bool:
        return self._inflater.eof

    @property
    def needs_input(self) -> bool:
        return not self._inflater.unconsumed_tail

    def decompress(self, data: bytes, max_length: int = -1) -> bytes:
        pending = self._inflater.unconsumed_tail + data
        return self._inflater.decompress(pending, max(max_length, 0))


_Decompressor = _Gunzip | lzma.LZMADecompressor | bz2.BZ2Decompressor
#: The compressions Python decompresses itself (the others need TOOLS).
_IN_PROCESS: Final[dict[str, Callable[[], _Decompressor]]] = {
    "gzip": _Gunzip,
    "xz": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ),
    "lzma": lambda: lzma.LZMADecompressor(format=lzma.FORMAT_ALONE),
    "bzip2": bz2.BZ2Decompressor,
}


def extract_vmlinux(
    bzimage_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    max_output: int = MAX_VMLINUX_SIZE,
    timeout: float = EXTRACT_TIMEOUT_SECONDS,
) -> KernelReport:
    """Decompress the vmlinux out of ``bzimage_path`` into ``out_path`` and return its report.

    Also accepts a bare compressed vmlinux (``vmlinux.gz``/``.xz``/…). ``out_path`` is replaced
    atomically and only with a well-formed ELF; on failure it is left untouched and no temporary
    file remains. Raises ``KernelExtractionError`` (or ``KernelInspectionError`` for an
    unreadable input), both ``PermanentError``.
    """
    source = Path(bzimage_path)
    out = Path(out_path)
    deadline = time.monotonic() + timeout
    with KernelFile(source, max_size=MAX_KERNEL_SIZE, what="bzImage") as f:
        head = f.read_upto(0, 4096)
        if head.startswith(ELF_MAGIC):
            raise KernelExtractionError(
                f"{source} is already an uncompressed ELF, so there is nothing to extract."
            )
        with contextlib.suppress(OSError):
            if out.exists() and os.path.samefile(source, out):
                raise KernelExtractionError(
                    f"Refusing to write the vmlinux over its own bzImage {source}."
                )
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent)
        except OSError as error:
            raise KernelExtractionError(
                f"Cannot create a file in {out.parent}: {describe_oserror(error)}."
            ) from None
        temp_path = Path(temporary)
        try:
            with os.fdopen(fd, "w+b") as sink:
                report = _extract_into(f, head, sink, temp_path, out, max_output, deadline)
                sink.flush()
                os.fchmod(sink.fileno(), 0o644)
                os.fsync(sink.fileno())
            os.replace(temp_path, out)
        except BaseException:
            with contextlib.suppress(OSError):
                temp_path.unlink()
            raise
    with contextlib.suppress(OSError):
        directory = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    return report


def _extract_into(
    f: KernelFile,
    head: bytes,
    sink: BinaryIO,
    temp_path: Path,
    out: Path,
    max_output: int,
    deadline: float,
) -> KernelReport:
    """Decompress candidates into ``sink`` (``temp_path``) until one is a vmlinux: its report."""
    failures: list[str] = []
    header_failure: str | None = None
    for tried, candidate in enumerate(_candidates(f, head)):
        if tried >= _MAX_CANDIDATES:
            break
        sink.seek(0)
        sink.truncate()
        try:
            written = _decompress(f, candidate, _Output(sink, max_output, deadline))
            expected = candidate.expected_size
            if expected is not None and written % (1 << 32) != expected:
                raise _Failed(
                    f"it decompressed to {written} bytes but the bzImage records "
                    f"{expected}, so the payload is corrupt"
                )
            sink.flush()
            try:
                return inspect_kernel(temp_path, max_size=max_output, name=out)
            except KernelInspectionError as error:
                raise _Failed(f"the result is not a well-formed ELF ({error.reason})") from None
        except _Failed as failure:
            where = f"{candidate.compression} stream at {candidate.offset:#x}: {failure}"
            if candidate.from_header:
                header_failure = where
            failures.append(where)
            if time.monotonic() > deadline:
                break
    if header_failure is not None:
        raise KernelExtractionError(
            f"Cannot extract a vmlinux from {f.path}: the payload named by its boot header, a "
            f"{header_failure}."
        )
    if not failures:
        raise KernelExtractionError(
            f"Cannot extract a vmlinux from {f.path}: no compressed payload (gzip, xz, bzip2, "
            "lzma, lzo, lz4 or zstd) was found in it."
        )
    shown = "; ".join(failures[:3])
    more = f" and {len(failures) - 3} more" if len(failures) > 3 else ""
    raise KernelExtractionError(
        f"Cannot extract a vmlinux from {f.path}: no compressed stream in it decompressed to an "
        f"ELF ({shown}{more})."
    )


def _candidates(f: KernelFile, head: bytes) -> Iterator[_Candidate]:
    scan_from = 0
    header_offset: int | None = None
    if is_bzimage(head):
        bz = parse_bzimage(f)
        scan_from = protected_mode_offset(head)
        if bz.compression and bz.payload_offset is not None and bz.payload_length:
            end = bz.payload_offset + bz.payload_length
            expected: int | None = None
            if bz.compression != "gzip" and bz.payload_length > 4:
                # size_append: every format but gzip is followed by the u32 uncompressed size.
                end -= 4
                (expected,) = struct.unpack("<I", f.read_at(end, 4, what="payload size"))
            header_offset = bz.payload_offset
            yield _Candidate(bz.payload_offset, end, bz.compression, expected, True)
    for offset, compression in _scan_magics(f, scan_from):
        if offset != header_offset:
            yield _Candidate(offset, f.size, compression, None, False)


def _scan_magics(f: KernelFile, start: int) -> Iterator[tuple[int, str]]:
    """``(offset, compression)`` of each compression magic in the file from ``start`` on."""
    last = -1
    for base, buffer in f.windows(start, _MAGIC_OVERLAP):
        hit = _ANY_MAGIC.search(buffer)
        while hit is not None:
            name = identify_compression(buffer[hit.start() : hit.start() + 8])
            if name is not None and base + hit.start() > last:
                last = base + hit.start()
                yield last, name
            # Not finditer: a magic can begin inside the last one (zstd's last byte is xz's first).
            hit = _ANY_MAGIC.search(buffer, hit.start() + 1)


def _decompress(f: KernelFile, candidate: _Candidate, output: _Output) -> int:
    if candidate.compression in _IN_PROCESS:
        return _decompress_in_process(f, candidate, _IN_PROCESS[candidate.compression](), output)
    end = candidate.end
    if candidate.compression == "lz4":
        end = _lz4_legacy_end(f, candidate.offset, candidate.end)
    elif candidate.compression == "zstd":
        end = _zstd_frame_end(f, candidate.offset, candidate.end)
    return _decompress_with_tool(f, candidate, end, output)


class _Output:
    """Counts, caps and checks the decompressed bytes as they are written; holds the deadline."""

    def __init__(self, sink: BinaryIO, max_output: int, deadline: float) -> None:
        self.sink = sink
        self.max_output = max_output
        self.deadline = deadline
        self.written = 0
        self.head = b""

    def write(self, data: bytes) -> None:
        if not data:
            return
        if len(self.head) < 4:
            self.head += data[: 4 - len(self.head)]
            if len(self.head) == 4 and self.head != ELF_MAGIC:
                raise _Failed("it decompresses to data that is not an ELF")
        self.written += len(data)
        if self.written > self.max_output:
            raise _Failed(f"it decompresses to more than the {self.max_output}-byte limit")
        self.sink.write(data)

    def finish(self) -> int:
        if self.written < 4:
            raise _Failed("it decompresses to almost nothing")
        return self.written


def _decompress_in_process(
    f: KernelFile, candidate: _Candidate, decompressor: _Decompressor, output: _Output
) -> int:
    try:
        for chunk in f.chunks(candidate.offset, candidate.end):
            data = chunk
            while not decompressor.eof:
                if time.monotonic() > output.deadline:
                    raise _Failed("decompression timed out")
                piece = decompressor.decompress(data, _OUTPUT_STEP)
                data = b""
                output.write(piece)
                if decompressor.needs_input or (not piece and not decompressor.eof):
                    break
            if decompressor.eof:
                break
    except (lzma.LZMAError, zlib.error, OSError, EOFError, ValueError) as error:
        raise _Failed(f"it is not a valid {candidate.compression} stream ({error})") from None
    if not decompressor.eof:
        raise _Failed(f"the {candidate.compression} stream is truncated")
    return output.finish()


def _lz4_legacy_end(f: KernelFile, offset: int, end: int) -> int:
    """End of an LZ4 legacy frame: the magic, then blocks of ``u32 size`` + data, no end mark; the
    kernel's appended u32 image size (always above the block bound) stops the walk."""
    position = offset + 4
    blocks = 0
    while position + 4 <= end:
        (size,) = struct.unpack("<I", f.read_at(position, 4, what="lz4 block header"))
        if size == _LZ4_LEGACY_MAGIC:  # concatenated legacy frames
            position += 4
            continue
        if size == 0 or size > _LZ4_MAX_BLOCK or position + 4 + size > end:
            break
        position += 4 + size
        blocks += 1
    if blocks == 0:
        raise _Failed("it holds no valid lz4 block")
    return position


def _zstd_frame_end(f: KernelFile, offset: int, end: int) -> int:
    """End of one zstd frame (RFC 8878 §3.1.1), walking its block headers."""
    header = f.read_upto(offset, 18)
    if len(header) < 6:
        raise _Failed("its zstd frame header is truncated")
    descriptor = header[4]
    if descriptor & 0x08:
        raise _Failed("its zstd frame header sets the reserved bit")
    single_segment = bool(descriptor & 0x20)
    fcs_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
    dictionary_size = (0, 1, 2, 4)[descriptor & 0x03]
    position = offset + 5 + (0 if single_segment else 1) + dictionary_size + fcs_size
    while True:
        if position + 3 > end:
            raise _Failed("its zstd frame is truncated")
        block = int.from_bytes(f.read_at(position, 3, what="zstd block header"), "little")
        last, kind, size = block & 1, (block >> 1) & 3, block >> 3
        if kind == 3 or size > _ZSTD_MAX_BLOCK:
            raise _Failed("its zstd frame has an invalid block header")
        position += 3 + (1 if kind == 1 else size)
        if last:
            break
    position += 4 if descriptor & 0x04 else 0  # Content_Checksum
    if position > end:
        raise _Failed("its zstd frame is truncated")
    return position


def _decompress_with_tool(f: KernelFile, candidate: _Candidate, end: int, output: _Output) -> int:
    program, package, arguments = TOOLS[candidate.compression]
    executable = shutil.which(program)
    if executable is None:
        raise _Failed(
            f"decompressing it needs the {program} program, which is not installed (Debian "
            f"package {package})"
        )
    environment = {"PATH": os.environ.get("PATH", os.defpath), "LC_ALL": "C"}
    with tempfile.TemporaryFile() as errors:
        try:
            process = subprocess.Popen(
                [executable, *arguments],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                env=environment,
                start_new_session=True,
            )
        except OSError as error:
            raise _Failed(f"{program} cannot be started: {describe_oserror(error)}") from None
        stdin, stdout = process.stdin, process.stdout
        if stdin is None or stdout is None:  # pragma: no cover - PIPE always yields both
            process.kill()
            raise _Failed(f"{program} started without pipes")
        feeder = threading.Thread(target=_feed, args=(f, candidate.offset, end, stdin), daemon=True)
        feeder.start()
        try:
            descriptor = stdout.fileno()
            while True:
                remaining = output.deadline - time.monotonic()
                if remaining <= 0 or not select.select([descriptor], [], [], remaining)[0]:
                    raise _Failed(f"{program} timed out")
                data = os.read(descriptor, _READ_CHUNK)
                if not data:
                    break
                output.write(data)
            try:
                status = process.wait(timeout=max(output.deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                raise _Failed(f"{program} timed out") from None
        finally:
            # The tool leads its own session (start_new_session): kill the whole group, so no
            # child it forked keeps the pipes open and the feeder thread blocked.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            stdout.close()
            feeder.join(timeout=10)
        if status not in _OK_STATUS.get(program, (0,)):
            errors.seek(0)
            message = errors.read(300).decode("utf-8", "replace").strip().replace("\n", " ")
            detail = f": {message}" if message else ""
            raise _Failed(f"{program} exited with status {status}{detail}")
    return output.finish()


def _feed(f: KernelFile, start: int, end: int, pipe: BinaryIO) -> None:
    """Write ``[start, end)`` of the file to the tool's stdin (runs in a thread)."""
    try:
        for chunk in f.chunks(start, end):
            pipe.write(chunk)
    except (OSError, ValueError, KernelInspectionError):
        pass  # the tool exited or was killed: its exit status reports the problem
    finally:
        with contextlib.suppress(OSError, ValueError):
            pipe.close()
