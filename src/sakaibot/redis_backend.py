"""Shared state in Redis, so several bot processes and generation workers act as one bot.

The in-process :class:`~sakaibot.limits.SlidingWindowLimiter` and
:class:`~sakaibot.queues.JobQueues` only see their own process. This adapter
(the only module that imports ``redis``) keeps the same state in one Redis:

- **rate windows** per user (:meth:`RedisBackend.admit`, :meth:`~RedisBackend.refund`),
  deciding exactly as :class:`~sakaibot.limits.SlidingWindowLimiter` does;
- **one FIFO queue per model** with its bounds, positions and cancellation
  (:meth:`~RedisBackend.enqueue`, :meth:`~RedisBackend.position`, :meth:`~RedisBackend.cancel`);
- **leases** that let workers in other processes take jobs with a visibility
  timeout (:meth:`~RedisBackend.claim`, :meth:`~RedisBackend.renew`,
  :meth:`~RedisBackend.complete`, :meth:`~RedisBackend.reap`);
- **results routed back** to the front end that accepted the job, the only one
  holding its Telegram session (:meth:`~RedisBackend.publish_result`,
  :meth:`~RedisBackend.next_result`, :meth:`~RedisBackend.ack_result`);
- a **delivery record** for exactly-once sending (:meth:`~RedisBackend.mark_delivered`);
- the **result cache** index (:meth:`~RedisBackend.cache_get` and friends).

Every operation that reads and then writes is one Lua script, so it is atomic
however many processes share the Redis. Time is always passed in (``now_s``),
never read here: it must be the same clock in every process, i.e. wall-clock
``time.time()``. Every key lives under a prefix (see :class:`RedisKeys`).

Requirements on the Redis: a single instance or primary (not Cluster: the
scripts touch keys derived at run time, e.g. a job's hash from the id they pop),
with ``maxmemory-policy noeviction``: an evicted job record or pending counter
would silently lose or miscount jobs.

Every :class:`redis.exceptions.RedisError` becomes
:class:`~sakaibot.errors.StoreUnavailable` in one place (:meth:`RedisBackend._translated`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from sakaibot.errors import QueueFull, StoreUnavailable, TooManyPending
from sakaibot.limits import Denial, RateWindow

#: How long a delivery record is kept by default: far longer than any retry of a result.
DELIVERED_TTL_S: Final = 7 * 86400.0
_URL_SCHEMES: Final = ("redis", "rediss", "unix")
_DEFAULT_PORT: Final = 6379

# -- Lua scripts ---------------------------------------------------------------
#
# Conventions: KEYS are the keys a script touches, ARGV the values. Scripts that
# answer "did it happen" return 1 or 0. Numbers that must round-trip exactly
# (stamps, cut-offs) travel as Python's repr() strings and are only compared by
# Redis itself, never formatted by Lua (whose tostring keeps 14 digits).

# KEYS[1] the user's stamps. ARGV[1] now, ARGV[2] prune cut-off (now - longest window),
# ARGV[3] the new member, ARGV[4] key TTL in ms, then per window, shortest first:
# limit, window_s, cut-off (now - window_s). Returns {0} when recorded, else
# {window number (1-based), score of the oldest stamp that still blocks it}.
_ADMIT: Final = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[2])
local worst, worst_retry, worst_oldest = 0, 0, false
local number = 0
for i = 5, #ARGV, 3 do
  number = number + 1
  local limit = tonumber(ARGV[i])
  local in_window = redis.call('ZCOUNT', key, '(' .. ARGV[i + 2], '+inf')
  if in_window >= limit then
    -- The slot frees when the oldest request that still blocks leaves the window.
    local oldest = redis.call('ZRANGE', key, -limit, -limit, 'WITHSCORES')[2]
    local retry = tonumber(oldest) + tonumber(ARGV[i + 1]) - now
    -- The same comparison as SlidingWindowLimiter.check, so ties break the same way.
    if worst == 0 or retry > worst_retry then
      worst, worst_retry, worst_oldest = number, math.max(retry, 0), oldest
    end
  end
end
if worst > 0 then
  return {worst, worst_oldest}
end
redis.call('ZADD', key, ARGV[1], ARGV[3])
redis.call('PEXPIRE', key, ARGV[4])
return {0}
"""

