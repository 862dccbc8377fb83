"""The one exception tree of SakaiBot and the catalogue of what users are told.

Inner code raises these; each edge (worker client, enhancer, chat adapters)
translates the library's own errors into them exactly once, ``from exc``.
Every error a user may see renders itself through :meth:`SakaiBotError.message_in`
in the chat's language (:attr:`~SakaiBotError.user_message` is the English), so
the wording lives here and nowhere else::

    SakaiBotError
    ├── ConfigError                  settings missing or invalid (exit code 2)
    ├── RequestRejected              a command that is not accepted; nothing queued
    │   ├── UsageError               not a well-formed /image command
    │   │   └── DidYouMean           nearly one: the right form, in one line
    │   ├── UnknownModel             the model name is not configured
    │   ├── EmptyPrompt
    │   ├── PromptTooLong
    │   ├── BadFlag                  a known flag with a bad value
    │   ├── UnsupportedFlag          a flag the chosen model does not take
    │   ├── RateLimited              the user's sliding window is full
    │   │   └── EveryoneRateLimited  IMAGE_GLOBAL_LIMITS: all users' window is full
    │   ├── SlowDown                 refused too often: one warning, then silence
    │   ├── QueueFull                the model's queue is at its bound
    │   ├── TooManyPending           the user has too many jobs waiting
    │   ├── NothingToCancel          /image cancel found no waiting job
    │   ├── NothingToRetry           /image retry found no kept image
    │   ├── ModelUnavailable         the model's circuit breaker is open
    │   ├── PausedUntilReset         the model's daily budget or quota is used up
    │   ├── OwnerOnly                an owner command from someone else
    │   ├── UnknownJob               again/resend named no job of this user
    │   ├── UnknownLanguage          /image lang named a language not offered
    │   ├── ImageGone                resend: the image is no longer kept
    │   ├── NoImageReplied           again/file without an id, not a reply to an image
    │   ├── NotYourButton            a one-tap action pressed by someone else
    │   └── DefaultsLocked           /image set by someone not trusted with it
    ├── GenerationError              the image could not be made
    │   ├── TransientWorkerError     worth retrying (timeouts, 429/502/503/504, capacity)
    │   │   └── WorkerTimeout
    │   └── PermanentWorkerError     retrying cannot help
    │       ├── WorkerAuthError      401/403
    │       ├── WorkerBadRequest     400 and friends
    │       ├── ContentFiltered      the prompt was filtered
    │       ├── QuotaExhausted       the daily free allocation is used up
    │       ├── InvalidImage         200 but not an image
    │       ├── ImageTooLarge        bigger than the configured cap
    │       ├── WorkerGaveUp         transient failures until the budget ran out
    │       └── JobSetAside          the shared queue gave up on a job that failed N workers
    │   └── RefusedByQueue           the shared queue's bound was reached at hand-over
    ├── EnhancerError                the LLM did not help; never reaches a user
    ├── StoreUnavailable             the data file could not be read or written
    │   └── JobIdTaken               a new job's id is already used (admission draws another)
    ├── LoginFailed                  ``sakaibot login`` could not log in; nothing was saved
    ├── JobCancelled                 the job was cancelled while waiting
    │   └── CancelledInQueue         (also a GenerationError) taken back from the shared queue
    ├── ModelGone                    a recovered job's model is no longer configured
    └── ChatError                    the chat refused an operation
        ├── DeliveryFailed           the image was made but not sent (kept for a retry)
        ├── TelegramUnreachable      connecting to Telegram failed
        ├── FloodWait                the chat asks us to wait ``retry_after_s``
        └── MessageNotModified       an edit to the very same text
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

from sakaibot.i18n import ENGLISH, Texts


def format_wait(seconds: float, texts: Texts = ENGLISH) -> str:
    """Say a duration the way a person would ("45 s", "3 min", "2 h 5 min")."""
    total_s = max(1, math.ceil(seconds))
    if total_s < 60:
        return texts.gettext("{seconds} s", seconds=total_s)
    minutes, secs = divmod(total_s, 60)
    if minutes < 60:
        if secs == 0:
            return texts.gettext("{minutes} min", minutes=minutes)
        return texts.gettext("{minutes} min {seconds} s", minutes=minutes, seconds=secs)
    hours, minutes = divmod(minutes, 60)
    if minutes == 0:
        return texts.gettext("{hours} h", hours=hours)
    return texts.gettext("{hours} h {minutes} min", hours=hours, minutes=minutes)


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``; ``many`` for irregular plurals (``entries``)."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"


class SakaiBotError(Exception):
    """Base of every error SakaiBot raises on purpose."""

    #: A short, stable name for logs, statistics and the JSON event stream.
    kind = "internal"

    @property
    def user_message(self) -> str:
        """What the person who sent the command is told, in English."""
        return self.message_in(ENGLISH)

    def message_in(self, texts: Texts) -> str:
        """What the person who sent the command is told, in ``texts``' language."""
        return texts.gettext("Something went wrong on our side. Please try again in a minute.")


