"""The logging pipeline: JSON lines, console, journald priorities, stdlib routing, redaction,
reconfiguration and the logrotate-safe file log."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from hookd.history import entries
from hookd.logs import (
    MASK,
    configure_logging,
    get_logger,
    install_excepthooks,
    is_journal_stream,
    redact,
    register_secret,
)

SECRET = "s3cr3t-Pa55-w0rd"  # the oned password
TOKEN = "eyJhbGciOiJSUzI1NiJ9.registry-token.sig"  # a registry bearer token (not registered)

# A module-level logger bound before any configuration, as every hookd module does.
module_log = get_logger("hookd.tests.ops")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line parsed as a JSON object (fails on any line that is not)."""
    docs = []
    for line in text.splitlines():
        doc = json.loads(line)
        assert isinstance(doc, dict), line
        docs.append(doc)
    return docs


def assert_base_keys(doc: dict[str, Any]) -> None:
    assert set(doc) >= {"timestamp", "level", "event", "logger"}, doc
    assert doc["timestamp"].endswith("Z")
    stamp = datetime.fromisoformat(doc["timestamp"].replace("Z", "+00:00"))
    assert stamp.tzinfo is not None and stamp.utcoffset() is not None
    assert abs((datetime.now(UTC) - stamp).total_seconds()) < 60


def emit_everything(secret: str = SECRET) -> None:
    """Log ``secret`` every way hookd and its libraries might: all levels, all shapes."""
    log = get_logger("hookd.reconciler")
    for method in (log.debug, log.info, log.warning, log.error, log.critical):
        method(f"event with {secret} inside", value=secret, nested={"a": [{"b": f"x{secret}x"}]},
               tuple_value=(1, secret), **{f"key-{secret}": 1})
    log.info("login", session=f"oneadmin:{secret}", password=secret)
    log.info("positional %s", secret)
    log.info("object", thing=Path("/tmp") / secret)
    log.info("with stack", stack_info=True, note=secret)
    try:
        try:
            raise KeyError(secret)
        except KeyError as inner:
            raise RuntimeError(f"one.image.info failed for oneadmin:{secret}") from inner
    except RuntimeError:
        log.exception("reconcile.crashed", image_id=1)
        logging.getLogger("pyone").exception("call failed: %s", secret)
        logging.getLogger("requests").error("failed", exc_info=True)
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR):
        logging.getLogger("urllib3.connectionpool").log(level, "sending %s", secret)
    logging.getLogger("zmq").warning("extra", extra={"detail": secret})
    logging.getLogger("pyone").debug("session %s", f"oneadmin:{secret}")


@pytest.fixture
def out() -> io.StringIO:
    return io.StringIO()


# -- formats --------------------------------------------------------------------------------


def test_json_lines_when_the_stream_is_not_a_terminal(out: io.StringIO,
                                                      no_systemd_env: None) -> None:
    configure_logging(level="debug", stream=out)
    log = get_logger("hookd.daemon")
    log.debug("d", n=1)
    log.info("hookd.starting", version="0.1.0")
    log.warning("oned.unreachable", status="waiting")
    log.error("sweep.failed", reason="x\ny")
    logging.getLogger("urllib3.connectionpool").debug("Starting new HTTP connection (1): %s",
                                                      "127.0.0.1:2633")
    module_log.info("from.module")
    docs = json_lines(out.getvalue())
    assert [d["level"] for d in docs] == ["debug", "info", "warning", "error", "debug", "info"]
    assert [d["logger"] for d in docs] == ["hookd.daemon"] * 4 + [
        "urllib3.connectionpool", "hookd.tests.ops"]
    for doc in docs:
        assert_base_keys(doc)
    assert docs[3]["reason"] == "x\ny"  # one line per event, even with newlines inside
    assert docs[4]["event"] == "Starting new HTTP connection (1): 127.0.0.1:2633"
    assert list(docs[1])[:4] == ["timestamp", "level", "logger", "event"]