# KEYS[1] the user's stamps. ARGV[1] the stamp. Removes one request made at that stamp.
_REFUND: Final = """
local found = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[1], 'LIMIT', 0, 1)
if #found == 0 then
  return 0
end
redis.call('ZREM', KEYS[1], found[1])
return 1
"""

# A user's pending counter goes down; a counter at zero is deleted, so the
# number of keys follows the number of users with live jobs, not of users ever.
_DECREMENT_PENDING: Final = """
local function decrement_pending(key)
  if redis.call('DECR', key) <= 0 then
    redis.call('DEL', key)
  end
end
"""

# KEYS[1] waiting, KEYS[2] job hash, KEYS[3] user's pending, KEYS[4] sequence.
# ARGV[1] job id, ARGV[2] payload, ARGV[3] user, ARGV[4] max waiting,
# ARGV[5] max pending, ARGV[6] model.
# Returns {0, position} | {1, waiting} queue full | {2, pending} too many | {3, 0} id taken.
_ENQUEUE: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then
  -- The same job again (a caller retrying after a lost reply) is not queued twice.
  local rank = redis.call('ZRANK', KEYS[1], ARGV[1])
  if rank and redis.call('HGET', KEYS[2], 'payload') == ARGV[2]
      and redis.call('HGET', KEYS[2], 'user') == ARGV[3] then
    return {0, rank + 1}
  end
  return {3, 0}
end
local waiting = redis.call('ZCARD', KEYS[1])
if waiting >= tonumber(ARGV[4]) then
  return {1, waiting}
end
local pending = tonumber(redis.call('GET', KEYS[3]) or '0')
if pending >= tonumber(ARGV[5]) then
  return {2, pending}
end
-- One sequence for all models: a job's place is its acceptance order, which
-- reap() reuses to put an expired job back ahead of every later one.
local seq = redis.call('INCR', KEYS[4])
redis.call('ZADD', KEYS[1], seq, ARGV[1])
redis.call('HSET', KEYS[2], 'payload', ARGV[2], 'user', ARGV[3], 'model', ARGV[6], 'seq', seq)
redis.call('INCR', KEYS[3])
return {0, redis.call('ZRANK', KEYS[1], ARGV[1]) + 1}
"""

# KEYS[1] waiting, KEYS[2] job hash, KEYS[3] user's pending. ARGV[1] job id, ARGV[2] user.
_CANCEL: Final = (
    _DECREMENT_PENDING
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
-- Only the owner may cancel, as with JobQueues.cancel.
if redis.call('HGET', KEYS[2], 'user') ~= ARGV[2] then
  return 0
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
decrement_pending(KEYS[3])
return 1
"""
)

# KEYS[1] waiting, KEYS[2] leases. ARGV[1] job-hash key prefix, ARGV[2] worker,
# ARGV[3] lease deadline. Returns {job id, payload} or false.
_CLAIM: Final = """
while true do
  local popped = redis.call('ZPOPMIN', KEYS[1])
  if #popped == 0 then
    return false
  end
  local id = popped[1]
  local job = ARGV[1] .. id
  local payload = redis.call('HGET', job, 'payload')
  if payload then
    redis.call('ZADD', KEYS[2], ARGV[3], id)
    redis.call('HSET', job, 'worker', ARGV[2])
    return {id, payload}
  end
  -- No record: only possible if Redis evicted it (noeviction is required);
  -- there is nothing to run, so go on to the next job rather than stall.
end
"""

