"""Seed scenarios: a front-end as an operator would have set it up.

Bootstrap objects are those oned creates on first start (``DatastorePool``,
``ClusterPool``, ``MarketPlacePool`` constructors, release-6.8.3 / release-7.4.0): cluster 0
``default``, datastores 0 ``system`` / 1 ``default`` / 2 ``files`` (fs + ssh; TM ``local`` in
7.4, ``DatastorePool::DatastorePool`` at release-7.4.0), the default
marketplaces. User-created clusters, datastores and marketplaces start at ID 100
(``set_lastOID(99)``), so the Docker registry marketplace an operator adds is ID 100.

6.8 flavour
    clusters 100 ``kvm`` (kvm-host-01), 101 ``firecracker`` (fc-host-01), 102 ``lxc``
    (lxc-host-01), 103 ``vcenter`` (vcenter-host-01), 104 ``mixed`` (kvm-host-02,
    lxc-host-02, fc-host-02); datastore 100 ``kernels`` (FILE_DS in clusters 100-104), then
    per cluster ``<name>-images`` (IMAGE_DS) and ``<name>-system`` (SYSTEM_DS); KERNEL
    images ``kernel-kvm`` and ``kernel-firecracker`` READY in ``kernels``; marketplaces
    0 OpenNebula Public, 1 Linux Containers, 2 TurnKey Linux Containers, 3 DockerHub (all
    enabled) and 100 Local Registry (docker_registry); DockerHub apps 0-4 (nginx, alpine,
    redis, postgres, httpd), then Local Registry, TurnKey and Linux Containers apps.
7.4 flavour
    clusters 100 ``kvm``, 101 ``lxc``, 102 ``mixed``; marketplaces 0 and 1 only; Linux
    Containers apps with the 7.x names and VM template; kernel ``kernel-kvm``.

App attributes follow the stock monitor drivers (``src/market_mad/remotes/dockerhub``,
``docker_registry``, ``turnkeylinux``, ``linuxcontainers`` and ``common/docker.rb`` /
``common/lxd.rb``); nginx/alpine/redis carry the recorded MD5, REGTIME and DESCRIPTION.
"""

from __future__ import annotations

import calendar
import hashlib
from dataclasses import dataclass, field

from hookd.testing import builders
from hookd.testing.objects import Image, ImageState, ImageType, MarketPlaceApp, Permissions
from hookd.testing.template_lang import SingleAttribute, Template
from hookd.testing.world import World

# common/docker.rb DockerMarket.template (6.2-6.8), stray quote included.
DOCKER_VMTEMPLATE = (
    'CPU = "1"\nMEMORY = "768"\nGRAPHICS = [\n    LISTEN  ="0.0.0.0",\n    TYPE  ="vnc"\n]\n'
    'CONTEXT = [\n    NETWORK  ="YES",\n    SSH_PUBLIC_KEY  ="$USER[SSH_PUBLIC_KEY]",\n'
    '    SET_HOSTNAME  ="$NAME"\n]\nOS = [\n    KERNEL_CMD="console=ttyS0 reboot=k panic=1"\n'
    ']"\n'
)
DOCKER_APPTEMPLATE = 'DRIVER="raw"\nDEV_PREFIX="vd"\n'
LXD_APPTEMPLATE = 'DRIVER="raw"\n'

# common/lxd.rb LXDMarket.template (6.x) with cpu 1, vcpu 2, memory 768, privileged.
LXD_VMTEMPLATE_6 = (
    'SCHED_REQUIREMENTS = "HYPERVISOR=\\"lx*\\""\nCPU = "1"\nVCPU = "2"\nMEMORY = "768"\n'
    'LXD_SECURITY_PRIVILEGED = "true"\nLXC_UNPRIVILEGED = "false"\nGRAPHICS = [\n'
    '    LISTEN  ="0.0.0.0",\n    TYPE  ="vnc"\n]\nCONTEXT = [\n    NETWORK  ="YES",\n'
    '    SSH_PUBLIC_KEY  ="$USER[SSH_PUBLIC_KEY]",\n    SET_HOSTNAME  ="$NAME"\n]"\n'
)


