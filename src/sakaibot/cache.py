"""The result cache: the same request again is answered with the stored image.

Same model, made by the same worker (its URL and contract), same prompt after
normalising whitespace and case, same options that shape the image (and the
explicit seed, if given) → the stored image is sent without calling the LLM or
the worker. An image from one worker (say the development worker of a demo)
therefore never answers a request meant for another. ``--fresh`` skips it. Entries
live for ``CACHE_TTL_S``; the stored images are capped at ``CACHE_MAX_BYTES``
on disk, oldest evicted first.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sakaibot.commands import ImageRequest
from sakaibot.errors import StoreUnavailable
from sakaibot.generation import GeneratedImage
from sakaibot.models import ModelSpec
from sakaibot.store import CacheEntry, Store
from sakaibot.store.images import ImageFiles

logger = logging.getLogger(__name__)


def cache_key(model: ModelSpec, request: ImageRequest) -> str:
    """The identity of a request's result; delivery-only options do not count.

    What made the image counts too: the model's name, its worker's URL and
    contract. Only the hash is kept, so a token in the URL's query is not stored.
    """
    options = request.options
    identity = {
        "model": model.name,
        "worker_url": model.url,
        "contract": model.contract.value,
        "prompt": " ".join(request.prompt.split()).casefold(),
        "aspect_ratio": options.aspect_ratio,
        "seed": options.seed,
        "negative_prompt": (
            " ".join(options.negative_prompt.split()).casefold()
            if options.negative_prompt
            else None
        ),
        "steps": options.steps,
        "style": options.style.value if options.style else None,
        "raw": options.raw,
    }
    encoded = json.dumps(identity, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return hashlib.sha256(encoded).hexdigest()


def new_entry(
    key: str,
    model: str,
    image: GeneratedImage,
    image_hash: str,
    prompt_used: str,
    enhancer: str,
    now_s: float,
) -> CacheEntry:
    """The cache entry for a result made just now."""
    return CacheEntry(
        key=key,
        model=model,
        image_hash=image_hash,
        image_ext=image.extension,
        mime_type=image.mime_type,
        width=image.width,
        height=image.height,
        prompt_used=prompt_used,
        enhancer=enhancer,
        created_at_s=now_s,
        last_used_at_s=now_s,
    )


@dataclass(frozen=True)
class CacheHit:
    entry: CacheEntry
    image: GeneratedImage


@dataclass(frozen=True)
class CacheSummary:
    entries: int
    size_bytes: int
    max_bytes: int
    hits: int
    ttl_s: float


class ResultCache:
    """Finds and keeps results; a store failure only ever means "no hit"."""

    def __init__(
        self,
        store: Store,
        images: ImageFiles,
        *,
        ttl_s: float,
        max_bytes: int,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._images = images
        self._ttl_s = ttl_s
        self._max_bytes = max_bytes
        self._clock = clock
        #: The keys in the store, read once: a miss (the common case) then costs
        #: no store call at all.
        self._known_keys: set[str] | None = None

    async def _knows(self, key: str) -> bool:
        if self._known_keys is None:
            self._known_keys = {entry.key for entry in await self._store.cache_entries()}
        return key in self._known_keys

    def _forget_key(self, key: str) -> None:
        if self._known_keys is not None:
            self._known_keys.discard(key)

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0 and self._max_bytes > 0

    async def trim(self, keep: str) -> None:
        """Hold the kept images under the disk cap, whether or not the cache is on.

        Never deletes ``keep`` or an image an unfinished job still needs.
        """
        try:
            if await self._images.size_bytes() > self._max_bytes:
                await self._images.evict(
                    protect=await self._store.image_hashes_in_use() | {keep},
                    max_bytes=self._max_bytes,
                )
        except (StoreUnavailable, OSError) as exc:
            logger.warning("could not trim the kept images: %s", exc)

    async def lookup(self, model: ModelSpec, request: ImageRequest) -> CacheHit | None:
        if not self.enabled or request.options.fresh:
            return None
        key = cache_key(model, request)
        try:
            if not await self._knows(key):
                return None
            entry = await self._store.cache_get(key)
            if entry is None:
                self._forget_key(key)
                return None
            if entry.created_at_s < self._clock() - self._ttl_s:
                await self._store.cache_delete([key])
                self._forget_key(key)
                return None
            image = await self._images.get(entry.image_hash, entry.image_ext)
            if image is None:  # evicted from disk
                await self._store.cache_delete([key])
                self._forget_key(key)
                return None
            await self._store.cache_touch(key, self._clock(), upload_ref=None, hit=True)
        except StoreUnavailable as exc:
            logger.warning("cache lookup failed: %s", exc)
            return None
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
        """Keep a fresh result; returns its key (``None`` when caching is off or failed)."""
        if not self.enabled:
            return None
        key = cache_key(model, request)
        entry = new_entry(key, model.name, image, image_hash, prompt_used, enhancer, self._clock())
        try:
            await self._store.cache_put(entry)
            if self._known_keys is not None:
                self._known_keys.add(key)
        except (StoreUnavailable, OSError) as exc:
            logger.warning("could not keep a result in the cache: %s", exc)
            return None
        return key

    def note_upload(self, key: str) -> Callable[[str], None] | None:
        """A callback for the chat: remember the uploaded file to reuse on the next hit."""

        def remember(upload_ref: str) -> None:
            task = asyncio.get_running_loop().create_task(
                self._store.cache_touch(key, self._clock(), upload_ref=upload_ref, hit=False)
            )
            task.add_done_callback(_log_task_failure)

        return remember

    async def summary(self) -> CacheSummary:
        entries = await self._store.cache_entries()
        return CacheSummary(
            entries=len(entries),
            size_bytes=await self._images.size_bytes(),
            max_bytes=self._max_bytes,
            hits=sum(entry.hits for entry in entries),
            ttl_s=self._ttl_s,
        )

    async def clear(self) -> int:
        """Forget every entry. The images stay for ``/image resend`` (within the disk cap)."""
        entries = await self._store.cache_entries()
        await self._store.cache_delete([entry.key for entry in entries])
        self._known_keys = set()
        return len(entries)


def _log_task_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("could not remember an upload: %s", task.exception())


class Cache(Protocol):
    """What the pipeline and the bot ask of a result cache."""

    @property
    def enabled(self) -> bool: ...

    async def lookup(self, model: ModelSpec, request: ImageRequest) -> CacheHit | None: ...

    async def remember(
        self,
        model: ModelSpec,
        request: ImageRequest,
        image: GeneratedImage,
        *,
        image_hash: str,
        prompt_used: str,
        enhancer: str,
    ) -> str | None: ...

    def note_upload(self, key: str) -> Callable[[str], None] | None: ...

    async def trim(self, keep: str) -> None: ...

    async def summary(self) -> CacheSummary: ...

    async def clear(self) -> int: ...
