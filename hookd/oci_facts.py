"""From a Docker image in OpenNebula to the START_SCRIPT facts the planner needs.

Where the image config comes from: the image's PATH (the marketplace app's SOURCE,
``docker://nginx?size=...``) plus ``URL_ARGS`` (``tag=...``), read through the registry
client (:mod:`hookd.oci`, the only code that talks to registries). The script itself is
built by the pure :mod:`handlers.start_script`.

Failure policy: a registry that cannot be reached is *transient* — the reconciler retries
with backoff. An image once fixed from its real config (``HOOKD_OCI_CONFIG`` on the image
holds the config's digest) is never downgraded: its config comes from the on-disk cache,
and if the cache lacks it the START_SCRIPT already installed stays as it is
(:class:`~handlers.model.OciUnavailable`). Only an image never fixed from a config gets, on
the final attempt or when the image or tag is gone from the registry, a script that starts
``/one_entrypoint.sh`` (written into the image by docker_downloader.sh since OpenNebula 6.2,
commit a9cdd05cd5) detached, if enabled: the fallback runs the app as root in ``/``. A
config hookd refuses to turn into a script is a permanent problem shown in the status.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from handlers.errors import PermanentError, TransientError
from handlers.facts import ImageFacts
from handlers.model import OciFacts, OciProblem, OciProcessFacts, OciUnavailable
from handlers.plan import OCI_DIGEST_ATTR, SOURCE_ATTR
from handlers.start_script import (
    StartScriptError,
    StartScriptOptions,
    build_fallback_script,
    build_start_script,
    parse_oci_config,
)
from hookd.logs import get_logger
from hookd.oci import ImageNotFound, ImageReference, RegistryClient
from hookd.oci.imageconfig import FetchedConfig

log = get_logger(__name__)

FALLBACK_SOURCE = "one_entrypoint"
_SCRIPT_CACHE = 1024  # START_SCRIPTs kept, by config digest


class OciResolver:
    """Callable ``(image, final) -> OciFacts``; raises TransientError to ask for a retry."""

    def __init__(
        self,
        registry: RegistryClient,
        options: StartScriptOptions,
        *,
        fallback: bool,
        version: Callable[[], tuple[int, int, int]],
    ) -> None:
        self._registry = registry
        self._options = options
        self._fallback = fallback
        self._version = version
        self._scripts: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, image: ImageFacts, final: bool) -> OciFacts:
        try:
            ref = ImageReference.from_one_path(image.path, image.template.get("URL_ARGS"))
        except PermanentError as exc:
            return OciProblem(f"cannot read the image reference from PATH: {exc.reason}")
        # The config the image was fixed from before (its digest is on the image): an outage
        # or an image gone from the registry never downgrades such an image to the fallback.
        known = (image.template.get(OCI_DIGEST_ATTR) or "").strip()
        try:
            fetched = self._registry.fetch_config(ref)
        except ImageNotFound as exc:
            why = f"{ref} is not in the registry: {exc.reason}"
            return self._known(image, ref, known, why) or self._fall_back(why)
        except TransientError as exc:
            why = f"registry unreachable for {ref}: {exc.reason}"
            kept = self._known(image, ref, known, why)
            if kept is not None and (final or isinstance(kept, OciProcessFacts)):
                return kept
            if not final:
                raise
            return self._fall_back(why)
        except PermanentError as exc:
            return OciProblem(f"image config of {ref} rejected: {exc.reason}")
        return self._facts(image, ref, fetched)

    def _known(self, image: ImageFacts, ref: ImageReference, known: str,
               why: str) -> OciFacts | None:
        """For an image fixed from a config before: that config from the on-disk cache, else
        an :class:`OciUnavailable` that keeps what the templates carry. None otherwise."""
        if not known:
            return None
        try:
            cached = self._registry.cached_config(known)
        except PermanentError:
            cached = None
        if cached is None:
            return OciUnavailable(f"{why}; the image config {known[:19]} it was fixed from is "
                                  f"not in the cache", known)
        log.info("oci.config_from_cache", image_id=image.id, reference=str(ref),
                 digest=known, because=why)
        previous = (image.template.get(SOURCE_ATTR) or "").strip()
        return self._facts(image, ref, cached, source=previous or None)

    def _facts(self, image: ImageFacts, ref: ImageReference, fetched: FetchedConfig,
               source: str | None = None) -> OciFacts:
        script = self._script_for(fetched.config_digest, fetched.config)
        if isinstance(script, OciProblem):
            return script
        # The status names where the config comes from, stably: a later read served by the
        # cache or a mirror is the same source (fetched.source says which, for the log).
        if source is None:
            engine = fetched.source.startswith("engine:")
            source = "docker-engine" if engine else f"registry:{ref.display_registry}"
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
            while len(self._scripts) > _SCRIPT_CACHE:
                self._scripts.popitem(last=False)
        return script

    def _fall_back(self, reason: str) -> OciFacts:
        """For an image never fixed from a config: start /one_entrypoint.sh (6.2+)."""
        if not self._fallback:
            return OciProblem(reason)
        if self._version() < (6, 2, 0):
            return OciProblem(f"{reason}; OpenNebula < 6.2 writes no /one_entrypoint.sh to "
                              f"fall back to")
        return OciProcessFacts(build_fallback_script(self._options), None, FALLBACK_SOURCE,
                               f"{reason}; the START_SCRIPT starts /one_entrypoint.sh instead")