# KEYS[1] leases, KEYS[2] job hash. ARGV[1] job id, ARGV[2] worker, ARGV[3] new deadline.
_RENEW: Final = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('HGET', KEYS[2], 'worker') ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[1])
return 1
"""

# KEYS[1] leases, KEYS[2] job hash, KEYS[3] user's pending. ARGV[1] job id,
# ARGV[2] worker, ARGV[3] user. Returns 1 done, 0 not held, -1 not the job's user.
_COMPLETE: Final = (
    _DECREMENT_PENDING
    + """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
if redis.call('HGET', KEYS[2], 'worker') ~= ARGV[2] then
  return 0
end
if redis.call('HGET', KEYS[2], 'user') ~= ARGV[3] then
  return -1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
decrement_pending(KEYS[3])
return 1
"""
)

# KEYS[1] waiting, KEYS[2] leases. ARGV[1] job-hash key prefix, ARGV[2] now.
# Returns the ids put back, earliest deadline first.
_REAP: Final = """
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[2])
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[2], id)
  local job = ARGV[1] .. id
  redis.call('HDEL', job, 'worker')
  -- Back at its original sequence: ahead of every job accepted after it, which
  -- is all of the waiting ones unless an older job was put back too.
  local seq = redis.call('HGET', job, 'seq')
  if seq then
    redis.call('ZADD', KEYS[1], seq, id)
  end
end
return expired
"""

# KEYS[1] the front end's results, KEYS[2] the image key. ARGV[1] the list item,
# ARGV[2] image TTL in ms, ARGV[3] '1' when an image comes, ARGV[4] the image.
_PUBLISH: Final = """
if ARGV[3] == '1' then
  redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[2])
else
  -- No stale image from an earlier publication of the same job.
  redis.call('DEL', KEYS[2])
end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

# KEYS[1] the front end's processing list, KEYS[2] the image key. ARGV[1] "<job id>\\n".
_ACK: Final = """
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if string.sub(item, 1, #ARGV[1]) == ARGV[1] then
    removed = removed + redis.call('LREM', KEYS[1], 0, item)
  end
end
redis.call('DEL', KEYS[2])
return removed
"""

# Cache entries expire on their own; the index remembers each entry's expiry
# (by the Redis clock, the one expiring them) so counting and clearing need no SCAN.
_REDIS_NOW_MS: Final = """
local function redis_now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS[1] entry hash, KEYS[2] index. ARGV[1] entry JSON, ARGV[2] image, ARGV[3] TTL ms,
# ARGV[4] the cache key (index member).
_CACHE_PUT: Final = (
    _REDIS_NOW_MS
    + """
local now_ms = redis_now_ms()
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'entry', ARGV[1], 'image', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)
return 1
"""
)

# KEYS[1] index.
_CACHE_COUNT: Final = (
    _REDIS_NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', redis_now_ms())
return redis.call('ZCARD', KEYS[1])
"""
)

# KEYS[1] index. ARGV[1] entry key prefix. Returns how many entries were deleted.
_CACHE_CLEAR: Final = """
local removed = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  removed = removed + redis.call('DEL', ARGV[1] .. key)
end
redis.call('DEL', KEYS[1])
return removed
"""


