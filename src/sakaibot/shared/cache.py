"""The result cache shared by every front end, kept in Redis under its own cap.

Entries and their images live in the shared store, which evicts its own least
recently used entries beyond ``REDIS_CACHE_MAX_BYTES`` (never anything else: the
queues and the limits need Redis's memory more). The images a front end keeps
for ``/image resend`` stay on its own disk, under the local cache it wraps.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sakaibot.cache import CacheHit, CacheSummary, ResultCache, cache_key, new_entry
from sakaibot.commands import ImageRequest
from sakaibot.errors import StoreUnavailable
from sakaibot.generation import GeneratedImage
from sakaibot.models import ModelSpec
from sakaibot.shared.interfaces import SharedCacheStore
from sakaibot.store import CacheEntry

logger = logging.getLogger(__name__)


class SharedResultCache:
    """One result cache for several front ends: entries and their images on Redis.

    The images this front end keeps for ``/image resend`` stay on its own disk,
    trimmed by the local cache it wraps. A chat's upload references belong to
    one account, so they are not shared: a hit from another front end uploads.
    """

    def __init__(
        self,
        shared: SharedCacheStore,
        local: ResultCache,
        *,
        ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._shared = shared
        self._local = local
        self._ttl_s = ttl_s
        self._clock = clock

    @property
    def enabled(self) -> bool:
        return self._local.enabled

    async def lookup(self, model: ModelSpec, request: ImageRequest) -> CacheHit | None:
        if not self.enabled or request.options.fresh:
            return None
        try:
            found = await self._shared.cache_get(cache_key(model, request))
        except StoreUnavailable as exc:
            logger.warning("shared cache lookup failed: %s", exc)
            return None
        if found is None:
            return None
        entry_json, data = found
        entry = CacheEntry(**json.loads(entry_json))
        image = GeneratedImage(data, entry.mime_type, entry.image_ext, entry.width, entry.height)
        return CacheHit(entry=entry, image=image)

    async def remember(
        self,
        model: ModelSpec,
        request: ImageRequest,
        image: GeneratedImage,
        *,
        image_hash: str,
        prompt_used: str,
        enhancer: str,
    ) -> str | None:
        if not self.enabled:
            return None
        key = cache_key(model, request)
        entry = new_entry(key, model.name, image, image_hash, prompt_used, enhancer, self._clock())
        try:
            await self._shared.cache_put(key, json.dumps(vars(entry)), image.data, self._ttl_s)
        except StoreUnavailable as exc:
            logger.warning("could not keep a result in the shared cache: %s", exc)
            return None
        return key

    def note_upload(self, key: str) -> Callable[[str], None] | None:
        return None  # upload references are per account; see the class docstring

    async def trim(self, keep: str) -> None:
        await self._local.trim(keep)

    async def summary(self) -> CacheSummary:
        local = await self._local.summary()
        return CacheSummary(
            entries=await self._shared.cache_count(),
            size_bytes=local.size_bytes,
            max_bytes=local.max_bytes,
            hits=0,
            ttl_s=self._ttl_s,
        )

    async def clear(self) -> int:
        return await self._shared.cache_clear()
