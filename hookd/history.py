"""``hookd history``: what hookd changed, when and where, read back from its own log.

Sources, in order: ``--log FILE``; the ``log.file`` of the configuration (JSON lines, e.g.
/var/log/one/hookd.log); otherwise ``journalctl -u hookd -o cat`` (the service logs JSON
lines to the journal). Lines that are not hookd's JSON events are skipped.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

_PRIORITY = re.compile(r"^<\d>")
_RELATIVE = re.compile(r"^\s*(\d+)\s*(s|sec|secs|m|min|mins|h|hour|hours|d|day|days|w|"
                       r"week|weeks)\s*(ago)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}  # by the unit's first letter


class HistoryError(ValueError):
    pass


@dataclass(frozen=True)
class Entry:
    time: datetime
    image_id: int
    template_id: int | None
    hypervisor: str | None
    kind: str  # "template" or "status"
    changes: tuple[dict[str, Any], ...]
    status: str | None
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "time": self.time.isoformat().replace("+00:00", "Z")}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    now = now or datetime.now(UTC)
    if match := _RELATIVE.match(text):
        seconds = int(match.group(1)) * _SECONDS[match.group(2)[0].lower()]
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            # Further back than datetime goes (year 1): everything there is.
            return datetime.min.replace(tzinfo=UTC)
    days_back = {"today": 0, "yesterday": 1}.get(text.strip().lower())
    if days_back is not None:
        return now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days_back)
    if (value := _time(text.strip())) is None:
        raise HistoryError(f"cannot read --since {text!r}: use e.g. 2026-11-28, "
                           f"'2026-11-28 10:00', 2h or 3d")
    return value


def _time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def entries(lines: Iterable[str]) -> Iterator[Entry]:
    for raw in lines:
        line = _PRIORITY.sub("", raw.strip())
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(doc, dict):
            continue
        event = doc.get("event")
        when = _time(doc.get("timestamp"))
        image_id = doc.get("image_id")
        if when is None or not isinstance(image_id, int):
            continue
        changes = tuple(c for c in doc.get("changes") or () if isinstance(c, dict))
        if event == "template.fixed":
            template_id = doc.get("template_id")
            yield Entry(when, image_id, template_id if isinstance(template_id, int) else None,
                        doc.get("hypervisor"), "template", changes, doc.get("status"),
                        str(doc.get("reason") or ""))
        elif event == "image.status":
            yield Entry(when, image_id, None, None, "status", changes, doc.get("status"),
                        str(doc.get("reason") or ""))


def _read_source(config_path: Path | None, log_file: str | None) -> Iterator[str]:
    if log_file:
        yield from _file_lines(Path(log_file))
        return
    from hookd.config import load

    try:
        configured = load(config_path).log.file
    except Exception:  # noqa: BLE001 - history must work even with a broken config
        configured = None
    if configured and Path(configured).exists():
        for path in (Path(configured), Path(f"{configured}.1")):  # and the rotated one
            if path.exists():
                yield from _file_lines(path)
        return
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        raise HistoryError("no log to read: pass --log FILE, set log.file in hookd.conf, "
                           "or run where journalctl can read the hookd unit")
    proc = subprocess.run([journalctl, "-u", "hookd", "-o", "cat", "--no-pager"],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HistoryError(f"journalctl failed: {proc.stderr.strip() or proc.returncode}")
    yield from proc.stdout.splitlines()


def _file_lines(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            yield from handle
    except OSError as exc:
        raise HistoryError(f"cannot read {path}: {exc.strerror}") from None


def _describe(entry: Entry) -> str:
    parts = []
    for change in entry.changes:
        attribute = change.get("attribute", "?")
        before, after = change.get("before"), change.get("after")
        if entry.kind == "status":
            if attribute == "HOOKD_STATUS":
                parts.append(f"status {before or '-'} -> {after}")
            continue
        parts.append(f"{attribute} {shorten(before)} -> {shorten(after)}")
    return "; ".join(parts)


def shorten(value: object, limit: int = 40) -> str:
    if value is None:
        return "(unset)"
    text = str(value).replace("\n", "\\n")
    if text.startswith("<") and " characters, sha256:" in text:
        return text[: text.index("sha256:") + 19] + ">"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_table(rows: list[Entry]) -> str:
    table = [("TIME (UTC)", "IMAGE", "TEMPLATE", "HYPERVISOR", "CHANGES")]
    table += [(e.time.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), str(e.image_id),
               "-" if e.template_id is None else str(e.template_id), e.hypervisor or "-",
               _describe(e) or (f"status {e.status}" if e.status else "")) for e in rows]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    return "\n".join("  ".join([*(row[i].ljust(widths[i]) for i in range(4)), row[4]])
                     for row in table)


def run_history(config_path: Path | None, *, log_file: str | None = None,
                image: int | None = None, since: str | None = None, as_json: bool = False,
                out: TextIO = sys.stdout) -> int:
    try:
        threshold = parse_since(since) if since else None
        rows = [e for e in entries(_read_source(config_path, log_file))
                if (image is None or e.image_id == image)
                and (threshold is None or e.time >= threshold)]
    except HistoryError as exc:
        print(f"hookd history: {exc}", file=sys.stderr)
        return 1
    rows.sort(key=lambda e: e.time)
    if as_json:
        for row in rows:
            print(json.dumps(row.as_json(), sort_keys=True), file=out)
        return 0
    if not rows:
        print("hookd has not changed anything" + (f" for image {image}" if image else "")
              + (f" since {since}" if since else ""), file=out)
        return 0
    print(render_table(rows), file=out)
    return 0
