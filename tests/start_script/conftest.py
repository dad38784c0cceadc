"""Fixtures: one base root per session, a hard-linked copy of it per test."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import Root, build_base_root


@pytest.fixture(scope="session")
def base_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("start-script-base") / "root"
    path.mkdir()
    build_base_root(path)
    yield path
    # Each Root unmounts its /proc when it closes; a test killed half-way may not have.
    # Leave no mount behind under this session's temporary directory.
    basetemp = str(tmp_path_factory.getbasetemp())
    mounts = Path("/proc/self/mounts").read_text().splitlines()
    for target in sorted({line.split()[1] for line in mounts}, reverse=True):
        if target.startswith(basetemp + "/"):
            subprocess.run(["umount", "-l", target], check=False)


@pytest.fixture
def root(base_root: Path, tmp_path: Path) -> Iterator[Root]:
    # The copy must live on the base's file system (hard links): both are under basetemp.
    the_root = Root(base_root, tmp_path / "root")
    try:
        yield the_root
    finally:
        the_root.close()
