"""Start-up: bring back what the store holds, so nothing a user was told is lost.

- Rate-limit windows are rebuilt from the jobs accepted (and not refunded)
  within the longest window.
  All users' windows (``IMAGE_GLOBAL_LIMITS``) are rebuilt from the same jobs.
- Each model's images made today (UTC) are counted again from the stored jobs,
  and a model whose worker answered its quota error today stays paused.
- Unfinished jobs come back in their original order, with the chat and the
  message they answer, and their status message is taken over, not repeated.
  The chat is first taught each job's stored address, so it can reach chats
  its client has not met since the restart.
- A job that was being sent when the process died is first looked for in the
  chat: found, it is marked delivered; not found, its kept image is sent (or,
  if the image is gone, it is generated again). So every accepted job ends
  with exactly one delivered image.
- The images of a ``--n`` request come back as one album: those that failed
  before are named again, those made are held again, the rest are queued, and
  the album is looked for in the chat (by its tag) once, before anything is sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from sakaibot.albums import MissingImage
from sakaibot.chat.port import ChatPort
from sakaibot.enhancer import ORIGINAL_PROMPT
from sakaibot.errors import (
    ChatError,
    ModelGone,
    SakaiBotError,
    StoreUnavailable,
)
from sakaibot.i18n import Texts, english_for
from sakaibot.jobs import Album, Job, decode_request
from sakaibot.limits import EVERYONE_KEY, SlidingWindowLimiter
from sakaibot.models import ModelRegistry
from sakaibot.pipeline import Delivered, Delivery, JobPipeline
from sakaibot.queues import JobQueues
from sakaibot.quota import DAY_S, DailyBudgets, quota_hit_today, used_today, utc_day
from sakaibot.status import StatusScheduler, show_place
from sakaibot.store import JobRecord, Store, StoredJobState
from sakaibot.store.images import ImageFiles

logger = logging.getLogger(__name__)


@dataclass
class Recovery:
    store: Store
    images: ImageFiles
    registry: ModelRegistry
    limiter: SlidingWindowLimiter
    queues: JobQueues
    status: StatusScheduler
    pipeline: JobPipeline
    chat: ChatPort
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    #: The language each chat is answered in (loaded from the store before recovery).
    texts_for: Callable[[str], Texts] = english_for
    #: All users' windows (``IMAGE_GLOBAL_LIMITS``), in this process.
    everyone_limiter: SlidingWindowLimiter | None = None
    budgets: DailyBudgets | None = None

    async def restore_limits(self) -> int:
        limiters = [self.limiter] + ([self.everyone_limiter] if self.everyone_limiter else [])
        longest_s = max((w.window_s for lim in limiters for w in lim.windows), default=0.0)
        if not longest_s:
            return 0
        accepted = await self.store.accepted_since(self.wall_clock() - longest_s)
        for user_id, stamp in accepted:
            self.limiter.restore(user_id, stamp)
            if self.everyone_limiter is not None:
                self.everyone_limiter.restore(EVERYONE_KEY, stamp)
        return len(accepted)

    async def restore_budgets(self) -> None:
        """Count today's images again, so a restart does not hand out a new budget."""
        if self.budgets is None:
            return
        now_s = self.wall_clock()
        records = await self.store.jobs_since(utc_day(now_s) * DAY_S)
        await self.budgets.restore(used_today(records, now_s), quota_hit_today(records, now_s))

    async def resume_jobs(self) -> int:
        records = await self.store.unfinished_jobs()
        albums: dict[str, Album | None] = {}
        for record in records:
            try:
                if record.album_id is not None:
                    await self._resume_album_job(record, albums)
                    continue
                await self._resume(record)
            except StoreUnavailable:
                raise
            except Exception:
                # One unreadable record must not keep the others from running.
                logger.exception("job %s could not be recovered", record.id)
        if records:
            logger.info("recovered %d unfinished job(s)", len(records))
        return len(records)

    def _job(self, record: JobRecord, album: Album | None = None) -> Job | None:
        model = self.registry.get(record.model)
        if model is None:
            return None
        return Job(
            album=album,
            album_index=record.album_index or 0,
            id=record.id,
            user_id=record.user_id,
            chat_id=record.chat_id,
            reply_to=record.reply_to,
            request=decode_request(record.request_json),
            model=model,
            created_at_s=self.clock(),
            limiter_stamp=None if record.refunded else record.created_at_s,
            chat_address=record.chat_address,
            texts=album.texts if album is not None else self.texts_for(record.chat_id),
        )

    async def _resume(self, record: JobRecord) -> None:
        self._take_over(record, record.id)
        job = self._job(record)
        if job is None:
            await self._give_up(record, ModelGone(record.model))
            return
        if record.state == StoredJobState.DELIVERING:
            delivered = await self._find_delivered(
                record, record.id, "job %s: could not look for its image in the chat: %s"
            )
            if delivered is not None:
                await self.pipeline.finish(job, Delivered(delivered or None))
                return
            if await self._send_kept_image(record, job):
                return
        place = self.queues.submit_recovered(job)
        show_place(self.status, job, place)

    async def _send_kept_image(self, record: JobRecord, job: Job) -> bool:
        """Send the image a job was delivering when the process stopped, if it is kept."""
        image = None
        if record.image_hash and record.image_ext:
            image = await self.images.get(record.image_hash, record.image_ext)
        if image is None:
            return False
        await self.pipeline.hand_over(
            Delivery(
                job,
                image,
                record.enhancer or ORIGINAL_PROMPT,
                record.prompt_used or job.request.prompt,
                self.clock(),
            )
        )
        return True

    async def _resume_album_job(self, record: JobRecord, albums: dict[str, Album | None]) -> None:
        """One image of an album; the first of its album also brings the album back."""
        assert record.album_id is not None
        if record.album_id not in albums:
            albums[record.album_id] = await self._album(record)
        album = albums[record.album_id]
        if album is None:
            return  # the album was delivered before the restart: nothing more to do
        job = self._job(record, album)
        if job is None:
            # Rare (the model was removed): each image says so in a message of its own.
            self.status.adopt(record.id, chat_id=record.chat_id, reply_to=record.reply_to)
            await self.pipeline.finish(record, ModelGone(record.model))
            return
        if record.state == StoredJobState.DELIVERING and await self._send_kept_image(record, job):
            return
        place = self.queues.submit_recovered(job)
        show_place(self.status, job, place)

    async def _album(self, record: JobRecord) -> Album | None:
        """Bring back the album of ``record``: ``None`` when it reached the chat already."""
        assert record.album_id is not None
        # Its one status message is taken over (or removed, if it was delivered).
        self._take_over(record, record.album_id)
        members = await self.store.album_jobs(record.album_id)
        album = Album(
            id=record.album_id,
            size=record.album_size or len(members),
            chat_id=record.chat_id,
            reply_to=record.reply_to,
            user_id=record.user_id,
            model=record.model,
            texts=self.texts_for(record.chat_id),
        )
        # Sent already (all of it goes out at once)? Only an album whose images were
        # being sent can be in the chat; then it is never sent again.
        delivered: int | None = None
        done = [m for m in members if m.state == StoredJobState.DONE]
        if done:
            delivered = done[0].delivered_message_id or 0
        elif any(m.state == StoredJobState.DELIVERING for m in members):
            delivered = await self._find_delivered(
                record, album.id, "album %s: could not look for it in the chat: %s"
            )
        unfinished = [m for m in members if m.state in StoredJobState.UNFINISHED]
        if delivered is not None:
            await self.pipeline.album_found_delivered(album, unfinished, delivered or None)
            return None
        for member in members:
            if member.state in StoredJobState.UNFINISHED:
                continue
            seed = decode_request(member.request_json).options.seed
            kind = member.error_kind or "failed"
            self.pipeline.albums.failed(
                album, MissingImage(member.album_index or 0, member.id, seed, kind)
            )
        return album

    def _take_over(self, record: JobRecord, status_key: str) -> None:
        """Before anything reaches the chat: address it as the job did (a fresh client
        may not know it, and a user account cannot address a stranger by id alone),
        and take over the status message shown before the restart, if any."""
        self.chat.remember_chat(record.chat_id, record.chat_address)
        if record.status_message_id is not None:
            self.status.adopt(
                status_key,
                chat_id=record.chat_id,
                reply_to=record.reply_to,
                message_id=record.status_message_id,
            )

    async def _find_delivered(self, record: JobRecord, tag: str, warning: str) -> int | None:
        """The message that carries the image tagged ``#tag`` (0: sent, message unknown),
        or ``None`` when it is not in the chat or the chat could not be searched
        (logged as ``warning``, given the tag and the error)."""
        try:
            return await self.chat.find_delivered(
                record.chat_id, reply_to=record.reply_to, job_id=tag
            )
        except ChatError as exc:
            # Unsure is not "never": sending twice is the lesser harm than a
            # job that waits for ever.
            logger.warning(warning, tag, exc)
            return None

    async def _give_up(self, record: JobRecord, error: SakaiBotError) -> None:
        if record.status_message_id is None:
            # Nothing was shown yet: the failure is a new message.
            self.status.adopt(record.id, chat_id=record.chat_id, reply_to=record.reply_to)
        await self.pipeline.finish(record, error)