@dataclass(frozen=True)
class RedisKeys:
    """Every key the backend uses, all under ``prefix``.

    The kind of key comes before the free-form id, so no id (a model, a user, a
    front end) can make one kind of key collide with another.
    """

    prefix: str

    def rate(self, user_id: str) -> str:
        """ZSET: the user's accepted request stamps (member ``"<stamp>:<random>"``)."""
        return f"{self.prefix}:rate:{user_id}"

    @property
    def sequence(self) -> str:
        """STRING: the global acceptance counter that orders every queue."""
        return f"{self.prefix}:seq"

    def pending(self, user_id: str) -> str:
        """STRING: the user's jobs waiting or running, all models together."""
        return f"{self.prefix}:pending:{user_id}"

    def waiting(self, model: str) -> str:
        """ZSET: the model's waiting job ids, scored by acceptance sequence."""
        return f"{self.prefix}:waiting:{model}"

    def leases(self, model: str) -> str:
        """ZSET: the model's running job ids, scored by lease deadline."""
        return f"{self.prefix}:leases:{model}"

    @property
    def job_prefix(self) -> str:
        return f"{self.prefix}:job:"

    def job(self, job_id: str) -> str:
        """HASH: ``payload``, ``user``, ``model``, ``seq``, and ``worker`` while leased."""
        return f"{self.job_prefix}{job_id}"

    def results(self, frontend_id: str) -> str:
        """LIST: results not yet taken by the front end, items ``"<job id>\\n<result JSON>"``."""
        return f"{self.prefix}:results:{frontend_id}"

    def processing(self, frontend_id: str) -> str:
        """LIST: results taken by the front end but not acknowledged."""
        return f"{self.prefix}:processing:{frontend_id}"

    def result_image(self, job_id: str) -> str:
        """STRING (with a TTL): a published result's image bytes."""
        return f"{self.prefix}:result-image:{job_id}"

    def delivered(self, job_id: str) -> str:
        """STRING (with a TTL): the chat message id the job's image was delivered as."""
        return f"{self.prefix}:delivered:{job_id}"

    @property
    def cache_prefix(self) -> str:
        return f"{self.prefix}:cache:"

    def cache(self, key: str) -> str:
        """HASH (with a TTL): ``entry`` (JSON) and ``image`` (bytes)."""
        return f"{self.cache_prefix}{key}"

    @property
    def cache_index(self) -> str:
        """ZSET: every cache key, scored by its expiry in ms by the Redis clock."""
        return f"{self.prefix}:cache-index"


#: One result for a front end: job id, result JSON, image bytes (``None`` if none or expired).
PublishedResult = tuple[str, str, bytes | None]