class ConfigError(SakaiBotError):
    """The settings are missing or invalid; the message names each variable."""

    kind = "config"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))

    def message_in(self, texts: Texts) -> str:
        # Read on the operator's terminal (exit code 2), never in a chat: English.
        lines = "\n".join(f"- {p}" for p in self.problems)
        return f"SakaiBot is not configured correctly:\n{lines}"


class RequestRejected(SakaiBotError):
    """A command that was refused before anything was queued."""

    kind = "rejected"


class LineTooLong(RequestRejected):
    """A console input line over the length the console reads (it was skipped whole)."""

    kind = "line_too_long"

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        super().__init__(f"input line over {limit_bytes} bytes")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "That line is longer than {limit_kib} KiB, so it was not read. "
            "Send each command on a line of its own, under {limit_kib} KiB.",
            limit_kib=self.limit_bytes // 1024,
        )


class UsageError(RequestRejected):
    kind = "usage"

    def __init__(self, usage_text: str, *, render: Callable[[Texts], str] | None = None) -> None:
        self.usage_text = usage_text
        #: The usage text in another language (it names the configured models).
        self._render = render
        super().__init__("not a well-formed /image command")

    def message_in(self, texts: Texts) -> str:
        return self.usage_text if self._render is None else self._render(texts)


class DidYouMean(UsageError):
    """Nearly a generation command (``/image flux a fox``): one line with the right form."""

    def __init__(self, suggestion: str) -> None:
        super().__init__(f"Did you mean: {suggestion}")
        self.suggestion = suggestion

    def message_in(self, texts: Texts) -> str:
        return texts.gettext("Did you mean: {suggestion}", suggestion=self.suggestion)


class UnknownModel(RequestRejected):
    kind = "unknown_model"

    def __init__(self, model: str, available: list[str]) -> None:
        self.model = model
        self.available = available
        super().__init__(f"unknown model {model!r}")

    def message_in(self, texts: Texts) -> str:
        if not self.available:
            return texts.gettext(
                "Unknown model '{model}', and no image model is configured. "
                "Ask the bot's owner to set FLUX_WORKER_URL or SDXL_WORKER_URL.",
                model=self.model,
            )
        return texts.gettext(
            "Unknown model '{model}'. Available models: {names}. "
            "Example: /image={example}=a red fox in the snow",
            model=self.model,
            names=", ".join(self.available),
            example=self.available[0],
        )


class EmptyPrompt(RequestRejected):
    kind = "empty_prompt"

    def __init__(self, model: str) -> None:
        self.model = model
        super().__init__("empty prompt")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The prompt is empty. Write what you want after the model, "
            "e.g. /image={model}=a red fox in the snow",
            model=self.model,
        )


class PromptTooLong(RequestRejected):
    kind = "prompt_too_long"

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(f"prompt of {length} characters over the limit of {limit}")

    def message_in(self, texts: Texts) -> str:
        over = self.length - self.limit
        return texts.gettext(
            "The prompt is {length} characters long; the limit is {limit}. "
            "Shorten it by {over} and send it again.",
            length=self.length,
            limit=self.limit,
            over=texts.ngettext("{count} character", "{count} characters", over),
        )


class BadFlag(RequestRejected):
    kind = "bad_flag"

    def __init__(
        self, flag: str, problem: str, *, render: Callable[[Texts], str] | None = None
    ) -> None:
        self.flag = flag
        self.problem = problem
        #: The problem in another language (it quotes the user's text and the model's limits).
        self._render = render
        super().__init__(f"{flag}: {problem}")

    def message_in(self, texts: Texts) -> str:
        problem = self.problem if self._render is None else self._render(texts)
        return texts.gettext("Problem with {flag}: {problem}", flag=self.flag, problem=problem)