def lxd_vmtemplate_7(arch: str = "x86_64") -> str:
    """``linuxcontainers/lxd.rb`` LXDMarket.template at release-7.4.0."""
    return (
        f'SCHED_REQUIREMENTS = "HYPERVISOR=lxc & ARCH={arch}"\nCPU = "1"\nVCPU = "2"\n'
        'MEMORY = "768"\nLXC_UNPRIVILEGED = "false"\nGRAPHICS = [\n    LISTEN  ="0.0.0.0",\n'
        '    TYPE  ="vnc"\n]\nCONTEXT = [\n    NETWORK  ="YES",\n'
        '    SSH_PUBLIC_KEY  ="$USER[SSH_PUBLIC_KEY]",\n    SET_HOSTNAME  ="$NAME"\n]\n'
        'RAW = [\n    TYPE="lxc",\n    DATA="lxc.apparmor.profile=unconfined"\n]\n'
        'HYPERVISOR = "lxc"\n'
    )


DOCKERHUB_APPS = (
    # name, regtime, md5, description (nginx/alpine/redis as recorded from oned 6.8.3)
    ("nginx", 1718150400, "30c18c5c8651013974c818618f0e9722", "Official build of Nginx."),
    ("alpine", 1718841600, "7c931855e48d542c2ece58ead0aa0b38",
     "A minimal Docker image based on Alpine Linux with a complete package index and only 5 "
     "MB in size!"),
    ("redis", 1718668800, "ee3d96e5d6eaf7421e50c1cbaff7c470",
     "Redis is the world\u2019s fastest data platform for caching, vector search, and NoSQL "
     "databases."),
    ("postgres", 1718755200, "",
     "The PostgreSQL object-relational database system provides reliability and data "
     "integrity."),
    ("httpd", 1718236800, "", "The Apache HTTP Server Project"),
)
REGISTRY_APPS = ("busybox", "hookd-demo-web")
TURNKEY_FILES = (
    ("debian-11-turnkey-wordpress_17.1-1_amd64.tar.gz", "2023-02-14"),
    ("debian-12-turnkey-nextcloud_18.0-1_amd64.tar.gz", "2024-01-09"),
    ("debian-12-turnkey-gitea_18.0-1_amd64.tar.gz", "2023-12-21"),
)
LXC_ENDPOINT = "https://images.linuxcontainers.org/"
LXC_IMAGES = (
    ("alpine", "3.19", "20240612_13:00"),
    ("ubuntu", "jammy", "20240612_07:42"),
    ("debian", "bookworm", "20240612_05:24"),
    ("rockylinux", "9", "20240611_02:06"),
)


@dataclass
class SeedInfo:
    """IDs of the seeded objects, by name."""

    clusters: dict[str, int] = field(default_factory=dict)
    datastores: dict[str, int] = field(default_factory=dict)
    hosts: dict[str, int] = field(default_factory=dict)
    markets: dict[str, int] = field(default_factory=dict)
    apps: dict[str, int] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def bootstrap(world: World, oneadmin_digest: str, info: SeedInfo) -> None:
    """Objects every oned has after its first start."""
    builders.add_user(world, "oneadmin", oneadmin_digest)
    builders.add_cluster(world, "default", oid=0)
    info.clusters["default"] = 0
    for oid, name, kind in ((0, "system", "SYSTEM_DS"), (1, "default", "IMAGE_DS"),
                            (2, "files", "FILE_DS")):
        builders.add_datastore(world, name, kind, ds_mad="fs",
                               tm_mad=world.flavour.bootstrap_tm_mad, oid=oid)
        info.datastores[name] = oid
    world.clusters.reserve_system_ids()
    world.datastores.reserve_system_ids()


MARKET_DESCRIPTIONS = {
    "one": "OpenNebula Systems MarketPlace",
    "linuxcontainers": "MarketPlace for the public image server fo LXC & LXD hosted at "
                       "linuxcontainers.org",
    "turnkeylinux": "TurnKey linux is a free software repository based on Debian images "
                    "hosted at turnkeylinux.org",
    "dockerhub": "DockerHub is the world's largest library and  community for container "
                 "images hosted at hub.docker.com/",
}


def _default_markets(world: World, info: SeedInfo, *, enabled: bool) -> None:
    """MarketPlacePool's bootstrap marketplaces (all enabled when ``enabled``)."""
    specs = [(0, "OpenNebula Public", "one"), (1, "Linux Containers", "linuxcontainers")]
    if world.flavour.major < 7:
        specs += [(2, "TurnKey Linux Containers", "turnkeylinux"), (3, "DockerHub", "dockerhub")]
    for oid, name, mad in specs:
        state = 0 if enabled or oid == 0 else 1
        builders.add_market(world, name, mad, oid=oid, state=state,
                            description=MARKET_DESCRIPTIONS[mad])
        info.markets[name] = oid
    world.markets.reserve_system_ids()


