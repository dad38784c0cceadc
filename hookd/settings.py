"""From configuration to the values the pure core and the OCI resolver take."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from handlers import cmdline
from handlers.model import PlannerSettings
from hookd.config import Config, read_text_file

if TYPE_CHECKING:
    from collections.abc import Callable

    from hookd.client import OneClient
    from hookd.oci import RegistrySettings
    from hookd.oci_facts import OciResolver
    from hookd.world import WorldCache


def one_client(config: Config, session: str | None = None,
               observer: Callable[[str, float, bool], None] | None = None) -> OneClient:
    """The XML-RPC client as ``one:`` configures it (every command that talks to oned uses
    the same timeouts and TLS settings); the session's password is never logged."""
    from hookd.client import ClientOptions, OneClient
    from hookd.config import read_session
    from hookd.logs import register_secret

    session = read_session(config.auth_file) if session is None else session
    if ":" in session:
        register_secret(session.split(":", 1)[1])
    one = config.one
    options = ClientOptions(connect_timeout=one.connect_timeout, read_timeout=one.timeout,
                            tls_verify=one.tls_verify, page_size=one.page_size)
    return OneClient(config.xmlrpc, session, options, observer=observer)


def planner_settings(config: Config) -> PlannerSettings:
    hv, scope, script, kcmd = (config.hypervisors, config.scope, config.start_script,
                               config.kernel_cmdline)
    return PlannerSettings(
        prefer=hv.prefer,
        pin=hv.pin,
        retarget=hv.retarget,
        datastore_overrides=hv.datastores,
        cluster_overrides=hv.clusters,
        scope_datastores=frozenset(scope.datastores),
        kvm_cmdline=tuple(cmdline.split(kcmd.kvm)),
        firecracker_cmdline=tuple(cmdline.split(kcmd.firecracker)),
        start_script=script.enabled,
        start_script_policy=script.policy,
        opt_attribute=scope.opt_attribute.upper(),
    )


def registry_settings(config: Config) -> RegistrySettings:
    from hookd.logs import register_secret
    from hookd.oci import Credentials, RegistrySettings

    reg = config.registries
    credentials: dict[str, Credentials] = {}
    for host, spec in reg.credentials.items():
        # Checked readable and non-empty when the configuration was loaded.
        name = f"registries.credentials.{host}.password_file"
        password = read_text_file(Path(spec["password_file"]), name).strip()
        register_secret(password)
        credentials[str(host)] = Credentials(username=spec["username"], password=password)
    return RegistrySettings(
        platform=reg.platform,
        read_timeout=reg.timeout,
        request_deadline=max(reg.timeout * 3, 30.0),
        verify_tls=reg.ca_bundle or True,
        plain_http_registries=frozenset(reg.insecure),
        mirrors=reg.mirrors,
        credentials=credentials,
        cache_dir=reg.cache_dir,
        engine_socket=reg.docker_socket,
    )


def oci_resolver(config: Config, world: WorldCache) -> OciResolver | None:
    """The START_SCRIPT source for Docker images, or None when start scripts are off."""
    script = config.start_script
    if not script.enabled:
        return None
    from handlers.start_script import StartScriptOptions
    from hookd.oci import RegistryClient
    from hookd.oci_facts import OciResolver

    options = StartScriptOptions(name=script.service_name, context_env=script.context_env)
    return OciResolver(RegistryClient(registry_settings(config)), options,
                       fallback=script.fallback, version=lambda: world.version)