class UnsupportedFlag(RequestRejected):
    kind = "unsupported_flag"

    def __init__(self, flag: str, model: str, supported: list[str]) -> None:
        self.flag = flag
        self.model = model
        self.supported = supported
        super().__init__(f"{model} does not support {flag}")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "{model} does not support {flag}. "
            "Flags {model} supports: {names}. Remove {flag} and send it again.",
            model=self.model,
            flag=self.flag,
            names=", ".join(self.supported),
        )


class RateLimited(RequestRejected):
    kind = "rate_limited"

    def __init__(
        self, retry_after_s: float, limit: int, window_s: float, *, asked: int = 1
    ) -> None:
        self.retry_after_s = retry_after_s
        self.limit = limit
        self.window_s = window_s
        #: How many images the request asked for (``--n``).
        self.asked = asked
        super().__init__(f"rate limited for {retry_after_s:.1f} s")

    def message_in(self, texts: Texts) -> str:
        # Which message and its values are the same for every limit; the words
        # (literal for the catalogue) are each class's own.
        images = texts.ngettext("{count} image", "{count} images", self.limit)
        window = format_wait(self.window_s, texts)
        asked = texts.ngettext("{count} image", "{count} images", self.asked)
        if self.asked > self.limit:
            return self._asked_too_many(
                texts, asked=asked, images=images, window=window, limit=self.limit
            )
        wait = format_wait(self.retry_after_s, texts)
        if self.asked > 1:
            return self._would_go_over(texts, asked=asked, images=images, window=window, wait=wait)
        return self._reached(texts, images=images, window=window, wait=wait)

    def _asked_too_many(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "You asked for {asked}, more than the limit of {images} per {window}. "
            "Ask for fewer, e.g. --n {limit}.",
            **values,
        )

    def _would_go_over(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "{asked} would go over the limit of {images} per {window}. "
            "Try again in {wait}, or ask for fewer with --n.",
            **values,
        )

    def _reached(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "You have reached the limit of {images} per {window}. Try again in {wait}.",
            **values,
        )


class EveryoneRateLimited(RateLimited):
    """``IMAGE_GLOBAL_LIMITS``: the images of all users together reached a window."""

    kind = "global_rate_limited"

    def _asked_too_many(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "You asked for {asked}, more than the bot makes for everyone per {window} "
            "({images}). Ask for fewer, e.g. --n {limit}.",
            **values,
        )

    def _would_go_over(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "{asked} would go over the bot's limit of {images} per {window} for everyone. "
            "Try again in {wait}, or ask for fewer with --n.",
            **values,
        )

    def _reached(self, texts: Texts, **values: object) -> str:
        return texts.gettext(
            "The bot has made its limit of {images} per {window} for everyone. "
            "Try again in {wait}.",
            **values,
        )


class SlowDown(RequestRejected):
    """Told once, instead of a refusal, to a user whose commands keep being refused."""

    kind = "slow_down"

    def __init__(self, silent_for_s: float) -> None:
        self.silent_for_s = silent_for_s
        super().__init__(f"refusals muted for {silent_for_s:.0f} s")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "Slow down: too many of your commands could not be taken. Commands of yours "
            "that fail get no answer for the next {wait}; "
            "/image help shows how to write them.",
            wait=format_wait(self.silent_for_s, texts),
        )


class QueueFull(RequestRejected):
    kind = "queue_full"

    def __init__(self, model: str, limit: int) -> None:
        self.model = model
        self.limit = limit
        super().__init__(f"{model} queue full at {limit}")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} queue is full ({limit} waiting). "
            "Try again in a few minutes, or use another model (/image models).",
            model=self.model,
            limit=self.limit,
        )


