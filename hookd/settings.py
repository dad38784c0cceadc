"""From configuration to the values the pure core and the OCI resolver take."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from handlers import cmdline
from handlers.model import PlannerSettings
from hookd.config import Config, ConfigError

if TYPE_CHECKING:
    from hookd.oci import RegistrySettings
    from hookd.oci_facts import OciResolver
    from hookd.world import WorldCache


def planner_settings(config: Config) -> PlannerSettings:
    hv = config.sections["hypervisors"]
    scope = config.sections["scope"]
    script = config.sections["start_script"]
    kcmd = config.sections["kernel_cmdline"]
    return PlannerSettings(
        prefer=tuple(str(h) for h in hv["prefer"]),
        pin=bool(hv["pin"]),
        datastore_overrides={int(k): str(v) for k, v in hv["datastores"].items()},
        cluster_overrides={int(k): str(v) for k, v in hv["clusters"].items()},
        scope_datastores=frozenset(int(d) for d in scope["datastores"]),
        kvm_cmdline=tuple(cmdline.split(kcmd["kvm"])),
        firecracker_cmdline=tuple(cmdline.split(kcmd["firecracker"])),
        start_script=bool(script["enabled"]),
        start_script_policy=script["policy"],
        opt_attribute=str(scope["opt_attribute"]).upper(),
    )


def registry_settings(config: Config) -> RegistrySettings:
    from hookd.logs import register_secret
    from hookd.oci import Credentials, RegistrySettings

    reg = config.sections["registries"]
    credentials: dict[str, Credentials] = {}
    for host, spec in reg["credentials"].items():
        password_file = spec.get("password_file")
        password = None
        if password_file:
            try:
                password = Path(password_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"registries.credentials.{host}.password_file "
                                  f"{password_file}: {exc.strerror}") from None
            register_secret(password)
        credentials[str(host)] = Credentials(username=spec.get("username"), password=password)
    timeout = float(reg["timeout"])
    return RegistrySettings(
        platform=str(reg["platform"]),
        read_timeout=timeout,
        request_deadline=max(timeout * 3, 30.0),
        verify_tls=reg["ca_bundle"] or True,
        plain_http_registries=frozenset(str(h) for h in reg["insecure"]),
        mirrors={str(k): [str(m) for m in v] for k, v in reg["mirrors"].items()},
        credentials=credentials,
        cache_dir=reg["cache_dir"],
        engine_socket=reg["docker_socket"],
    )


def oci_resolver(config: Config, world: WorldCache) -> OciResolver | None:
    """The START_SCRIPT source for Docker images, or None when start scripts are off."""
    script = config.sections["start_script"]
    if not script["enabled"]:
        return None
    from handlers.start_script import StartScriptOptions
    from hookd.oci import RegistryClient
    from hookd.oci_facts import OciResolver

    options = StartScriptOptions(name=str(script["service_name"]),
                                 context_env=bool(script["context_env"]))
    return OciResolver(RegistryClient(registry_settings(config)), options,
                       fallback=bool(script["fallback"]), version=lambda: world.version)