class RedisBackend:
    """Rate windows, queues, leases, results and the cache of many processes, in one Redis.

    Call :meth:`open` before anything else and :meth:`close` at the end. Every
    method raises :class:`~sakaibot.errors.StoreUnavailable` when Redis cannot
    be reached or fails; the object stays usable and reconnects by itself once
    Redis is back. A Redis restarted without persistence comes back empty.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sakaibot",
        connect_timeout_s: float = 5.0,
        reply_timeout_s: float = 30.0,
    ) -> None:
        """``url`` is ``redis://[:password@]host:port/db``, ``rediss://...`` or ``unix://path``.

        A call fails with :class:`StoreUnavailable` when connecting takes longer
        than ``connect_timeout_s`` or a reply longer than ``reply_timeout_s``
        (a Redis gone silent must not hang the bot). Raises :class:`ValueError`
        for a URL that is not a Redis URL or an empty prefix.
        """
        parts = urlsplit(url)
        if parts.scheme not in _URL_SCHEMES:
            raise ValueError(
                "the Redis URL must start with redis://, rediss:// or unix://, "
                "e.g. redis://localhost:6379/0"
            )
        if not prefix or any(c.isspace() for c in prefix):
            raise ValueError(f"the Redis key prefix {prefix!r} must be non-empty, without spaces")
        self._url = url
        # Only the place goes into messages: the URL may carry a password.
        if parts.scheme == "unix":
            self._where = parts.path
        else:
            self._where = f"{parts.hostname or 'localhost'}:{parts.port or _DEFAULT_PORT}"
        self._secret = unquote(parts.password) if parts.password else None
        self._connect_timeout_s = _positive(connect_timeout_s, "connect_timeout_s")
        self._reply_timeout_s = _positive(reply_timeout_s, "reply_timeout_s")
        self.keys = RedisKeys(prefix)
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    # -- connection ------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check that Redis answers; :class:`StoreUnavailable` if it does not."""
        if self._client is not None:
            return
        client = Redis.from_url(
            self._url,
            # No automatic retries: resending a script whose reply was lost could
            # run it twice (two enqueues, two claims). A pooled connection that
            # died while idle is still replaced, when it is checked out and
            # before anything is sent, so a restarted Redis is picked up again.
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=self._reply_timeout_s,
            # Maintenance notifications (a Redis Enterprise feature) make redis-py
            # skip the check above that replaces a connection the server closed.
            maint_notifications_config=MaintNotificationsConfig(enabled=False),
        )
        self._scripts = {
            name: client.register_script(source)
            for name, source in {
                "admit": _ADMIT,
                "refund": _REFUND,
                "enqueue": _ENQUEUE,
                "cancel": _CANCEL,
                "claim": _CLAIM,
                "renew": _RENEW,
                "complete": _COMPLETE,
                "reap": _REAP,
                "publish": _PUBLISH,
                "ack": _ACK,
                "cache_put": _CACHE_PUT,
                "cache_count": _CACHE_COUNT,
                "cache_clear": _CACHE_CLEAR,
            }.items()
        }
        try:
            with self._translated():
                await client.ping()
        except StoreUnavailable:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        """Close every connection; calling it again does nothing."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def _redis(self) -> Redis:
        if self._client is None:
            raise StoreUnavailable(f"Redis at {self._where} is not connected (call open() first)")
        return self._client

    async def _run(self, script: str, keys: Sequence[str], args: Sequence[str | bytes]) -> object:
        client = self._redis
        with self._translated():
            # EVALSHA, and EVAL + SCRIPT LOAD once after a Redis restart forgot the script.
            return await self._scripts[script](keys=keys, args=args, client=client)

    @contextmanager
    def _translated(self) -> Iterator[None]:
        """The one place where a Redis failure becomes :class:`StoreUnavailable`."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise StoreUnavailable(
                f"Redis at {self._where} is unreachable: {self._scrubbed(exc)}"
            ) from exc
        except RedisError as exc:
            raise StoreUnavailable(
                f"Redis at {self._where} failed: {type(exc).__name__}: {self._scrubbed(exc)}"
            ) from exc

    def _scrubbed(self, exc: BaseException) -> str:
        text = str(exc) or type(exc).__name__
        # redis-py does not quote passwords today; this keeps it true if it ever does.
        return text.replace(self._secret, "***") if self._secret else text

    # -- rate windows ------------------------------------------------------------

    async def admit(self, user_id: str, windows: list[RateWindow], now_s: float) -> Denial | float:
        """Check every window and, if one more request fits them all, record it.

        Returns the request's stamp (``now_s``, the token for :meth:`refund`), or
        the :class:`Denial` :meth:`SlidingWindowLimiter.check` would give for the
        same history: the window that frees last, and in how many seconds.
        Check and record are one atomic step, so concurrent front ends cannot
        both take the last slot. With no windows nothing is stored.
        """
        now_s = _finite(now_s, "now_s")
        if not windows:
            return now_s
        ordered = sorted(windows, key=lambda w: w.window_s)  # as the limiter orders them
        longest_s = ordered[-1].window_s
        args = [
            repr(now_s),
            repr(now_s - longest_s),
            # Unique, so two requests at the same instant are two members.
            f"{now_s!r}:{secrets.token_hex(8)}",
            str(max(1, math.ceil(longest_s * 1000))),
        ]
        for window in ordered:
            if window.limit < 1:
                raise ValueError(f"a rate window needs a limit of at least 1, not {window.limit}")
            args += [str(window.limit), repr(window.window_s), repr(now_s - window.window_s)]
        reply = _list(await self._run("admit", [self.keys.rate(user_id)], args))
        number = _int(reply[0])
        if number == 0:
            return now_s
        window = ordered[number - 1]
        # Redis chose the window with the same arithmetic; computing the wait here
        # keeps every digit (Lua would format it with 14).
        retry_after_s = float(_text(reply[1])) + window.window_s - now_s
        return Denial(retry_after_s=max(retry_after_s, 0.0), window=window)

    async def refund(self, user_id: str, stamp: float) -> bool:
        """Give back the request recorded at ``stamp``; ``False`` if it already left."""
        stamp = _finite(stamp, "stamp")
        return _int(await self._run("refund", [self.keys.rate(user_id)], [repr(stamp)])) == 1

    # -- queues --------------------------------------------------------------------

    async def enqueue(
        self,
        model: str,
        job_id: str,
        payload: str,
        *,
        user_id: str,
        max_waiting: int,
        max_pending: int,
        model_label: str | None = None,
    ) -> int:
        """Queue a job last on ``model``'s queue; returns its 1-based position.

        Raises :class:`QueueFull` when ``max_waiting`` jobs already wait for the
        model (the message names ``model_label``, default ``model``), and
        :class:`TooManyPending` when the user has ``max_pending`` jobs waiting or
        running on any model. Enqueueing the same job again while it still waits
        returns its position and counts it once (a retry after a lost reply);
        reusing an id otherwise raises :class:`ValueError`.
        """
        _check_id(job_id)
        keys = [
            self.keys.waiting(model),
            self.keys.job(job_id),
            self.keys.pending(user_id),
            self.keys.sequence,
        ]
        args = [job_id, payload, user_id, str(max_waiting), str(max_pending), model]
        reply = _list(await self._run("enqueue", keys, args))
        code, value = _int(reply[0]), _int(reply[1])
        if code == 1:
            raise QueueFull(model_label or model, max_waiting)
        if code == 2:
            raise TooManyPending(value, max_pending)
        if code == 3:
            raise ValueError(f"job id {job_id!r} is already queued or running")
        return value

    async def position(self, model: str, job_id: str) -> int | None:
        """The job's 1-based place on ``model``'s queue; ``None`` when it is not waiting."""
        with self._translated():
            rank = await self._redis.zrank(self.keys.waiting(model), job_id)
        return None if rank is None else _int(rank) + 1

    async def known(self, job_id: str) -> bool:
        """Whether the job is waiting or leased (``False`` once done, or lost with Redis)."""
        with self._translated():
            return bool(await self._redis.exists(self.keys.job(job_id)))

    async def waiting_count(self, model: str) -> int:
        with self._translated():
            return await self._redis.zcard(self.keys.waiting(model))

    async def running_count(self, model: str) -> int:
        """Jobs of ``model`` leased to a worker (including leases expired but not yet reaped)."""
        with self._translated():
            return await self._redis.zcard(self.keys.leases(model))

    async def waiting_ids(self, model: str, limit: int) -> list[str]:
        """The first ``limit`` job ids waiting for ``model``, in order."""
        if limit <= 0:
            return []
        with self._translated():
            ids = await self._redis.zrange(self.keys.waiting(model), 0, limit - 1)
        return [_text(job_id) for job_id in _list(ids)]

    async def cancel(self, model: str, job_id: str, user_id: str) -> bool:
        """Remove the user's WAITING job; ``False`` if it is not waiting or not theirs.

        A running job cannot be cancelled here: its worker holds it.
        """
        keys = [self.keys.waiting(model), self.keys.job(job_id), self.keys.pending(user_id)]
        return _int(await self._run("cancel", keys, [job_id, user_id])) == 1

    # -- leases --------------------------------------------------------------------

    async def claim(
        self, model: str, worker_id: str, lease_s: float, now_s: float
    ) -> tuple[str, str] | None:
        """Take the first waiting job of ``model`` until ``now_s + lease_s``.

        Returns ``(job_id, payload)``, or ``None`` when nothing waits. The worker
        must :meth:`renew` the lease before it ends, or :meth:`reap` gives the
        job to another worker.
        """
        deadline = _finite(now_s, "now_s") + _positive(lease_s, "lease_s")
        keys = [self.keys.waiting(model), self.keys.leases(model)]
        args = [self.keys.job_prefix, worker_id, repr(deadline)]
        reply = await self._run("claim", keys, args)
        if reply is None:
            return None
        job_id, payload = _list(reply)
        return _text(job_id), _text(payload)

    async def renew(
        self, model: str, job_id: str, worker_id: str, lease_s: float, now_s: float
    ) -> bool:
        """Extend the lease to ``now_s + lease_s``; ``False`` unless ``worker_id`` holds it.

        A lease past its deadline is still held until :meth:`reap` takes it back,
        so a late renewal succeeds if no reaper ran in between.
        """
        deadline = _finite(now_s, "now_s") + _positive(lease_s, "lease_s")
        keys = [self.keys.leases(model), self.keys.job(job_id)]
        return _int(await self._run("renew", keys, [job_id, worker_id, repr(deadline)])) == 1

    async def complete(self, model: str, job_id: str, worker_id: str, user_id: str) -> bool:
        """Finish a leased job: forget it and count it off the user's pending jobs.

        ``False``, changing nothing, unless ``worker_id`` still holds the lease
        (it expired and was reaped, maybe claimed by another worker): only one
        worker ever completes a job. ``user_id`` must be the job's user
        (:class:`ValueError` otherwise, changing nothing).
        """
        keys = [self.keys.leases(model), self.keys.job(job_id), self.keys.pending(user_id)]
        done = _int(await self._run("complete", keys, [job_id, worker_id, user_id]))
        if done == -1:
            raise ValueError(f"job {job_id!r} does not belong to user {user_id!r}")
        return done == 1

    async def reap(self, model: str, now_s: float) -> list[str]:
        """Put every lease whose deadline is ``<= now_s`` back on ``model``'s queue.

        Each job goes back at its original place, ahead of every job accepted
        after it, so it runs next; returns the ids, earliest deadline first.
        Any process may reap, as often as it likes.
        """
        keys = [self.keys.waiting(model), self.keys.leases(model)]
        args = [self.keys.job_prefix, repr(_finite(now_s, "now_s"))]
        return [_text(job_id) for job_id in _list(await self._run("reap", keys, args))]

    # -- results ---------------------------------------------------------------------

    async def publish_result(
        self,
        frontend_id: str,
        job_id: str,
        result_json: str,
        image: bytes | None,
        ttl_s: float,
    ) -> None:
        """Hand a job's result to the front end that accepted it.

        The result waits on the front end's list until taken (no TTL: a front end
        that comes back late still gets it); the image is kept ``ttl_s`` seconds.
        """
        _check_id(job_id)
        ttl_ms = str(max(1, math.ceil(_positive(ttl_s, "ttl_s") * 1000)))
        keys = [self.keys.results(frontend_id), self.keys.result_image(job_id)]
        args: list[str | bytes] = [
            f"{job_id}\n{result_json}",
            ttl_ms,
            "0" if image is None else "1",
            b"" if image is None else image,
        ]
        await self._run("publish", keys, args)

    async def next_result(self, frontend_id: str, timeout_s: float) -> PublishedResult | None:
        """Take the front end's next result, waiting up to ``timeout_s`` (0: do not wait).

        The result moves to the front end's processing list in the same step, so
        a crash before :meth:`ack_result` loses nothing: :meth:`unacked_results`
        gives it back. ``None`` when nothing came in time. The wait is cut to
        half the reply timeout, so that a long wait is never taken for a silent
        Redis; loop on it.
        """
        wait_s = min(_finite(timeout_s, "timeout_s"), self._reply_timeout_s / 2)
        source, target = self.keys.results(frontend_id), self.keys.processing(frontend_id)
        with self._translated():
            if wait_s > 0:
                # Sent raw: redis-py types BLMOVE's timeout as int, Redis takes fractions.
                execute: Callable[..., Awaitable[object]] = self._redis.execute_command
                item = await execute("BLMOVE", source, target, "LEFT", "RIGHT", repr(wait_s))
            else:
                item = await self._redis.lmove(source, target, "LEFT", "RIGHT")
        if item is None:
            return None
        return (await self._with_images([_bytes(item)]))[0]

    async def ack_result(self, frontend_id: str, job_id: str) -> None:
        """The front end is done with the result: drop it and its image (again: no-op)."""
        keys = [self.keys.processing(frontend_id), self.keys.result_image(job_id)]
        await self._run("ack", keys, [f"{job_id}\n"])

    async def unacked_results(self, frontend_id: str) -> list[PublishedResult]:
        """Results taken but not acknowledged, oldest first: handle them again on start."""
        with self._translated():
            items = await self._redis.lrange(self.keys.processing(frontend_id), 0, -1)
        return await self._with_images([_bytes(item) for item in _list(items)])

    async def _with_images(self, items: list[bytes]) -> list[PublishedResult]:
        parsed = [item.decode("utf-8").split("\n", 1) for item in items]
        if not parsed:
            return []
        with self._translated():
            images = await self._redis.mget(
                [self.keys.result_image(job_id) for job_id, _ in parsed]
            )
        return [
            (job_id, result_json, None if image is None else _bytes(image))
            for (job_id, result_json), image in zip(parsed, images, strict=True)
        ]

    # -- delivery record ---------------------------------------------------------------

    async def mark_delivered(
        self, job_id: str, message_id: int, *, ttl_s: float = DELIVERED_TTL_S
    ) -> bool:
        """Record that the job's image was sent as ``message_id``.

        ``False`` if it was recorded already: then it must not be delivered again.
        The record is kept ``ttl_s`` seconds, so records do not pile up forever.
        """
        ttl_ms = max(1, math.ceil(_positive(ttl_s, "ttl_s") * 1000))
        with self._translated():
            stored = await self._redis.set(
                self.keys.delivered(job_id), str(message_id), nx=True, px=ttl_ms
            )
        return bool(stored)

    async def delivered_message(self, job_id: str) -> int | None:
        """The message id the job was delivered as, or ``None``."""
        with self._translated():
            value = await self._redis.get(self.keys.delivered(job_id))
        return None if value is None else int(_text(value))

    # -- result cache --------------------------------------------------------------------

    async def cache_get(self, key: str) -> tuple[str, bytes] | None:
        """The cached entry JSON and image for ``key``, or ``None`` (absent or expired)."""
        with self._translated():
            entry, image = await self._redis.hmget(self.keys.cache(key), ["entry", "image"])
        if entry is None or image is None:
            return None
        return _text(entry), _bytes(image)

    async def cache_put(self, key: str, entry_json: str, image: bytes, ttl_s: float) -> None:
        """Store (or replace) an entry and its image for ``ttl_s`` seconds."""
        ttl_ms = str(max(1, math.ceil(_positive(ttl_s, "ttl_s") * 1000)))
        keys = [self.keys.cache(key), self.keys.cache_index]
        await self._run("cache_put", keys, [entry_json, image, ttl_ms, key])

    async def cache_clear(self) -> int:
        """Delete every cache entry; returns how many there were."""
        return _int(
            await self._run("cache_clear", [self.keys.cache_index], [self.keys.cache_prefix])
        )

    async def cache_count(self) -> int:
        """How many entries are cached and not expired."""
        return _int(await self._run("cache_count", [self.keys.cache_index], []))


# -- reply parsing: redis-py types replies loosely; these say what each must be ----------


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise TypeError(f"expected a string reply from Redis, got {type(value).__name__}")


def _bytes(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"expected a bytes reply from Redis, got {type(value).__name__}")


def _int(value: object) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, bytes | str):
        return int(value)
    raise TypeError(f"expected an integer reply from Redis, got {type(value).__name__}")


def _list(value: object) -> list[object]:
    if isinstance(value, list):
        return value
    raise TypeError(f"expected a list reply from Redis, got {type(value).__name__}")


def _finite(value: float, name: str) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, not {value!r}")
    return float(value)


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def _check_id(job_id: str) -> None:
    # A result is stored as "<job id>\n<result JSON>"; the id must not hide a newline.
    if not job_id or "\n" in job_id:
        raise ValueError(f"a job id must be non-empty, without newlines: {job_id!r}")