class TooManyPending(RequestRejected):
    kind = "too_many_pending"

    def __init__(self, pending: int, limit: int, *, asked: int = 1) -> None:
        self.pending = pending
        self.limit = limit
        #: How many images the request asked for (``--n``).
        self.asked = asked
        super().__init__(f"{pending} pending jobs, limit {limit}")

    def message_in(self, texts: Texts) -> str:
        if self.asked > self.limit:
            return texts.gettext(
                "You asked for {asked}; you may have at most {limit} waiting or generating "
                "at once. Ask for fewer, e.g. --n {limit}.",
                asked=texts.ngettext("{count} image", "{count} images", self.asked),
                limit=self.limit,
            )
        if self.asked > 1:
            return texts.gettext(
                "You asked for {asked} and already have {images} waiting or generating "
                "(the limit is {limit}). Ask for fewer with --n, or wait for yours to finish.",
                asked=texts.ngettext("{count} image", "{count} images", self.asked),
                images=texts.ngettext("{count} image", "{count} images", self.pending),
                limit=self.limit,
            )
        return texts.gettext(
            "You already have {images} waiting or generating "
            "(the limit is {limit}). Wait for one to finish, or cancel a waiting one "
            "with /image cancel.",
            images=texts.ngettext("{count} image", "{count} images", self.pending),
            limit=self.limit,
        )


class GenerationError(SakaiBotError):
    """The image could not be generated."""

    kind = "generation"

    def __init__(self, detail: str, *, model: str = "") -> None:
        self.detail = detail
        self.model = model
        super().__init__(detail)

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker failed. Please try again later.", model=self._model_name(texts)
        )

    def _model_name(self, texts: Texts) -> str:
        return self.model or texts.gettext("image")


class TransientWorkerError(GenerationError):
    kind = "worker_unavailable"

    def __init__(self, detail: str, *, model: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(detail, model=model)
        self.retry_after_s = retry_after_s

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker is busy or unreachable right now. "
            "Your allowance was not used; please try again in a few minutes.",
            model=self._model_name(texts),
        )


class WorkerTimeout(TransientWorkerError):
    kind = "worker_timeout"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker took too long to answer. "
            "Your allowance was not used; please try again in a few minutes.",
            model=self._model_name(texts),
        )


class PermanentWorkerError(GenerationError):
    kind = "worker_error"


class WorkerAuthError(PermanentWorkerError):
    kind = "worker_auth"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker refused our credentials. "
            "The bot's owner should check the worker's API key (FLUX_API_KEY or SDXL_API_KEY).",
            model=self._model_name(texts),
        )


class WorkerBadRequest(PermanentWorkerError):
    kind = "worker_bad_request"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker rejected the request. Try a simpler prompt "
            "or fewer flags; if it keeps happening, tell the bot's owner.",
            model=self._model_name(texts),
        )


class ContentFiltered(PermanentWorkerError):
    kind = "content_filtered"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "Your prompt was filtered by the image service's safety check. "
            "Rephrase it and try again."
        )


class QuotaExhausted(PermanentWorkerError):
    kind = "quota_exhausted"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker has used up its daily allowance. "
            "It resets at 00:00 UTC; try again then or use another model (/image models).",
            model=self._model_name(texts),
        )


class InvalidImage(PermanentWorkerError):
    kind = "invalid_image"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker answered, but not with an image. "
            "The bot's owner should check the worker URL (sakaibot verify).",
            model=self._model_name(texts),
        )


class ImageTooLarge(PermanentWorkerError):
    kind = "image_too_large"

    def __init__(self, size_bytes: int, limit_bytes: int, *, model: str = "") -> None:
        super().__init__(f"image of {size_bytes} bytes over {limit_bytes}", model=model)
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The {model} worker sent an image larger than the "
            "{limit_mb:g} MB this bot accepts. Try again with a smaller size; if it keeps "
            "happening, the bot's owner can raise IMAGE_MAX_BYTES.",
            model=self._model_name(texts),
            limit_mb=self.limit_bytes / 1_000_000,
        )


class WorkerGaveUp(PermanentWorkerError):
    """Transient failures went on until the retry budget ran out."""

    kind = "worker_unavailable"

    def __init__(self, detail: str, *, model: str = "", attempts: int = 0) -> None:
        super().__init__(detail, model=model)
        self.attempts = attempts

    def message_in(self, texts: Texts) -> str:
        tries = texts.ngettext("tried once", "tried {count} times", self.attempts)
        if isinstance(self.__cause__, WorkerTimeout):
            return texts.gettext(
                "The {model} worker took too long to answer ({tries}). "
                "Your allowance was not used; please try again in a few minutes.",
                model=self._model_name(texts),
                tries=tries,
            )
        return texts.gettext(
            "The {model} worker is busy or unreachable right now ({tries}). "
            "Your allowance was not used; please try again in a few minutes.",
            model=self._model_name(texts),
            tries=tries,
        )


