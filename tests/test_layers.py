"""The layers, enforced: the pure core imports nothing above it and does no I/O.

``handlers/`` is the functional core (facts, the template model, the plan, the handlers, the
planner, the START_SCRIPT builder): it may import the standard library's pure parts and
itself, never ``hookd`` (the imperative shell), never a library that talks to the outside
(lxml, ZeroMQ, HTTP, logging frameworks) and never a clock, thread or process. The
simulator (``hookd.testing``'s oned) imports nothing from the daemon, so it cannot agree with
hookd's bugs. Every import statement counts, also one inside a function.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# What the core may import: itself and the pure parts of the standard library.
CORE_ALLOWED = frozenset({
    "__future__", "handlers", "dataclasses", "collections", "typing", "re", "json", "base64",
    "binascii", "hashlib", "fnmatch", "functools", "itertools", "enum", "zlib", "gzip",
    "importlib", "string", "math", "textwrap", "shlex",
})
# The simulator's own modules that may use the daemon's code: the boot harness and kernel
# fetching are test tools around hookd, not the simulated oned.
SIMULATOR_EXEMPT = frozenset({"boot.py", "boot_guest.py", "debian_kernel.py", "rootfs.py",
                              "daemon_config.py", "__main__.py", "pytest_plugin.py"})


def imports(source: str) -> Iterator[tuple[int, str]]:
    """(line, dotted module) of every import in ``source``; relative ones as '.name'."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            yield node.lineno, "." * node.level + (node.module or "")


def core_violations(files: Iterable[Path]) -> list[str]:
    out = []
    for path in files:
        for line, module in imports(path.read_text()):
            root = module.split(".")[0]
            if module.startswith(".") or root not in CORE_ALLOWED:
                out.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
                           f":{line} imports {module}")
    return out


def simulator_violations(files: Iterable[Path]) -> list[str]:
    out = []
    for path in files:
        for line, module in imports(path.read_text()):
            if (module == "hookd" or module.startswith("hookd.")) and not module.startswith(
                    "hookd.testing"):
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            if module.split(".")[0] == "handlers":
                out.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return out


def test_the_core_imports_nothing_above_it() -> None:
    files = sorted((REPO / "handlers").rglob("*.py"))
    assert files
    assert core_violations(files) == []


def test_the_simulator_imports_nothing_from_the_daemon() -> None:
    files = sorted(p for p in (REPO / "hookd" / "testing").rglob("*.py")
                   if p.name not in SIMULATOR_EXEMPT)
    assert files
    assert simulator_violations(files) == []


@pytest.mark.parametrize(("line", "caught"), [
    ("from hookd.client import OneClient", True),
    ("import lxml.etree", True),
    ("    import time  # a clock, inside a function", True),
    ("from . import sibling", True),
    ("from handlers.plan import ImagePlan", False),
    ("import json", False),
])
def test_the_contract_fails_on_a_violating_import(tmp_path: Path, line: str,
                                                 caught: bool) -> None:
    module = tmp_path / "bad.py"
    body = line if not line.startswith(" ") else f"def f() -> None:\n{line}\n"
    module.write_text(body + "\n")
    assert bool(core_violations([module])) is caught


def test_the_core_imports_without_the_shell_or_lxml() -> None:
    import subprocess
    import sys

    code = ("import sys\n"
            "for name in ('hookd', 'lxml', 'zmq', 'structlog', 'yaml'):\n"
            "    sys.modules[name] = None\n"
            "import pkgutil, importlib, handlers\n"
            "for info in pkgutil.walk_packages(handlers.__path__, 'handlers.'):\n"
            "    importlib.import_module(info.name)\n"
            "print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