def test_event_schema_survives_the_pipeline_and_hookd_history_reads_it(
    out: io.StringIO, tmp_path: Path
) -> None:
    register_secret(SECRET)  # redaction active must not disturb the schema
    log_file = tmp_path / "hookd.log"
    configure_logging(stream=out, fmt="json", file_path=log_file)
    changes = [
        {"attribute": "OS/KERNEL_DS", "before": None, "after": "$FILE[IMAGE_ID=0]"},
        {"attribute": "OS/ROOT", "before": "sda", "after": "vda"},
        {"attribute": "CONTEXT/START_SCRIPT_BASE64", "before": None, "after": "ZWNobyBoaQ=="},
    ]
    log = get_logger("hookd.applier")
    log.info("template.fixed", image_id=12, template_id=7, hypervisor="kvm", action="update",
             changes=changes, reason="container image without kernel")
    log.info("image.status", image_id=12, status="applied", reason="templates fixed",
             changes=[{"attribute": "HOOKD_STATUS", "before": None, "after": "applied"}])
    for text in (out.getvalue(), log_file.read_text()):
        fixed, status = json_lines(text)
        assert fixed["event"] == "template.fixed"
        assert {k: fixed[k] for k in ("image_id", "template_id", "hypervisor", "action",
                                      "reason")} == {
            "image_id": 12, "template_id": 7, "hypervisor": "kvm", "action": "update",
            "reason": "container image without kernel"}
        assert fixed["changes"] == changes
        assert fixed["level"] == "info"
        assert status["status"] == "applied"
        parsed = list(entries(text.splitlines()))
        assert [(e.kind, e.image_id, e.template_id, e.hypervisor) for e in parsed] == [
            ("template", 12, 7, "kvm"), ("status", 12, None, None)]
        assert parsed[0].changes == tuple(changes)
        assert parsed[1].status == "applied"


def test_console_when_forced(out: io.StringIO, no_systemd_env: None) -> None:
    configure_logging(stream=out, fmt="console")
    get_logger("hookd.daemon").info("hookd.ready", status="active")
    logging.getLogger("pyone").warning("foreign %s", "line")
    text = out.getvalue()
    lines = text.splitlines()
    assert len(lines) == 2
    assert "\x1b[" not in text  # not a terminal: no colours
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \[info\s*\] hookd\.ready\s+"
                    r"\[hookd\.daemon\] status=active$", lines[0]), lines[0]
    assert "[warning  ] foreign line" in lines[1] and "[pyone]" in lines[1]
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


class Terminal:
    """A real TTY (a pseudo-terminal) whose output a thread drains, so writes never block."""

    def __init__(self) -> None:
        self._master, slave = pty.openpty()
        self.stream: TextIO = os.fdopen(slave, "w", encoding="utf-8", closefd=True)
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._master, 65536)
            except OSError:  # EIO once the slave side is closed
                return
            if not chunk:
                return
            self._chunks.append(chunk)

    def output(self) -> str:
        """What was written so far, waiting (up to 2 s) for at least one full line."""
        self.stream.flush()
        for _ in range(200):
            if b"\n" in b"".join(self._chunks):
                break
            threading.Event().wait(0.01)
        return b"".join(self._chunks).decode().replace("\r\n", "\n")

    def close(self) -> None:
        self.stream.close()
        os.close(self._master)
        self._thread.join(2)


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    tty = Terminal()
    try:
        yield tty
    finally:
        tty.close()


def test_auto_format_is_console_with_colours_on_a_terminal(
    terminal: Terminal, no_systemd_env: None
) -> None:
    assert terminal.stream.isatty()
    configure_logging(stream=terminal.stream)  # fmt="auto"
    get_logger("hookd.cli").info("hello", n=1)
    text = terminal.output()
    assert "hello" in text and "\x1b[" in text
    assert not text.lstrip().startswith("{")