class EnhancerError(SakaiBotError):
    """The LLM could not improve the prompt; the job goes on with the original."""

    kind = "enhancer"


class StoreUnavailable(SakaiBotError):
    """The data file could not be read or written."""

    kind = "store"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "SakaiBot could not save your request (its storage is unavailable), so it "
            "was not queued. Try again in a few minutes; the bot's owner should check the "
            "disk and SAKAIBOT_DATA_DIR (and REDIS_URL, when Redis is used)."
        )


class JobIdTaken(StoreUnavailable):
    """A new job's (or album's) id is already used by a stored one.

    The store finds this as it writes the job, in the same transaction, so no
    separate look-up is made per job; admission then draws a new id. It never
    reaches a user unless ids keep clashing, and then reads as a store failure.
    """

    kind = "store"


class JobCancelled(SakaiBotError):
    kind = "cancelled"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext("Cancelled.")


class ModelGone(SakaiBotError):
    """A recovered job's model is no longer configured."""

    kind = "model_gone"

    def __init__(self, model: str) -> None:
        super().__init__(f"model {model} is no longer configured")
        self.model = model

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "SakaiBot restarted and the {model} model is no longer offered, so this "
            "image could not be made. Your allowance was not used; see /image models.",
            model=self.model,
        )


class CancelledInQueue(GenerationError, JobCancelled):
    """A generation taken back from the shared queue before a worker had it (``/image cancel``).

    Both a :class:`GenerationError` (what a generator returns) and a
    :class:`JobCancelled` (what the pipeline ends the job as).
    """

    kind = JobCancelled.kind

    def message_in(self, texts: Texts) -> str:
        # Skips GenerationError's message: JobCancelled comes next in the MRO.
        return super(GenerationError, self).message_in(texts)


class RefusedByQueue(GenerationError):
    """The shared queue refused the job at hand-over: a bound every front end shares
    (the model's waiting jobs, or the user's pending ones) was reached meanwhile."""

    def __init__(self, refusal: QueueFull | TooManyPending, *, model: str = "") -> None:
        super().__init__(str(refusal), model=model)
        self.refusal = refusal
        self.kind = refusal.kind

    def message_in(self, texts: Texts) -> str:
        return self.refusal.message_in(texts)


class JobSetAside(PermanentWorkerError):
    """A job whose generation stopped worker after worker, set aside by the shared queue."""

    kind = "set_aside"

    def __init__(self, deliveries: int, *, model: str = "") -> None:
        super().__init__(f"set aside after {deliveries} deliveries", model=model)
        self.deliveries = deliveries

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "This request stopped the {model} worker {deliveries} times, "
            "so it was set aside rather than tried again. Try a different prompt or "
            "model; if it keeps happening, tell the bot's owner.",
            model=self._model_name(texts),
            deliveries=self.deliveries,
        )


class ChatError(SakaiBotError):
    """The chat refused an operation (sending, editing, deleting, uploading)."""

    kind = "chat"

    def message_in(self, texts: Texts) -> str:
        return texts.gettext("The image was made but could not be sent. Please try again.")


class DeliveryFailed(ChatError):
    """The image was made, but the chat refused it; it may be kept for a retry."""

    kind = "delivery_failed"

    def __init__(self, detail: str, *, job_id: str, kept_for_s: float | None) -> None:
        super().__init__(detail)
        self.job_id = job_id
        self.kept_for_s = kept_for_s

    def message_in(self, texts: Texts) -> str:
        if self.kept_for_s is None:
            return texts.gettext("The image was made but could not be sent. Please try again.")
        return texts.gettext(
            "The image was made but could not be sent. It is kept for "
            "{wait}: send /image retry {job_id} to try again.",
            wait=format_wait(self.kept_for_s, texts),
            job_id=self.job_id,
        )


class _ModelPaused(RequestRejected):
    """A model that takes no requests for a while, and another one to use meanwhile."""

    #: What the log line adds after "<model> paused for N s".
    _until = ""

    def __init__(self, model: str, retry_after_s: float, fallback: str | None = None) -> None:
        super().__init__(f"{model} paused for {retry_after_s:.0f} s{self._until}")
        self.model = model
        self.retry_after_s = retry_after_s
        self.fallback = fallback


