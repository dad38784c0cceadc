"""Is this image a container image, and from where? Facts, not names.

A container image is one whose ``FROM_APP`` leads to an app of a container marketplace
(MARKET_MAD dockerhub, docker_registry, turnkeylinux, linuxcontainers) or whose PATH uses
``docker://`` or ``lxd://`` (src/datastore_mad/remotes/downloader.sh routes those schemes to
docker_downloader.sh and lxd_downloader.sh). An operator can force the answer per image with
the opt attribute (``HOOKD_MANAGE="no"`` or ``"yes"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from handlers.facts import TYPE_DATABLOCK, TYPE_OS, ImageFacts
from handlers.model import PlannerSettings, World

Origin = Literal["dockerhub", "docker_registry", "turnkeylinux", "linuxcontainers", "docker",
                 "lxd", "opt-in"]
CONTAINER_MARKETS = frozenset({"dockerhub", "docker_registry", "turnkeylinux", "linuxcontainers"})
# PATH schemes of container images (lower-cased, stripped PATH).
DOCKER_SCHEMES = ("docker://", "dockerfile://")
LXD_SCHEMES = ("lxd://",)
# Images whose app needs its CMD/Entrypoint restored (a Docker image).
DOCKER_ORIGINS = frozenset({"dockerhub", "docker_registry", "docker"})


@dataclass(frozen=True, slots=True)
class Classification:
    container: bool
    origin: Origin | None
    reason: str
    opted_out: bool = False

    @property
    def docker(self) -> bool:
        return self.origin in DOCKER_ORIGINS


def _opt(image: ImageFacts, settings: PlannerSettings) -> bool | None:
    value = (image.template.get(settings.opt_attribute) or "").strip().lower()
    if value in ("no", "false", "off", "0", "skip"):
        return False
    if value in ("yes", "true", "on", "1"):
        return True
    return None


def classify(image: ImageFacts, world: World, settings: PlannerSettings) -> Classification:
    opt = _opt(image, settings)
    if opt is False:
        return Classification(False, None, f"opted out with {settings.opt_attribute}",
                              opted_out=True)
    if image.type not in (TYPE_OS, TYPE_DATABLOCK):
        return Classification(False, None, f"a {image.type_name} image is not a root filesystem")
    path = image.path.strip().lower()
    if world.app is not None and world.market is not None:
        mad = world.market.market_mad
        if mad in CONTAINER_MARKETS:
            origin: Origin = mad  # type: ignore[assignment]
            return Classification(True, origin,
                                  f"imported from {world.market.name} ({mad}) app {world.app.id}")
    if path.startswith(DOCKER_SCHEMES):
        return Classification(True, "docker", "PATH is a docker:// reference")
    if path.startswith(LXD_SCHEMES):
        return Classification(True, "lxd", "PATH is an lxd:// rootfs")
    if opt is True:
        return Classification(True, "opt-in", f"opted in with {settings.opt_attribute}")
    return Classification(False, None, "not a container image")