def test_no_color_is_honoured_on_a_terminal(
    terminal: Terminal, no_systemd_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    configure_logging(stream=terminal.stream)
    get_logger("hookd.cli").info("hello", n=1)
    text = terminal.output()
    assert "hello" in text and "n=1" in text
    assert "\x1b[" not in text


def test_json_forced_on_a_terminal(terminal: Terminal, no_systemd_env: None) -> None:
    configure_logging(stream=terminal.stream, fmt="json")
    get_logger("hookd.cli").info("hello")
    doc = json.loads(terminal.output().strip())
    assert doc["event"] == "hello"


def test_journald_priority_prefix_only_when_journal_stream_is_this_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "journal-stand-in"
    with path.open("w", encoding="utf-8") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert is_journal_stream(stream)
        configure_logging(level="debug", stream=stream)
        log = get_logger("hookd.daemon")
        log.debug("d")
        log.info("i")
        log.warning("w")
        log.error("e")
        log.critical("c")
        logging.getLogger("urllib3").warning("foreign")
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("x")
    lines = path.read_text().splitlines()
    prefixes = [line[:3] for line in lines]
    assert prefixes == ["<7>", "<6>", "<4>", "<3>", "<2>", "<4>", "<3>"]
    for line in lines:
        assert_base_keys(json.loads(line[3:]))
    # ... and what hookd history reads from `journalctl -o cat` keeps working with a prefix.
    assert list(entries(lines)) == []


@pytest.mark.parametrize("journal_stream", [None, "1:2", "garbage", "other-file"])
def test_no_priority_prefix_when_journal_stream_is_not_this_stream(
    journal_stream: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if journal_stream is None:
        monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    elif journal_stream == "other-file":
        other = tmp_path / "other"
        other.touch()
        st = os.stat(other)
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    else:
        monkeypatch.setenv("JOURNAL_STREAM", journal_stream)
    path = tmp_path / "stdout"
    with path.open("w", encoding="utf-8") as stream:
        configure_logging(stream=stream)
        get_logger("hookd.daemon").info("i")
    line = path.read_text()
    assert line.startswith("{"), line
    # A stream without a file descriptor is never the journal.
    assert not is_journal_stream(io.StringIO())


# -- one pipeline for stdlib loggers ----------------------------------------------------------


def test_stdlib_loggers_share_the_pipeline_and_are_redacted(out: io.StringIO) -> None:
    configure_logging(level="debug", stream=out, secrets=[SECRET])
    structlog.contextvars.bind_contextvars(image_id=42)
    logging.getLogger("urllib3.connectionpool").debug(
        "https://registry-1.docker.io:443 \"GET /v2/library/alpine/manifests/3.20 HTTP/1.1\" "
        "200 None; request headers: {'User-Agent': 'hookd', 'Authorization': 'Bearer %s'}",
        TOKEN)
    logging.getLogger("urllib3").debug("send: b'GET /v2/ HTTP/1.1\\r\\nAuthorization: Bearer %s"
                                       "\\r\\n'", TOKEN)
    logging.getLogger("pyone").debug(
        "<?xml version='1.0'?><methodCall><methodName>one.image.info</methodName><params>"
        "<param><value><string>%s</string></value></param></params></methodCall>",
        f"oneadmin:{SECRET}")
    logging.getLogger("pyone").info("session=%s", f"oneadmin:{SECRET}")
    logging.getLogger("requests").warning("proxy %s", f"http://user:{SECRET}@proxy:3128/")
    text = out.getvalue()
    assert SECRET not in text and TOKEN not in text
    docs = json_lines(text)
    assert all(d["image_id"] == 42 for d in docs)  # bound context reaches foreign lines too
    assert [d["logger"] for d in docs] == ["urllib3.connectionpool", "urllib3", "pyone",
                                           "pyone", "requests"]
    assert "'Authorization': 'Bearer ****'" in docs[0]["event"]
    assert "Authorization: Bearer ****" in docs[1]["event"]
    assert "<string>oneadmin:****</string>" in docs[2]["event"]
    assert docs[3]["event"] == "session=oneadmin:****"
    assert "http://user:****@proxy:3128/" in docs[4]["event"]


def test_unregistered_session_and_tokens_in_text_are_masked(out: io.StringIO) -> None:
    configure_logging(level="debug", stream=out)  # nothing registered
    log = logging.getLogger("pyone")
    log.debug("<methodCall><methodName>one.vm.info</methodName>\n<params>\n<param>\n<value>"
              "<string>oneadmin:topsecret</string></value></param></params></methodCall>")
    log.debug("token response: {\"token\": \"%s\", \"expires_in\": 300}", TOKEN)
    log.debug("url https://cdn.example/blob?X-Amz-Signature=abcdef0123&X-Amz-Credential=AKIA1")
    text = out.getvalue()
    for leaked in ("topsecret", TOKEN, "abcdef0123", "AKIA1"):
        assert leaked not in text
    assert '\\"expires_in\\": 300' in text  # the rest stays readable


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_registered_secrets_never_appear_anywhere(
    fmt: str, out: io.StringIO, tmp_path: Path
) -> None:
    log_file = tmp_path / "hookd.log"
    configure_logging(level="debug", stream=out, fmt=fmt,  # type: ignore[arg-type]
                      file_path=log_file, secrets=[SECRET])
    emit_everything()
    stream_text, file_text = out.getvalue(), log_file.read_text()
    for text in (stream_text, file_text):
        assert SECRET not in text
        assert MASK in text
        assert "Traceback" in text or '"exc_type"' in text
        assert "KeyError" in text and "RuntimeError" in text  # chained traceback kept
    assert "oneadmin:****" in stream_text
    # 5 levels + login, positional, object, stack + 3 exceptions + 4 urllib3 + zmq, pyone
    assert len(json_lines(file_text)) == 18
    if fmt == "json":
        docs = json_lines(stream_text)
        assert len(docs) == 18
        crashed = next(d for d in docs if d["event"] == "reconcile.crashed")
        values = [e["exc_value"] for e in crashed["exception"]]
        assert values == ["one.image.info failed for oneadmin:****", "'****'"]
        assert crashed["level"] == "error"


def test_secret_variants_are_masked(out: io.StringIO) -> None:
    secret = "pa'ss wo/rd"
    configure_logging(stream=out, secrets=[secret])
    get_logger("hookd.x").info("variants", as_repr=repr(secret), url="https://r/?p=pa%27ss%20wo%2Frd",
                               obj=[secret.encode()])
    text = out.getvalue()
    assert "pa%27ss" not in text and "pa\\\\'ss" not in text and "pa'ss" not in text
    assert "wo/rd" not in text


def test_sensitive_keys_are_masked(out: io.StringIO) -> None:
    configure_logging(stream=out)
    get_logger("hookd.oci.registry").info(
        "registry.auth", password="hunter2", token="abc", access_token="def",
        registry_password="ghi", Authorization="Bearer jkl", headers={"authorization": "mno"},
        session="oneadmin:pqr", one_session="nocolon", auth={"username": "u", "password": "p"},
        password_file="/etc/one/registry.pw", auth_file="/var/lib/one/.one/one_auth",
        token_url="https://auth.docker.io/token", secret=None, cookie="",
    )
    (doc,) = json_lines(out.getvalue())
    assert doc["password"] == doc["token"] == doc["access_token"] == MASK
    assert doc["registry_password"] == doc["auth"] == MASK
    assert doc["Authorization"] == "Bearer ****"
    assert doc["headers"] == {"authorization": MASK}
    assert doc["session"] == "oneadmin:****"
    assert doc["one_session"] == MASK
    # Paths and URLs are not secrets; absent values stay visible as absent.
    assert doc["password_file"] == "/etc/one/registry.pw"
    assert doc["auth_file"] == "/var/lib/one/.one/one_auth"
    assert doc["token_url"] == "https://auth.docker.io/token"
    assert doc["secret"] is None and doc["cookie"] == ""


def test_redaction_leaves_the_callers_objects_alone() -> None:
    register_secret(SECRET)
    changes = [{"attribute": "X", "before": SECRET, "after": None}]
    event = {"event": "e", "changes": changes, "password": "p"}
    redacted = redact(None, "info", event)
    assert redacted["changes"] == [{"attribute": "X", "before": MASK, "after": None}]
    assert redacted["password"] == MASK
    assert changes[0]["before"] == SECRET and event["password"] == "p"


def test_non_finite_floats_stay_valid_json(out: io.StringIO) -> None:
    configure_logging(stream=out)
    get_logger("hookd.x").info("numbers", a=float("nan"), b=float("inf"), c=1.5)
    line = out.getvalue().strip()
    doc = json.loads(line, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))
    assert doc["a"] == "nan" and doc["b"] == "inf" and doc["c"] == 1.5


def test_secrets_in_uncaught_thread_exceptions_are_redacted(out: io.StringIO) -> None:
    configure_logging(stream=out, secrets=[SECRET])
    saved = (sys.excepthook, threading.excepthook)
    try:
        install_excepthooks()

        def crash() -> None:
            raise RuntimeError(f"supervisor died with {SECRET}")

        thread = threading.Thread(target=crash, name="hookd-supervisor")
        thread.start()
        thread.join()
        sys.excepthook(ValueError, ValueError(SECRET), None)
    finally:
        sys.excepthook, threading.excepthook = saved
    docs = json_lines(out.getvalue())
    assert SECRET not in out.getvalue()
    assert [(d["event"], d["level"], d["thread"]) for d in docs] == [
        ("hookd.uncaught_exception", "critical", "hookd-supervisor"),
        ("hookd.uncaught_exception", "critical", "MainThread")]
    assert docs[0]["exception"][0]["exc_value"] == "supervisor died with ****"


def test_a_broken_stdlib_call_reports_without_the_secret(
    out: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(stream=out, secrets=[SECRET])
    # A library bug: too few arguments for its format string (on purpose here).
    broken = "two args %s %s but one given"
    logging.getLogger("pyone").error(broken, f"oneadmin:{SECRET}")
    err = capsys.readouterr().err
    assert "logging error" in err and "pyone" in err
    assert SECRET not in err and SECRET not in out.getvalue()


# -- reconfiguration --------------------------------------------------------------------------


def test_reconfiguration_changes_level_stream_and_format(out: io.StringIO) -> None:
    configure_logging(level="info", stream=out)
    module_log.debug("hidden")
    logging.getLogger("urllib3").debug("hidden too")
    module_log.info("shown")
    second = io.StringIO()
    configure_logging(level="debug", stream=second, fmt="console")  # e.g. after SIGHUP
    module_log.debug("now visible")
    logging.getLogger("urllib3").debug("stdlib now visible")
    configure_logging(level="warning", stream=second, fmt="json")
    module_log.info("filtered again")
    logging.getLogger("requests").info("filtered again")
    module_log.warning("json again")
    assert [d["event"] for d in json_lines(out.getvalue())] == ["shown"]
    lines = second.getvalue().splitlines()
    assert len(lines) == 3
    assert "now visible" in lines[0] and "stdlib now visible" in lines[1]
    assert json.loads(lines[2])["event"] == "json again"
    root = logging.getLogger()
    assert len(root.handlers) == 1  # no handler piles up over reconfigurations


def test_configure_logging_replaces_foreign_root_handlers(out: io.StringIO) -> None:
    leaked = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(leaked))  # e.g. a basicConfig()
    configure_logging(stream=out, secrets=[SECRET])
    logging.getLogger("pyone").warning("password %s", SECRET)
    assert leaked.getvalue() == ""
    assert SECRET not in out.getvalue()


def test_invalid_level_and_format_are_rejected(out: io.StringIO) -> None:
    with pytest.raises(ValueError, match="log level"):
        configure_logging(level="loud", stream=out)
    with pytest.raises(ValueError, match="log format"):
        configure_logging(stream=out, fmt="xml")  # type: ignore[arg-type]


def test_structlog_testing_capture_still_works_after_configuration(out: io.StringIO) -> None:
    # Loggers are not cached: tools that reconfigure structlog temporarily see every logger.
    configure_logging(stream=out)
    module_log.info("before")
    with structlog.testing.capture_logs() as captured:
        module_log.info("captured", x=1)
    module_log.info("after")
    assert [c["event"] for c in captured] == ["captured"]
    assert [d["event"] for d in json_lines(out.getvalue())] == ["before", "after"]


# -- the file log -----------------------------------------------------------------------------


def test_file_log_survives_rename_and_delete_like_logrotate(out: io.StringIO,
                                                           tmp_path: Path) -> None:
    log_file = tmp_path / "hookd.log"
    configure_logging(stream=out, file_path=log_file)
    log = get_logger("hookd.daemon")
    log.info("first")
    log_file.rename(tmp_path / "hookd.log.1")  # logrotate: rename...
    log_file.touch(mode=0o600)  # ...then `create`
    log.info("second")
    logging.getLogger("pyone").info("third")
    (tmp_path / "hookd.log.1").rename(tmp_path / "hookd.log.2")
    log_file.unlink()  # no `create`: the handler re-creates the file
    log.info("fourth")
    assert [d["event"] for d in json_lines((tmp_path / "hookd.log.2").read_text())] == ["first"]
    assert [d["event"] for d in json_lines(log_file.read_text())] == ["fourth"]
    assert [d["event"] for d in json_lines(out.getvalue())] == [
        "first", "second", "third", "fourth"]


def test_file_log_reuses_the_handler_on_reload_and_closes_it_when_dropped(
    out: io.StringIO, tmp_path: Path
) -> None:
    log_file = tmp_path / "hookd.log"
    configure_logging(stream=out, file_path=log_file)
    (handler_before,) = [h for h in logging.getLogger().handlers
                         if isinstance(h, logging.FileHandler)]
    configure_logging(stream=out, file_path=log_file, level="debug")
    (handler_after,) = [h for h in logging.getLogger().handlers
                        if isinstance(h, logging.FileHandler)]
    assert handler_after is handler_before  # a SIGHUP does not reopen the file
    get_logger("hookd.x").debug("kept")
    configure_logging(stream=out)  # file log switched off
    assert handler_before.stream is None  # closed
    get_logger("hookd.x").info("stream only")
    handler_before.handle(logging.LogRecord("late", logging.INFO, "", 0, "late", (), None))
    assert handler_before.stream is None  # a late record does not reopen it
    assert [d["event"] for d in json_lines(log_file.read_text())] == ["kept"]


def test_unwritable_file_log_is_reported_and_the_stream_keeps_working(
    out: io.StringIO, tmp_path: Path
) -> None:
    configure_logging(stream=out, file_path=tmp_path / "missing-dir" / "hookd.log")
    get_logger("hookd.x").info("still logging")
    problem, line = json_lines(out.getvalue())
    assert problem["event"] == "log.file_unavailable" and problem["level"] == "error"
    assert "No such file or directory" in problem["reason"]
    assert line["event"] == "still logging"


def test_concurrent_logging_keeps_lines_whole(out: io.StringIO, tmp_path: Path) -> None:
    log_file = tmp_path / "hookd.log"
    configure_logging(stream=out, file_path=log_file, secrets=[SECRET])

    def work(n: int) -> None:
        log = get_logger(f"hookd.worker{n}")
        for i in range(200):
            log.info("template.fixed", image_id=i, worker=n, reason="x" * 300 + SECRET)
            logging.getLogger("urllib3").info("request %d %s", i, SECRET)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for text in (out.getvalue(), log_file.read_text()):
        assert len(json_lines(text)) == 8 * 200 * 2
        assert SECRET not in text