class ModelUnavailable(_ModelPaused):
    """The model's circuit breaker is open: new requests are refused at once."""

    kind = "model_unavailable"

    def message_in(self, texts: Texts) -> str:
        wait = format_wait(self.retry_after_s, texts)
        if self.fallback:
            return texts.gettext(
                "The {model} worker is failing right now, so new {model} images are "
                "paused for about {wait}. Try again then, or use {fallback}.",
                model=self.model,
                wait=wait,
                fallback=self.fallback,
            )
        return texts.gettext(
            "The {model} worker is failing right now, so new {model} images are "
            "paused for about {wait}. Try again then, or use another model (/image models).",
            model=self.model,
            wait=wait,
        )


class PausedUntilReset(_ModelPaused):
    """The model's daily budget (or its worker's quota) is used up until 00:00 UTC.

    Told to new requests at once and to waiting jobs when their turn comes; it
    is not the worker's failure, so the user's slot is given back.
    """

    kind = "paused_until_reset"
    _until = " until 00:00 UTC"

    def message_in(self, texts: Texts) -> str:
        wait = format_wait(self.retry_after_s, texts)
        if self.fallback:
            return texts.gettext(
                "{model} has used up today's images; it comes back at 00:00 UTC "
                "(in {wait}). Until then, use {fallback}.",
                model=self.model,
                wait=wait,
                fallback=self.fallback,
            )
        return texts.gettext(
            "{model} has used up today's images; it comes back at 00:00 UTC "
            "(in {wait}). Until then, use another model (/image models).",
            model=self.model,
            wait=wait,
        )


class OwnerOnly(RequestRejected):
    kind = "owner_only"

    def __init__(self, command: str) -> None:
        super().__init__(f"{command} is for the owner")
        self.command = command

    def message_in(self, texts: Texts) -> str:
        return texts.gettext("Only the bot's owner can use {command}.", command=self.command)


class UnknownJob(RequestRejected):
    """``/image again`` or ``/image resend`` named no job of this user."""

    kind = "unknown_job"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id}")
        self.job_id = job_id

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "You have no image {job_id}. See your images and their ids with /image history.",
            job_id=self.job_id,
        )


class UnknownLanguage(RequestRejected):
    """``/image lang`` named a language there is no catalogue for."""

    kind = "unknown_language"

    def __init__(self, language: str, available: list[str]) -> None:
        super().__init__(f"no language {language}")
        self.language = language
        self.available = available

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "There is no language '{language}'. Available: {codes}, e.g. /image lang {example}.",
            language=self.language,
            codes=", ".join(self.available),
            example=self.available[-1],
        )


class ImageGone(RequestRejected):
    kind = "image_gone"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"image of {job_id} no longer kept")
        self.job_id = job_id

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "The image of {job_id} is no longer kept (or was never made). "
            "Make it again with /image again {job_id}.",
            job_id=self.job_id,
        )


class NoImageReplied(RequestRejected):
    """``/image again`` (or ``file``, ``resend``) with no id, not sent as a reply to an image."""

    kind = "no_image_replied"

    def __init__(self, verb: str) -> None:
        super().__init__(f"/image {verb} without an image")
        self.verb = verb

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "Send /image {verb} as a reply to one of your images, or name the image: "
            "/image {verb} <id> (your images and their ids: /image history).",
            verb=self.verb,
        )


class NotYourButton(RequestRejected):
    """A one-tap action (a button) pressed by someone other than the job's owner."""

    kind = "not_your_button"

    def __init__(self) -> None:
        super().__init__("a button of someone else's job")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext("Only the person who asked for this image can use its buttons.")


class DefaultsLocked(RequestRejected):
    """``/image set`` from someone the operator has not named (only their chat is allowed)."""

    kind = "defaults_locked"

    def __init__(self) -> None:
        super().__init__("not trusted with this chat's defaults")

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "Only the bot's owner, or someone the owner lists in ALLOWED_USER_IDS, can change "
            "this chat's defaults. /image set shows them; your own flags always win."
        )


