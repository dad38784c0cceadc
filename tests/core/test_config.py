from __future__ import annotations

from pathlib import Path

import pytest

from hookd.config import ConfigError, Environment, load, read_session


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hookd.conf"
    path.write_text(text)
    return path


def env(tmp_path: Path, **values: str) -> Environment:
    return Environment(env=values, home=tmp_path / "home", oneadmin_home=tmp_path / "oneadmin")


def test_defaults_follow_opennebula_conventions(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, ""), env=env(tmp_path))
    assert cfg.xmlrpc == "http://localhost:2633/RPC2" and cfg.xmlrpc_origin == "default"
    assert cfg.zmq == "tcp://localhost:2101"
    assert cfg.auth_file is None
    assert cfg.reconcile.workers == 8
    assert cfg.hypervisors.prefer == ("lxc", "firecracker", "kvm")


def test_environment_then_files(tmp_path: Path) -> None:
    (tmp_path / "oneadmin" / ".one").mkdir(parents=True)
    (tmp_path / "oneadmin" / ".one" / "one_endpoint").write_text("http://fe:2633/RPC2\n")
    (tmp_path / "oneadmin" / ".one" / "one_auth").write_text("oneadmin:secret\n")
    cfg = load(write(tmp_path, ""), env=env(tmp_path))
    assert cfg.xmlrpc == "http://fe:2633/RPC2"
    assert cfg.auth_file == tmp_path / "oneadmin" / ".one" / "one_auth"
    (tmp_path / "home" / ".one").mkdir(parents=True)
    (tmp_path / "home" / ".one" / "one_endpoint").write_text("http://home:2633/RPC2")
    assert load(write(tmp_path, ""), env=env(tmp_path)).xmlrpc == "http://home:2633/RPC2"
    e = env(tmp_path, ONE_XMLRPC="http://env:2633/RPC2", ONE_AUTH="/x/auth",
            ONE_ZMQ="tcp://env:2101")
    cfg = load(write(tmp_path, ""), env=e)
    assert (cfg.xmlrpc, str(cfg.auth_file), cfg.zmq) == ("http://env:2633/RPC2", "/x/auth",
                                                         "tcp://env:2101")
    cfg = load(write(tmp_path, "one:\n  xmlrpc: https://file:2633/RPC2\n"), env=e)
    assert cfg.xmlrpc == "https://file:2633/RPC2" and cfg.xmlrpc_origin == "hookd.conf one.xmlrpc"


@pytest.mark.parametrize(("text", "message"), [
    ("bogus: {}\n", "unknown section 'bogus'"),
    ("one:\n  xmlrcp: http://x\n", "unknown key one.xmlrcp"),
    ("one:\n  timeout: fast\n", "one.timeout in"),
    ("reconcile:\n  workers: 0\n", "reconcile.workers in"),
    ("reconcile:\n  workers: true\n", "reconcile.workers in"),
    # An integer beyond any float: the range error, not an OverflowError.
    ("reconcile:\n  backoff_max: 1" + "0" * 400 + "\n", "reconcile.backoff_max in"),
    ("one:\n  xmlrpc: localhost:2633\n", "must start with http://"),
    ("hypervisors:\n  prefer: [kvm, xen]\n", "unknown hypervisor 'xen'"),
    ("start_script:\n  policy: replace\n", "must be one of keep, append"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("one: [\n", "not valid YAML"),
])
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load(path, env=env(tmp_path))
    assert message in info.value.reason
    if "YAML" not in message and "top level" not in message:
        assert str(path) in info.value.reason


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.conf", env=env(tmp_path))


def test_read_session(tmp_path: Path) -> None:
    auth = tmp_path / "one_auth"
    auth.write_text("oneadmin:pass:with:colons\n")
    assert read_session(auth) == "oneadmin:pass:with:colons"
    auth.write_text("nocolon")
    with pytest.raises(ConfigError, match="user:password"):
        read_session(auth)
    with pytest.raises(ConfigError, match="does not exist"):
        read_session(tmp_path / "missing")
    with pytest.raises(ConfigError, match="no ONE_AUTH file"):
        read_session(None)
