"""From a Docker image in OpenNebula to the START_SCRIPT facts the planner needs.

Where the image config comes from: the image's PATH (the marketplace app's SOURCE,
``docker://nginx?size=...``) plus ``URL_ARGS`` (``tag=...``), read through the registry
client (:mod:`hookd.oci`, the only code that talks to registries). The script itself is
built by the pure :mod:`handlers.start_script`.

Failure policy (issue "Docker Hub images", Fallbacks): a registry that cannot be reached is
*transient* — the reconciler retries with backoff; on the final attempt, and when the image
or tag is gone from the registry, images imported by OpenNebula >= 6.2 get a script that
starts ``/one_entrypoint.sh`` (written into the image by docker_downloader.sh since 6.2,
commit a9cdd05cd5) detached, if enabled. A config hookd refuses to turn into a script is a
permanent problem shown in the image status.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from handlers.model import OciFacts, OciProblem, OciProcessFacts
from handlers.start_script import (
    StartScriptError,
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    parse_oci_config,
)
from hookd.errors import PermanentError, TransientError
from hookd.facts import ImageFacts
from hookd.logs import get_logger
from hookd.oci import ImageReference, NotFound, RegistryClient

log = get_logger(__name__)

FALLBACK_SOURCE = "one_entrypoint"


class OciResolver:
    """Callable ``(image, final) -> OciFacts``; raises TransientError to ask for a retry."""

    def __init__(
        self,
        registry: RegistryClient,
        options: StartScriptOptions,
        *,
        fallback: bool,
        version: Callable[[], tuple[int, int, int]],
        cache_size: int = 1024,
    ) -> None:
        self._registry = registry
        self._options = options
        self._fallback = fallback
        self._version = version
        self._scripts: OrderedDict[str, str] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def close(self) -> None:
        self._registry.close()

    def __call__(self, image: ImageFacts, final: bool) -> OciFacts:
        try:
            ref = ImageReference.from_one_path(image.path, image.template.get("URL_ARGS"))
        except PermanentError as exc:
            return OciProblem(f"cannot read the image reference from PATH: {exc.reason}")
        try:
            fetched = self._registry.fetch_config(ref)
        except NotFound as exc:
            return self._fall_back(image, f"{ref} is not in the registry: {exc.reason}",
                                   permanent=True)
        except TransientError as exc:
            if not final:
                raise
            return self._fall_back(image, f"registry unreachable for {ref}: {exc.reason}",
                                   permanent=False)
        except PermanentError as exc:
            return OciProblem(f"image config of {ref} rejected: {exc.reason}")
        script = self._script_for(fetched.config_digest, fetched.config)
        if isinstance(script, OciProblem):
            return script
        # The status names where the config comes from, stably: a later read served by the
        # cache or a mirror is the same source (fetched.source says which, for the log).
        if fetched.source.startswith("engine:"):
            source = "docker-engine"
        else:
            source = f"registry:{ref.display_registry}"
        log.debug("oci.config", image_id=image.id, reference=str(ref),
                  digest=fetched.config_digest, served_by=fetched.source)
        return OciProcessFacts(script, fetched.config_digest, source)

    def _script_for(self, digest: str, config: object) -> str | OciProblem:
        with self._lock:
            cached = self._scripts.get(digest)
            if cached is not None:
                self._scripts.move_to_end(digest)
                return cached
        try:
            script = build_start_script(parse_oci_config(config), options=self._options)
        except StartScriptError as exc:
            return OciProblem(f"image config {digest[:19]} cannot be started safely: "
                              f"{exc.reason}")
        with self._lock:
            self._scripts[digest] = script
            while len(self._scripts) > self._cache_size:
                self._scripts.popitem(last=False)
        return script

    def _fall_back(self, image: ImageFacts, reason: str, *, permanent: bool) -> OciFacts:
        if not self._fallback:
            return OciProblem(reason)
        if self._version() < (6, 2, 0):
            return OciProblem(f"{reason}; OpenNebula < 6.2 writes no /one_entrypoint.sh to "
                              f"fall back to")
        return OciProcessFacts(build_fallback_script(self._options), None, FALLBACK_SOURCE,
                               f"{reason}; the START_SCRIPT starts /one_entrypoint.sh instead")