class NothingToRetry(RequestRejected):
    kind = "nothing_to_retry"

    def __init__(self, job_id: str) -> None:
        super().__init__(f"nothing kept for {job_id}")
        self.job_id = job_id

    def message_in(self, texts: Texts) -> str:
        return texts.gettext(
            "No unsent image {job_id} of yours is kept. Images that could not be "
            "sent are kept for a limited time; generate it again with /image=...",
            job_id=self.job_id,
        )


class TelegramUnreachable(ChatError):
    """Connecting to Telegram failed; ``sakaibot run`` stops instead of running blind."""

    kind = "telegram_unreachable"

    def __init__(self, detail: str, *, during_login: bool = False) -> None:
        super().__init__(detail)
        self.during_login = during_login

    def message_in(self, texts: Texts) -> str:
        # Read on the operator's terminal (sakaibot run/login), never in a chat: English.
        if self.during_login:
            return (
                f"Could not reach Telegram ({self}). Check the network connection (and "
                "TELEGRAM_SERVER, if you set it), then run `sakaibot login` again."
            )
        return (
            f"Could not connect to Telegram ({self}). Check the network (and "
            "TELEGRAM_SESSION or the session file), then start SakaiBot again."
        )


#: Why ``sakaibot login`` stopped, each with one line in :class:`LoginFailed`.
LoginProblem = Literal[
    "phone_invalid",
    "no_account",
    "phone_banned",
    "code_wrong",
    "code_expired",
    "password_wrong",
    "bot_token_invalid",
    "flood",
    "input_ended",
    "refused",
]


