"""Improving prompts ahead of the queue, so a model's slot only generates.

The image worker is the scarce resource; the LLM is not. While one job
generates, the next ``ENHANCE_AHEAD`` jobs waiting for the same model have
their prompts improved in tasks of their own, so that when their turn comes the
prompt is ready and the worker is asked at once.

The queues tell :class:`EnhanceAhead` when a model's line changes (a job
stored, started or cancelled) and when a job is gone; the pipeline asks it for
the job's prompt when the job starts. Rules:

- ``--raw`` jobs, and every job when no LLM is configured, are never improved.
- At most ``ENHANCE_AHEAD`` jobs per model are improved ahead: the first ones
  in line, so the LLM's load follows the worker's pace, not the queue's depth.
- A job is improved only once it is safe in the store; one that is cancelled or
  withdrawn has its improvement cancelled (no answer is waited for or used).
- A job whose prompt is not ready when its turn comes waits for it; one that
  was never started (``ENHANCE_AHEAD=0``, or it jumped the line) is improved
  then, as before. The enhancer never raises: its failures are the user's prompt.
- While its prompt is being improved, a waiting job's status says so; then it
  says the job's place again.

Only the enhanced text lives here; nothing is stored. A job brought back after a
restart is improved again (the stored record only holds the prompt once the
image exists, and writing it earlier would cost a store commit per job).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sakaibot.enhancer import EnhancedPrompt, PromptEnhancer
from sakaibot.jobs import Job, JobState
from sakaibot.queues import QueuePlace, WaitingLine
from sakaibot.status import (
    StatusScheduler,
    enhancing_text,
    show_place,
    status_actions,
    status_text,
)

logger = logging.getLogger(__name__)


class EnhanceAhead:
    """Per model, keeps the next jobs' prompts being improved in the background."""

    def __init__(
        self,
        enhancer: PromptEnhancer | None,
        *,
        ahead: int,
        status: StatusScheduler,
        place_of: Callable[[Job], QueuePlace | None] | None = None,
    ) -> None:
        self._enhancer = enhancer
        self._ahead = ahead
        self._status = status
        #: Where a waiting job stands now (the queues'), to say so once its prompt is ready.
        self.place_of = place_of
        self._tasks: dict[str, asyncio.Task[EnhancedPrompt]] = {}

    def wanted(self, job: Job) -> bool:
        """Whether ``job``'s prompt is to be improved at all."""
        return self._enhancer is not None and not job.request.options.raw

    # -- told by the queues -----------------------------------------------------

    def line_changed(self, line: WaitingLine) -> None:
        """Start improving the first jobs in ``line`` that are not being improved yet."""
        if self._ahead == 0 or self._enhancer is None:
            return
        for job in line.first(self._ahead):
            if job.id in self._tasks or not self.wanted(job):
                continue
            if job.state is not JobState.QUEUED or not job.stored:
                continue
            self._start(job, self._enhancer)

    def forget(self, job: Job) -> None:
        """``job`` is gone (cancelled, withdrawn, ended): drop its improvement."""
        task = self._tasks.pop(job.id, None)
        if task is not None and not task.done():
            task.cancel()
        job.improving = False

    # -- asked by the pipeline --------------------------------------------------

    def ready(self, job: Job) -> EnhancedPrompt | None:
        """``job``'s improved prompt if it is ready now (taken: asked once)."""
        task = self._tasks.get(job.id)
        if task is None or not task.done() or task.cancelled():
            return None
        del self._tasks[job.id]
        return task.result()

    async def improve(self, job: Job) -> EnhancedPrompt:
        """``job``'s prompt, improved: waits for the improvement under way, or does it now
        (only for a job :meth:`wanted` says is improved)."""
        assert self._enhancer is not None
        task = self._tasks.pop(job.id, None)
        if task is None:
            return await self._enhancer.enhance(job.request.prompt)
        # Awaiting the task directly: if the job is cancelled meanwhile, so is its task.
        return await task

    # -- inside -----------------------------------------------------------------

    def _start(self, job: Job, enhancer: PromptEnhancer) -> None:
        task = asyncio.create_task(_enhance(enhancer, job), name=f"enhance-{job.id}")
        self._tasks[job.id] = task
        job.improving = True
        self._status.show(
            job.status_key,
            chat_id=job.chat_id,
            reply_to=job.reply_to,
            text=status_text(job, enhancing_text(job.texts)),
            actions=status_actions(job),
        )
        task.add_done_callback(lambda _: self._done(job))

    def _done(self, job: Job) -> None:
        if not job.improving:
            return  # forgotten meanwhile: its status is not this module's any more
        job.improving = False
        place = self.place_of(job) if self.place_of is not None else None
        if place is not None:
            show_place(self._status, job, place)


async def _enhance(enhancer: PromptEnhancer, job: Job) -> EnhancedPrompt:
    # The enhancer promises never to raise; should it break that promise, the
    # job still gets its image from the user's own prompt.
    try:
        return await enhancer.enhance(job.request.prompt)
    except Exception:
        logger.exception("job %s: the prompt enhancer raised; using the user's prompt", job.id)
        return EnhancedPrompt(text=job.request.prompt)