def _add_markets(world: World, info: SeedInfo, registry: str) -> None:
    _default_markets(world, info, enabled=True)
    if world.flavour.major < 7:
        base_url = registry if registry.startswith(("http://", "https://")) else f"http://{registry}"
        market = builders.add_market(
            world, "Local Registry", "docker_registry",
            description="Docker registry on the front-end",
            template=f'BASE_URL="{base_url}"\n',
        )
        info.markets["Local Registry"] = market.oid


def _add_apps(world: World, info: SeedInfo, registry: str) -> None:
    if world.flavour.major < 7:
        dockerhub = info.markets["DockerHub"]
        for name, regtime, md5, description in DOCKERHUB_APPS:
            app = builders.add_app(
                world, dockerhub, name=name,
                source=f"docker://{name}?size=2048&filesystem=ext4&format=raw",
                md5=md5 or _md5(f"dockerhub {name} {regtime}"), size_mb=2048, regtime=regtime,
                description=description, publisher="hub.docker.com",
                link=f"https://hub.docker.com/_/{name}", apptemplate=DOCKER_APPTEMPLATE,
                vmtemplate=DOCKER_VMTEMPLATE,
            )
            info.apps[f"dockerhub/{name}"] = app.oid
        base_url = registry if registry.startswith(("http://", "https://")) else f"http://{registry}"
        url = base_url.rstrip("/") + "/"
        host = url.replace("http://", "")
        for name in REGISTRY_APPS:
            app = builders.add_app(
                world, info.markets["Local Registry"], name=name,
                source=f"docker://{host}{name}?size=2048&filesystem=ext4&format=raw",
                md5=_md5(f"docker_registry {name}"), size_mb=2048, regtime=0, description="",
                publisher="hub.docker.com", link=f"{url}/v2/{name}/tags/list",
                apptemplate=DOCKER_APPTEMPLATE, vmtemplate=DOCKER_VMTEMPLATE,
            )
            info.apps[f"registry/{name}"] = app.oid
        for filename, date in TURNKEY_FILES:
            parts = filename.split("-")
            year, month, day = (int(x) for x in date.split("-"))
            regtime = _epoch(year, month, day)
            app = builders.add_app(
                world, info.markets["TurnKey Linux Containers"],
                name=f"{parts[3].strip()} - LXD",
                source="lxd://http://mirror.turnkeylinux.org//turnkeylinux/images/proxmox//"
                f"{filename}?size=5120&filesystem=ext4&format=raw",
                md5=_md5(f"turnkeylinux {filename} {regtime}"), size_mb=5120, regtime=regtime,
                description=f"Based on {parts[0]}-{parts[1]}", publisher="turnkeylinux.org",
                link="http://mirror.turnkeylinux.org//turnkeylinux/images/proxmox/",
                apptemplate=LXD_APPTEMPLATE, vmtemplate=LXD_VMTEMPLATE_6,
            )
            info.apps[f"turnkey/{parts[3]}"] = app.oid
    for distro, version, stamp in LXC_IMAGES:
        app = add_linuxcontainers_app(world, info.markets["Linux Containers"], distro, version,
                                      stamp)
        info.apps[f"lxc/{distro}_{version}"] = app.oid


def add_linuxcontainers_app(
    world: World, market_id: int, distro: str, version: str, stamp: str, *,
    endpoint: str = LXC_ENDPOINT, md5: str | None = None,
) -> MarketPlaceApp:
    """One ``amd64``/``default`` image as the ``linuxcontainers`` monitor driver lists it.

    ``fetch_appliances`` (src/market_mad/remotes/linuxcontainers/monitor, release-6.8.3 and
    release-7.4.0): SOURCE ``lxd://<endpoint><path>?size=2048&filesystem=ext4&format=raw``,
    REGTIME from the version stamp (``%Y%m%d_%H:%M``, UTC), DESCRIPTION ``Downloaded from
    <endpoint>``. 7.x names the app ``<distro>_<version>``, adds ARCHITECTURE and
    HYPERVISOR and its own VM template; 6.x appends `` - LXD``. The driver's MD5 hashes its
    option hash, so it is arbitrary here unless ``md5`` is given.
    """
    path = f"images/{distro}/{version}/amd64/default/{stamp}/rootfs.tar.xz"
    regtime = _epoch(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]),
                     int(stamp[9:11]), int(stamp[12:14]))
    major7 = world.flavour.major >= 7
    return builders.add_app(
        world, market_id,
        name=f"{distro}_{version}" if major7 else f"{distro}_{version} - LXD",
        source=f"lxd://{endpoint}{path}?size=2048&filesystem=ext4&format=raw",
        md5=md5 if md5 is not None else _md5(f"linuxcontainers {stamp}"), size_mb=2048,
        regtime=regtime, description=f"Downloaded from {endpoint}", publisher=endpoint,
        link=endpoint + path, apptemplate=LXD_APPTEMPLATE,
        vmtemplate=lxd_vmtemplate_7() if major7 else LXD_VMTEMPLATE_6,
        extra={"ARCHITECTURE": "x86_64", "HYPERVISOR": "lxc"} if major7 else None,
    )