class LoginFailed(SakaiBotError):
    """``sakaibot login`` could not log in; nothing was saved and the user is told why.

    ``detail`` is the phone number for the problems about a number and Telegram's
    error name for ``refused``; ``attempts`` counts wrong codes or passwords.
    """

    kind = "login_failed"

    def __init__(
        self,
        problem: LoginProblem,
        *,
        detail: str = "",
        attempts: int = 0,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(f"{problem} {detail}".strip())
        self.problem = problem
        self.detail = detail
        self.attempts = attempts
        self.retry_after_s = retry_after_s

    def message_in(self, texts: Texts) -> str:
        # Read on the operator's terminal (sakaibot login), never in a chat: English.
        again = "run `sakaibot login` again"
        times = plural(self.attempts, "time")
        match self.problem:
            case "phone_invalid":
                return (
                    f"Telegram does not take {self.detail} as a phone number. Write it in "
                    "international format, + and the country code first (e.g. +44...), "
                    f"and {again}."
                )
            case "no_account":
                return (
                    f"Telegram has no account with the number {self.detail}. Check the number, "
                    "or create the account in an official Telegram app first (SakaiBot cannot "
                    f"sign up), then {again}."
                )
            case "phone_banned":
                return (
                    f"Telegram has banned the number {self.detail}, so it cannot log in. "
                    "Ask Telegram's support from an official app, or log in with another account."
                )
            case "code_wrong":
                return (
                    f"The login code was wrong {times}, so the login stopped. {again.capitalize()} "
                    "and type the code from Telegram's newest message."
                )
            case "code_expired":
                return (
                    "The login code has expired (a code sent on in a Telegram chat expires at "
                    f"once). {again.capitalize()} and type the new code within a few minutes."
                )
            case "password_wrong":
                return (
                    f"The two-step verification password was wrong {times}, so the login "
                    f"stopped. {again.capitalize()}; a forgotten password can be reset in an "
                    "official Telegram app (Settings, Privacy and Security, Two-Step Verification)."
                )
            case "bot_token_invalid":
                return (
                    "Telegram did not accept the bot token. Copy it again from @BotFather "
                    "(/mybots, API Token) and run `sakaibot login --bot-token` again."
                )
            case "flood":
                if self.retry_after_s is None:
                    return (
                        "Telegram has seen too many login attempts for this number. "
                        f"Wait a few hours, then {again}."
                    )
                return (
                    f"Telegram asks to wait {format_wait(self.retry_after_s)} before the next "
                    f"login attempt (too many recent attempts). Then {again}."
                )
            case "input_ended":
                return (
                    "The input ended before the login was finished. Run `sakaibot login` in a "
                    "terminal, where it can ask for the phone number, code and password."
                )
            case "refused":
                return (
                    f"Telegram refused the login ({self.detail}). {again.capitalize()}; "
                    "`sakaibot -v login` shows Telegram's whole answer."
                )


class FloodWait(ChatError):
    kind = "flood_wait"

    def __init__(self, retry_after_s: float) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(f"flood wait of {retry_after_s:.0f} s")


class MessageNotModified(ChatError):
    kind = "not_modified"


#: The endings that are the user's own doing, and so keep their rate-limit
#: slot: a prompt the image service filtered, and a job the user cancelled
#: (else submit-then-cancel would pass any limit). Every other failure is given
#: back (defect 5 of the original design): the bot validates prompts and flags
#: before queueing, so a worker, an LLM or a chat that refuses, breaks or
#: cannot be reached is not the user's fault.
#: Decided by ``kind``, not by class, so an error that happened in another
#: process (a generation worker on Redis) and came back as text counts the same.
CHARGED_KINDS = frozenset({ContentFiltered.kind, JobCancelled.kind})


class NothingToCancel(RequestRejected):
    """``/image cancel`` found no waiting or running job of this user to cancel."""

    kind = "nothing_to_cancel"

    def __init__(self, job_id: str | None, *, running: bool = False) -> None:
        self.job_id = job_id
        self.running = running
        super().__init__(f"nothing to cancel ({job_id or 'newest'})")

    def message_in(self, texts: Texts) -> str:
        if self.running:
            return texts.gettext(
                "Job {job_id} is already being sent and can no longer be "
                "cancelled; the image will arrive shortly.",
                job_id=str(self.job_id),
            )
        if self.job_id is None:
            return texts.gettext(
                "You have no images waiting or being made to cancel. "
                "See your jobs with /image status."
            )
        return texts.gettext(
            "You have no waiting or running job {job_id}. "
            "See your jobs and their ids with /image status.",
            job_id=self.job_id,
        )


#: Generation failures that may cross a process boundary (a worker on Redis
#: answering a front end), by ``kind``. Where two classes share a kind the
#: broader one is rebuilt: ``worker_unavailable`` comes back as
#: :class:`TransientWorkerError`, which the breaker treats as :class:`WorkerGaveUp`.
WIRE_KINDS: dict[str, type[GenerationError]] = {
    cls.kind: cls
    for cls in (
        GenerationError,
        PermanentWorkerError,
        WorkerGaveUp,
        TransientWorkerError,
        WorkerTimeout,
        WorkerAuthError,
        WorkerBadRequest,
        ContentFiltered,
        QuotaExhausted,
        InvalidImage,
        ImageTooLarge,
        JobSetAside,
        CancelledInQueue,
    )
}


def from_wire(
    kind: str,
    message: str,
    detail: str,
    *,
    model: str = "",
    messages: dict[str, str] | None = None,
) -> GenerationError:
    """Rebuild a failure sent by another process as the same exception class.

    The result is an instance of the class registered for ``kind`` in
    :data:`WIRE_KINDS` (:class:`GenerationError` for a kind this version does
    not know), so code on this side uses ``isinstance`` as it would for a local
    error, and it tells the user ``message``, the words the other side chose
    (or, from ``messages``, its words in the chat's language).
    """
    cls = _RECEIVED.get(kind, _RECEIVED[GenerationError.kind])
    error = cls.__new__(cls)
    GenerationError.__init__(error, detail, model=model)
    error.received_message = message
    error.received_messages = messages or {}
    return error


class _Received(GenerationError):
    """Mixed in first by :data:`_RECEIVED`: the user message came over the wire."""

    received_message: str = ""
    #: The same message in each language the other side offers, by language code.
    received_messages: dict[str, str] = {}  # noqa: RUF012 (replaced per instance)
    #: Defaults for what the subclasses' own constructors would have set.
    retry_after_s: float | None = None
    attempts: int = 0
    deliveries: int = 0
    size_bytes: int = 0
    limit_bytes: int = 0

    def message_in(self, texts: Texts) -> str:
        # The other process chose the words, in each language (shared/worker.py).
        return self.received_messages.get(texts.language, self.received_message)


#: Each class of :data:`WIRE_KINDS` as received: the same class, with the user
#: message it was sent with (a table of types, fixed at import).
_RECEIVED: dict[str, type[_Received]] = {
    kind: type(cls.__name__, (_Received, cls), {"__module__": cls.__module__})
    for kind, cls in WIRE_KINDS.items()
}
