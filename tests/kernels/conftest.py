"""Fixtures: real Debian kernels (session-scoped; skipped on a laptop without apt or the Debian
mirror, a failure in CI — see ``ci.py``)."""

from __future__ import annotations

import pytest

from hookd.testing.debian_kernel import DebianKernel, KernelUnavailable, fetch_debian_kernel

from .ci import unavailable


def _fetch(package: str) -> DebianKernel:
    try:
        return fetch_debian_kernel(package=package)
    except KernelUnavailable as error:
        unavailable(f"no Debian kernel ({package}): {error.reason}")


@pytest.fixture(scope="session")
def debian_cloud_kernel() -> DebianKernel:
    """linux-image-cloud-amd64: lz4 payload, EXT4_FS=y, virtio/ISO/CD drivers as modules."""
    return _fetch("linux-image-cloud-amd64")


@pytest.fixture(scope="session")
def debian_amd64_kernel() -> DebianKernel:
    """linux-image-amd64: xz payload, EXT4_FS=m as well."""
    return _fetch("linux-image-amd64")