def _epoch(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> int:
    return calendar.timegm((year, month, day, hour, minute, 0, 0, 0, 0))


def _add_kernel(world: World, info: SeedInfo, name: str, filename: str, ds_id: int) -> None:
    ds = world.datastores.get(ds_id)
    if ds is None:
        raise ValueError(f"datastore {ds_id} does not exist")
    tmpl = Template(True, [SingleAttribute("DESCRIPTION", f"Guest kernel {filename}",
                                           normalized=True)])
    now = world.now()
    oid = world.images.next_oid()
    image = Image(
        oid=oid, name=name, template=tmpl, perms=Permissions.of("110000000"),
        type=ImageType.KERNEL, regtime=now, modtime=now,
        source=f"{ds.base_path}/{_md5(f'{now}:{oid}')}", path=f"/var/lib/one/kernels/{filename}",
        format="raw", size_mb=12, state=ImageState.READY, prev_state=ImageState.READY,
        ds_id=ds_id, ds_name=ds.name,
    )
    world.images.add(image)
    ds.images.add(oid)
    ds.invalidate()
    info.images[name] = oid


def seed_world(world: World, oneadmin_digest: str, *, registry: str, populate: bool) -> SeedInfo:
    """Bootstrap objects always; the operator's setup when ``populate``."""
    info = SeedInfo()
    bootstrap(world, oneadmin_digest, info)
    if not populate:
        _default_markets(world, info, enabled=False)
        return info
    if world.flavour.major < 7:
        layout = [("kvm", [("kvm-host-01", "kvm")]),
                  ("firecracker", [("fc-host-01", "firecracker")]),
                  ("lxc", [("lxc-host-01", "lxc")]),
                  ("vcenter", [("vcenter-host-01", "vcenter")]),
                  ("mixed", [("kvm-host-02", "kvm"), ("lxc-host-02", "lxc"),
                             ("fc-host-02", "firecracker")])]
        short = {"firecracker": "fc"}
    else:
        layout = [("kvm", [("kvm-host-01", "kvm")]), ("lxc", [("lxc-host-01", "lxc")]),
                  ("mixed", [("kvm-host-02", "kvm"), ("lxc-host-02", "lxc")])]
        short = {}
    cluster_ids = []
    for name, _hosts in layout:
        cluster = builders.add_cluster(world, name)
        info.clusters[name] = cluster.oid
        cluster_ids.append(cluster.oid)
    lab_dirs = 'SAFE_DIRS="/"\nRESTRICTED_DIRS="/"\n'
    kernels = builders.add_datastore(world, "kernels", "FILE_DS", cluster_ids=tuple(cluster_ids),
                                     template=lab_dirs)
    info.datastores["kernels"] = kernels.oid
    for (name, _hosts), cid in zip(layout, cluster_ids, strict=True):
        prefix = short.get(name, name)
        images = builders.add_datastore(world, f"{prefix}-images", "IMAGE_DS",
                                        cluster_ids=(cid,), template=lab_dirs)
        system = builders.add_datastore(world, f"{prefix}-system", "SYSTEM_DS",
                                        tm_mad="shared", cluster_ids=(cid,))
        info.datastores[images.name] = images.oid
        info.datastores[system.name] = system.oid
    for (_name, hosts), cid in zip(layout, cluster_ids, strict=True):
        for host_name, vm_mad in hosts:
            info.hosts[host_name] = builders.add_host(world, host_name, vm_mad, cid).oid
    _add_kernel(world, info, "kernel-kvm", "vmlinuz-pvh", kernels.oid)
    if world.flavour.major < 7:
        _add_kernel(world, info, "kernel-firecracker", "vmlinux-5.10", kernels.oid)
    _add_markets(world, info, registry)
    _add_apps(world, info, registry)
    return info
