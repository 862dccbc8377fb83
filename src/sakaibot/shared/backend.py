"""Redis mode's adapter: the only module that imports ``redis``.

Everything several processes share lives in one Redis, on the engine's own
machinery wherever it has one:

- **one stream per model with one consumer group of workers** is the queue
  (:meth:`RedisBackend.enqueue`, :meth:`~RedisBackend.take`): ``XADD`` queues,
  ``XREADGROUP`` takes, the group's pending-entries list records which worker
  holds which job, ``XAUTOCLAIM`` hands a job whose holder fell silent (idle time
  by the Redis server's clock) to the next worker, and the entry's delivery
  count says how many workers it has been given to;
- **one stream per front end** carries the answers back
  (:meth:`~RedisBackend.answer`, :meth:`~RedisBackend.next_answers`), read
  through a consumer group so that an answer not yet acknowledged is read
  again after a crash;
- **rate windows** per user (:meth:`~RedisBackend.admit`), deciding exactly as
  :class:`~sakaibot.limits.SlidingWindowLimiter` does;
- **the result cache**, capped at ``cache_max_bytes`` (:meth:`~RedisBackend.cache_put`);
- **the daily image budgets** (:meth:`~RedisBackend.budget_take`): a counter and a
  quota-error flag per model per UTC day of the Redis clock, expiring after that day.

A small Lua script does what no single command does, atomically: the bounded
add (the model's bound and the user's bound, shared by every front end, checked
in the same step as the ``XADD``), cancel-if-not-taken, position, the keep-alive
and the answer of the job's current holder only (fencing), the rate windows, the
cache cap and the budgets' count-unless-used-up. Every script that needs the
time reads the Redis server's ``TIME``: no machine's wall clock decides a lease,
a window, an eviction or which day a budget counts.

Requirements on the Redis: 6.2 or newer (``XAUTOCLAIM``, exclusive ``XRANGE``),
one instance or primary, not Cluster (scripts touch keys derived at run time);
``maxmemory-policy noeviction`` (an evicted queue entry or counter would lose
or miscount jobs; the cache keeps itself under its own cap instead).

Every :class:`redis.exceptions.RedisError` becomes
:class:`~sakaibot.errors.StoreUnavailable` in one place (:meth:`RedisBackend._translated`).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sakaibot.errors import QueueFull, StoreUnavailable, TooManyPending
from sakaibot.limits import Denial, RateWindow
from sakaibot.shared.interfaces import Answer, BudgetDay, Taken

_URL_SCHEMES: Final = ("redis", "rediss", "unix")
_DEFAULT_PORT: Final = 6379
#: The consumer group of the workers on every model's stream.
WORKERS_GROUP: Final = "workers"
#: The consumer group (and its one consumer) on every front end's answer stream.
FRONTEND_GROUP: Final = "frontend"

# -- Lua ----------------------------------------------------------------------------
#
# KEYS are the keys a script touches, ARGV the values. Times are whole
# microseconds or milliseconds from TIME: integers below 2^53, exact as Lua
# numbers, and passed back to Redis as numbers (never through tostring, which
# keeps 14 digits).

_NOW: Final = """
local function now_us()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
"""

# The group's last-delivered id, and whether a stream id comes after another.
_STREAM_HELPERS: Final = """
local function last_delivered(stream, group)
  for _, info in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
    local name, last = nil, nil
    for i = 1, #info, 2 do
      if info[i] == 'name' then name = info[i + 1] end
      if info[i] == 'last-delivered-id' then last = info[i + 1] end
    end
    if name == group then return last end
  end
  return nil
end
local function after(a, b)
  local a_ms, a_seq = string.match(a, '(%d+)-(%d+)')
  local b_ms, b_seq = string.match(b, '(%d+)-(%d+)')
  if tonumber(a_ms) ~= tonumber(b_ms) then return tonumber(a_ms) > tonumber(b_ms) end
  return tonumber(a_seq) > tonumber(b_seq)
end
local function held_by(stream, group, entry, consumer)
  if redis.call('EXISTS', stream) == 0 then return false end
  return #redis.call('XPENDING', stream, group, entry, entry, 1, consumer) == 1
end
local function decrement(key)
  if redis.call('DECR', key) <= 0 then redis.call('DEL', key) end
end
"""

# KEYS stream, job hash, user's pending. ARGV group, job id, payload, user,
# front end, max waiting, max pending, model.
# {0, position} queued | {1, waiting} model full | {2, pending} user full | {3, 0} known.
_ENQUEUE: Final = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {3, 0} end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
end
-- Entries are deleted once answered, so what is in the stream and not
-- delivered is what waits.
local waiting = redis.call('XLEN', KEYS[1]) - redis.call('XPENDING', KEYS[1], ARGV[1])[1]
if waiting >= tonumber(ARGV[6]) then return {1, waiting} end
local pending = tonumber(redis.call('GET', KEYS[3]) or '0')
if pending >= tonumber(ARGV[7]) then return {2, pending} end
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2], 'payload', ARGV[3])
redis.call('HSET', KEYS[2], 'entry', entry, 'user', ARGV[4], 'frontend', ARGV[5],
  'model', ARGV[8])
redis.call('INCR', KEYS[3])
return {0, waiting + 1}
"""

# KEYS stream, job hash. ARGV group, front end, pending-key prefix.
_CANCEL: Final = (
    _STREAM_HELPERS
    + """
local entry = redis.call('HGET', KEYS[2], 'entry')
if not entry or redis.call('HGET', KEYS[2], 'frontend') ~= ARGV[2] then return 0 end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = last_delivered(KEYS[1], ARGV[1])
if last and not after(entry, last) then return 0 end -- a worker has it
if redis.call('XDEL', KEYS[1], entry) == 0 then return 0 end
decrement(ARGV[3] .. redis.call('HGET', KEYS[2], 'user'))
redis.call('DEL', KEYS[2])
return 1
"""
)

# KEYS stream, job hash. ARGV group. -1 unknown, 0 taken, else the 1-based place.
_POSITION: Final = (
    _STREAM_HELPERS
    + """
local entry = redis.call('HGET', KEYS[2], 'entry')
if not entry then return -1 end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local last = last_delivered(KEYS[1], ARGV[1])
if last and not after(entry, last) then return 0 end
return #redis.call('XRANGE', KEYS[1], last and ('(' .. last) or '-', entry)
"""
)

# KEYS stream. ARGV group, consumer, entry. Resets the entry's idle time, only
# for the consumer that still holds it.
_KEEP: Final = (
    _STREAM_HELPERS
    + """
if not held_by(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""
)

# KEYS stream, answers stream, job hash. ARGV group, consumer, entry, job id,
# result JSON, '1' when an image comes, image, pending-key prefix, answers group.
_ANSWER: Final = (
    _STREAM_HELPERS
    + """
if not held_by(KEYS[1], ARGV[1], ARGV[3], ARGV[2]) then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
redis.call('XDEL', KEYS[1], ARGV[3])
local user = redis.call('HGET', KEYS[3], 'user')
if user then decrement(ARGV[8] .. user) end
-- The job's record stays until the front end has the answer: until then the
-- job is known, never taken for lost.
redis.call('HSET', KEYS[3], 'answered', '1')
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[2], ARGV[9], '0', 'MKSTREAM')
end
if ARGV[6] == '1' then
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[4], 'result', ARGV[5], 'image', ARGV[7])
else
  redis.call('XADD', KEYS[2], '*', 'job', ARGV[4], 'result', ARGV[5])
end
return 1
"""
)

# KEYS the user's stamps. ARGV member prefix, key TTL ms, how many requests,
# then per window, shortest first: limit, window in us. {0, now} recorded |
# {window number, oldest blocking stamp, now}.
_ADMIT: Final = (
    _NOW
    + """
local key = KEYS[1]
local now = now_us()
local count = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - tonumber(ARGV[#ARGV]))
local worst, worst_retry, worst_oldest, number = 0, 0, 0, 0
for i = 4, #ARGV, 2 do
  number = number + 1
  local limit, window = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  -- Stamps are whole microseconds: "after now - window" is ">= now - window + 1".
  if redis.call('ZCOUNT', key, now - window + 1, '+inf') + count > limit then
    -- The slots free when the newest request that still blocks leaves the window;
    -- more than the limit at once never fits (the whole window, as the limiter says).
    local oldest = now
    if count <= limit then
      local rank = -(limit - count + 1)
      oldest = tonumber(redis.call('ZRANGE', key, rank, rank, 'WITHSCORES')[2])
    end
    local retry = oldest + window - now
    if worst == 0 or retry > worst_retry then
      worst, worst_retry, worst_oldest = number, retry, oldest
    end
  end
end
if worst > 0 then return {worst, worst_oldest, now} end
for n = 1, count do
  redis.call('ZADD', key, now, ARGV[1] .. ':' .. n)
end
redis.call('PEXPIRE', key, ARGV[2])
return {0, now}
"""
)

# KEYS the user's stamps. ARGV the stamp in us. Removes one request made then.
_REFUND: Final = """
local stamp = tonumber(ARGV[1])
local found = redis.call('ZRANGEBYSCORE', KEYS[1], stamp - 1, stamp + 1, 'LIMIT', 0, 1)
if #found == 0 then return 0 end
redis.call('ZREM', KEYS[1], found[1])
return 1
"""

# KEYS index (by last use), expiry, sizes, total, use counter. ARGV entry-key
# prefix. Uses are numbered by a counter, not the clock: two uses in the same
# millisecond keep their order.
_CACHE_HELPERS: Final = (
    _NOW
    + """
local function forget(key)
  local size = tonumber(redis.call('HGET', KEYS[3], key) or '0')
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[1], key)
  redis.call('ZREM', KEYS[2], key)
  redis.call('DEL', ARGV[1] .. key)
  if size > 0 and redis.call('DECRBY', KEYS[4], size) <= 0 then redis.call('DEL', KEYS[4]) end
end
local function forget_expired(now_ms)
  for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms)) do
    forget(key)
  end
end
"""
)

# + ARGV key, entry JSON, image, TTL ms, max bytes. 1 kept, 0 larger than the cap.
_CACHE_PUT: Final = (
    _CACHE_HELPERS
    + """
local now_ms = math.floor(now_us() / 1000)
forget_expired(now_ms)
forget(ARGV[2])
local size = #ARGV[3] + #ARGV[4]
local cap = tonumber(ARGV[6])
if size > cap then return 0 end
local entry = ARGV[1] .. ARGV[2]
redis.call('HSET', entry, 'entry', ARGV[3], 'image', ARGV[4])
redis.call('PEXPIRE', entry, ARGV[5])
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[5]), ARGV[2])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], size)
local total = redis.call('INCRBY', KEYS[4], size)
while total > cap do
  forget(redis.call('ZRANGE', KEYS[1], 0, 0)[1]) -- the least recently used
  total = tonumber(redis.call('GET', KEYS[4]) or '0')
end
return 1
"""
)

# + ARGV key. {entry, image} or false; a hit counts as a use.
_CACHE_GET: Final = (
    _CACHE_HELPERS
    + """
local found = redis.call('HMGET', ARGV[1] .. ARGV[2], 'entry', 'image')
if not found[1] or not found[2] then return false end
redis.call('ZADD', KEYS[1], 'XX', redis.call('INCR', KEYS[5]), ARGV[2])
return found
"""
)

# {entries, bytes}
_CACHE_COUNT: Final = (
    _CACHE_HELPERS
    + """
forget_expired(math.floor(now_us() / 1000))
return {redis.call('ZCARD', KEYS[1]), tonumber(redis.call('GET', KEYS[4]) or '0')}
"""
)

_CACHE_CLEAR: Final = (
    _CACHE_HELPERS
    + """
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do forget(key) end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
return #keys
"""
)

# The UTC date of a day number (days since 1970-01-01) as ``yyyymmdd``: Howard
# Hinnant's civil_from_days, in floored divisions (Redis's Lua has no os.date).
_DAY_HELPERS: Final = """
local function fdiv(a, b) return math.floor(a / b) end
local function day_stamp(day)
  local z = day + 719468
  local era = fdiv(z, 146097)
  local doe = z - era * 146097
  local yoe = fdiv(doe - fdiv(doe, 1460) + fdiv(doe, 36524) - fdiv(doe, 146096), 365)
  local doy = doe - (365 * yoe + fdiv(yoe, 4) - fdiv(yoe, 100))
  local mp = fdiv(5 * doy + 2, 153)
  local d = doy - fdiv(153 * mp + 2, 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400
  if m <= 2 then y = y + 1 end
  return string.format('%04d%02d%02d', y, m, d)
end
"""

# ARGV count-key prefix, quota-key prefix, seconds kept past the day's end, step,
# value, then the models (the step's target first). The day is the Redis clock's.
# Steps: take (value: the limit, 0 for none; refused once used up or after the
# quota error), give (one back, never below 0), quota (the error was seen),
# restore (the count is at least value), read. {reset s, done, then per model:
# used, quota error seen}.
_BUDGET: Final = (
    _DAY_HELPERS
    + """
local now = tonumber(redis.call('TIME')[1])
local day = fdiv(now, 86400)
local reset = (day + 1) * 86400
local expire_at = reset + tonumber(ARGV[3])
local stamp = day_stamp(day)
local step, value, target = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local function count_key(model) return ARGV[1] .. model .. ':' .. stamp end
local function quota_key(model) return ARGV[2] .. model .. ':' .. stamp end
local function used(model) return tonumber(redis.call('GET', count_key(model)) or '0') end
local done = 1
if step == 'take' then
  if redis.call('EXISTS', quota_key(target)) == 1 or (value > 0 and used(target) >= value) then
    done = 0
  else
    redis.call('INCR', count_key(target))
    redis.call('EXPIREAT', count_key(target), expire_at)
  end
elseif step == 'give' then
  if used(target) > 0 and redis.call('DECR', count_key(target)) <= 0 then
    redis.call('DEL', count_key(target))
  end
elseif step == 'quota' then
  redis.call('SET', quota_key(target), '1', 'EXAT', expire_at)
elseif step == 'restore' then
  if value > used(target) then redis.call('SET', count_key(target), value, 'EXAT', expire_at) end
end
local reply = {reset, done}
for i = 6, #ARGV do
  table.insert(reply, used(ARGV[i]))
  table.insert(reply, redis.call('EXISTS', quota_key(ARGV[i])))
end
return reply
"""
)

#: How long a day's budget keys outlive the day: a front end whose clock is a
#: little behind still reads the day it believes it is in.
BUDGET_KEPT_PAST_DAY_S: Final = 3600

_SCRIPTS: Final = {
    "enqueue": _ENQUEUE,
    "cancel": _CANCEL,
    "position": _POSITION,
    "keep": _KEEP,
    "answer": _ANSWER,
    "admit": _ADMIT,
    "refund": _REFUND,
    "cache_put": _CACHE_PUT,
    "cache_get": _CACHE_GET,
    "cache_count": _CACHE_COUNT,
    "cache_clear": _CACHE_CLEAR,
    "budget": _BUDGET,
}


@dataclass(frozen=True)
class RedisKeys:
    """Every key the backend uses, all under ``prefix``.

    The kind of key comes before the free-form id, so no id (a model, a user, a
    front end) can make one kind of key collide with another.
    """

    prefix: str

    def queue(self, model: str) -> str:
        """STREAM (group ``workers``): the model's jobs, fields ``job`` and ``payload``."""
        return f"{self.prefix}:queue:{model}"

    def job(self, job_id: str) -> str:
        """HASH: ``entry``, ``user``, ``frontend``, ``model``, ``answered``; until the
        front end has the answer."""
        return f"{self.prefix}:job:{job_id}"

    @property
    def pending_prefix(self) -> str:
        return f"{self.prefix}:pending:"

    def pending(self, user_id: str) -> str:
        """STRING: the user's jobs in the shared queues, waiting or running, all models."""
        return f"{self.pending_prefix}{user_id}"

    def answers(self, frontend_id: str) -> str:
        """STREAM (group ``frontend``): the front end's answers: ``job``, ``result``, ``image``."""
        return f"{self.prefix}:answers:{frontend_id}"

    def rate(self, user_id: str) -> str:
        """ZSET: the user's accepted request stamps, scored in Redis microseconds."""
        return f"{self.prefix}:rate:{user_id}"

    @property
    def cache_prefix(self) -> str:
        return f"{self.prefix}:cache:"

    @property
    def cache_keys(self) -> list[str]:
        """ZSETs by last use and by expiry (ms), HASH of sizes, STRINGs of total bytes
        and of uses (the order of use)."""
        names = ("used", "expiry", "sizes", "bytes", "uses")
        return [f"{self.prefix}:cache-{name}" for name in names]

    @property
    def budget_prefix(self) -> str:
        return f"{self.prefix}:budget:"

    @property
    def budget_quota_prefix(self) -> str:
        return f"{self.prefix}:budget-quota:"

    def budget(self, model: str, day: date) -> str:
        """STRING: the images counted for ``model`` on the UTC ``day`` (``yyyymmdd``)."""
        return f"{self.budget_prefix}{model}:{day:%Y%m%d}"

    def budget_quota(self, model: str, day: date) -> str:
        """STRING: present once ``model``'s worker answered its quota error on ``day``."""
        return f"{self.budget_quota_prefix}{model}:{day:%Y%m%d}"


class RedisBackend:
    """Queues, answers, rate windows and the cache of many processes, in one Redis.

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
        cache_max_bytes: int = 100_000_000,
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
        if cache_max_bytes < 1:
            raise ValueError(f"cache_max_bytes must be at least 1, not {cache_max_bytes}")
        self._url = url
        # Only the place goes into messages: the URL may carry a password.
        if parts.scheme == "unix":
            self._where = parts.path
        else:
            self._where = f"{parts.hostname or 'localhost'}:{parts.port or _DEFAULT_PORT}"
        self._secret = unquote(parts.password) if parts.password else None
        self._connect_timeout_s = _positive(connect_timeout_s, "connect_timeout_s")
        self._reply_timeout_s = _positive(reply_timeout_s, "reply_timeout_s")
        self._cache_max_bytes = cache_max_bytes
        self.keys = RedisKeys(prefix)
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def longest_block_s(self) -> float:
        """The longest a blocking read may wait: half the reply timeout, so that
        a long wait is never taken for a silent Redis."""
        return self._reply_timeout_s / 2

    # -- connection ------------------------------------------------------------

    async def open(self) -> None:
        """Connect and check that Redis answers; :class:`StoreUnavailable` if it does not."""
        if self._client is not None:
            return
        client = Redis.from_url(
            self._url,
            # No automatic retries: resending a script whose reply was lost could
            # run it twice (two enqueues). A pooled connection that died while
            # idle is still replaced, when it is checked out and before anything
            # is sent, so a restarted Redis is picked up again. (The default
            # protocol, RESP2, keeps redis-py's maintenance notifications off,
            # which would skip that check.)
            retry=Retry(NoBackoff(), 0),
            socket_connect_timeout=self._connect_timeout_s,
            socket_timeout=self._reply_timeout_s,
        )
        self._scripts = {name: client.register_script(source) for name, source in _SCRIPTS.items()}
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

    async def _ensure_group(self, stream: str, group: str) -> None:
        """Create the stream and its group if either is missing (a fresh or restarted Redis)."""
        with self._translated():
            try:
                await self._redis.xgroup_create(stream, group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -- the queues: front end's side ------------------------------------------------

    async def enqueue(
        self,
        model: str,
        job_id: str,
        payload: str,
        *,
        user_id: str,
        frontend_id: str,
        max_waiting: int,
        max_pending: int,
        model_label: str | None = None,
    ) -> int:
        """Queue a job last on ``model``'s stream; returns its 1-based position.

        One atomic step checks both bounds, shared by every front end, and adds
        the entry: :class:`QueueFull` when ``max_waiting`` jobs already wait for
        the model (the message names ``model_label``, default ``model``),
        :class:`TooManyPending` when the user has ``max_pending`` jobs waiting or
        running on any model. A job already known (a retry after a lost reply, or
        a front end restarted mid-job) is not queued again: its position is
        returned (0 once a worker has it).
        """
        keys = [self.keys.queue(model), self.keys.job(job_id), self.keys.pending(user_id)]
        args = [
            WORKERS_GROUP,
            job_id,
            payload,
            user_id,
            frontend_id,
            str(max_waiting),
            str(max_pending),
            model,
        ]
        code, value = (_int(item) for item in _list(await self._run("enqueue", keys, args)))
        if code == 1:
            raise QueueFull(model_label or model, max_waiting)
        if code == 2:
            raise TooManyPending(value, max_pending)
        if code == 3:
            return await self.position(model, job_id) or 0
        return value

    async def position(self, model: str, job_id: str) -> int | None:
        """The job's 1-based place among the model's waiting jobs; 0 once a worker has
        it or its answer is on the way; ``None`` when Redis does not know it (lost)."""
        keys = [self.keys.queue(model), self.keys.job(job_id)]
        place = _int(await self._run("position", keys, [WORKERS_GROUP]))
        return None if place < 0 else place

    async def cancel(self, model: str, job_id: str, frontend_id: str) -> bool:
        """Take back the front end's job if no worker has taken it; ``False`` otherwise."""
        keys = [self.keys.queue(model), self.keys.job(job_id)]
        args = [WORKERS_GROUP, frontend_id, self.keys.pending_prefix]
        return _int(await self._run("cancel", keys, args)) == 1

    async def open_answers(self, frontend_id: str) -> None:
        """Make sure the front end's answer stream and group exist."""
        await self._ensure_group(self.keys.answers(frontend_id), FRONTEND_GROUP)

    async def next_answers(self, frontend_id: str, *, block_s: float) -> list[Answer]:
        """Answers not read yet, waiting up to ``block_s`` (cut to :attr:`longest_block_s`)."""
        return await self._read_answers(frontend_id, ">", block_s)

    async def unacked_answers(self, frontend_id: str) -> list[Answer]:
        """Answers read before but not acknowledged (a crash in between), oldest first."""
        return await self._read_answers(frontend_id, "0", None)

    async def _read_answers(
        self, frontend_id: str, since: str, block_s: float | None
    ) -> list[Answer]:
        stream = self.keys.answers(frontend_id)
        block_ms = None if block_s is None else _block_ms(min(block_s, self.longest_block_s))
        try:
            with self._translated():
                reply = await self._redis.xreadgroup(
                    FRONTEND_GROUP, frontend_id, {stream: since}, count=16, block=block_ms
                )
        except StoreUnavailable as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.open_answers(frontend_id)  # Redis restarted empty
            return []
        answers = []
        for entry_id, fields in _entries(reply):
            if not fields:
                continue  # deleted meanwhile
            image = fields.get(b"image")
            answers.append(
                Answer(
                    entry_id=entry_id,
                    job_id=_text(fields[b"job"]),
                    result_json=_text(fields[b"result"]),
                    image=None if image is None else _bytes(image),
                )
            )
        return answers

    async def ack_answer(self, frontend_id: str, answer: Answer) -> None:
        """The front end has the answer: drop it and the job's record (again: no-op)."""
        stream = self.keys.answers(frontend_id)
        with self._translated():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(stream, FRONTEND_GROUP, answer.entry_id)
                pipe.xdel(stream, answer.entry_id)
                pipe.delete(self.keys.job(answer.job_id))
                await pipe.execute()

    # -- the queues: worker's side --------------------------------------------------

    async def take(
        self, model: str, worker_id: str, *, lease_s: float, block_s: float
    ) -> Taken | None:
        """The next job of ``model`` for ``worker_id``, or ``None`` after ``block_s``.

        A job whose holder has not kept it alive for ``lease_s`` (idle time, by
        the Redis server's clock) comes first, so a dead worker's job runs next;
        then the oldest job no worker has had. The caller holds the job until it
        :meth:`answer`\\ s it, and keeps it with :meth:`keep` meanwhile.
        """
        stream = self.keys.queue(model)
        min_idle_ms = max(1, math.ceil(_positive(lease_s, "lease_s") * 1000))
        try:
            taken = await self._claim_idle(stream, worker_id, min_idle_ms)
            if taken is not None:
                return taken
            with self._translated():
                reply = await self._redis.xreadgroup(
                    WORKERS_GROUP,
                    worker_id,
                    {stream: ">"},
                    count=1,
                    block=_block_ms(min(block_s, self.longest_block_s)),
                )
        except StoreUnavailable as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(stream, WORKERS_GROUP)  # nothing queued yet, or a fresh Redis
            return None
        for entry_id, fields in _entries(reply):
            if fields:
                return _taken(entry_id, fields, deliveries=1)
        return None

    async def _claim_idle(self, stream: str, worker_id: str, min_idle_ms: int) -> Taken | None:
        start = "0-0"
        # XAUTOCLAIM scans a bounded part of the pending list per call; the list
        # holds at most the jobs running, so a few calls see all of it.
        for _ in range(100):
            with self._translated():
                reply = _list(
                    await self._redis.xautoclaim(
                        stream, WORKERS_GROUP, worker_id, min_idle_ms, start_id=start, count=1
                    )
                )
            start = _text(reply[0])
            for entry_id, fields in _pairs(reply[1]):
                if fields:
                    return _taken(
                        entry_id, fields, deliveries=await self._deliveries(stream, entry_id)
                    )
            if start == "0-0":
                return None
        return None

    async def _deliveries(self, stream: str, entry_id: str) -> int:
        with self._translated():
            rows = await self._redis.xpending_range(stream, WORKERS_GROUP, entry_id, entry_id, 1)
        return int(rows[0]["times_delivered"]) if rows else 1

    async def keep(self, model: str, worker_id: str, entry_id: str) -> bool:
        """Reset the job's idle time; ``False`` when ``worker_id`` no longer holds it
        (it was idle too long and another worker took it: its answer would be refused)."""
        keys = [self.keys.queue(model)]
        return _int(await self._run("keep", keys, [WORKERS_GROUP, worker_id, entry_id])) == 1

    async def answer(
        self,
        model: str,
        worker_id: str,
        taken: Taken,
        frontend_id: str,
        result_json: str,
        image: bytes | None,
    ) -> bool:
        """Send the job's answer to its front end and finish the job, in one step,
        only if ``worker_id`` still holds it; ``False`` (nothing sent) otherwise."""
        keys = [
            self.keys.queue(model),
            self.keys.answers(frontend_id),
            self.keys.job(taken.job_id),
        ]
        args: list[str | bytes] = [
            WORKERS_GROUP,
            worker_id,
            taken.entry_id,
            taken.job_id,
            result_json,
            "0" if image is None else "1",
            b"" if image is None else image,
            self.keys.pending_prefix,
            FRONTEND_GROUP,
        ]
        return _int(await self._run("answer", keys, args)) == 1

    # -- rate windows ------------------------------------------------------------

    async def admit(
        self, user_id: str, windows: list[RateWindow], count: int = 1
    ) -> Denial | float:
        """Check every window and, if ``count`` more requests fit them all, record them.

        Returns the request's stamp (seconds by the Redis clock, the token for
        :meth:`refund`), or the :class:`Denial` :meth:`SlidingWindowLimiter.check`
        would give for the same history. Check and record are one atomic step on
        the Redis server's clock, so front ends neither race for the last slot nor
        disagree about the time. With no windows nothing is stored.
        """
        if not windows:
            return 0.0
        ordered = sorted(windows, key=lambda w: w.window_s)  # as the limiter orders them
        args = [
            secrets.token_hex(8),
            str(max(1, math.ceil(ordered[-1].window_s * 1000))),
            str(count),
        ]
        for window in ordered:
            if window.limit < 1:
                raise ValueError(f"a rate window needs a limit of at least 1, not {window.limit}")
            args += [str(window.limit), str(_us(window.window_s))]
        reply = [
            _int(item) for item in _list(await self._run("admit", [self.keys.rate(user_id)], args))
        ]
        if reply[0] == 0:
            return reply[1] / 1_000_000
        window = ordered[reply[0] - 1]
        oldest_us, now_us = reply[1], reply[2]
        retry_after_s = (oldest_us + _us(window.window_s) - now_us) / 1_000_000
        return Denial(retry_after_s=max(retry_after_s, 0.0), window=window)

    async def refund(self, user_id: str, stamp: float) -> bool:
        """Give back the request recorded at ``stamp``; ``False`` if it already left."""
        if not math.isfinite(stamp):
            raise ValueError(f"stamp must be a finite number of seconds, not {stamp!r}")
        reply = await self._run("refund", [self.keys.rate(user_id)], [str(round(stamp * 1e6))])
        return _int(reply) == 1

    # -- result cache --------------------------------------------------------------------

    async def cache_get(self, key: str) -> tuple[str, bytes] | None:
        """The cached entry JSON and image for ``key``, or ``None`` (absent or expired)."""
        found = await self._run("cache_get", self.keys.cache_keys, [self.keys.cache_prefix, key])
        if found is None:
            return None
        entry, image = _list(found)
        return _text(entry), _bytes(image)

    async def cache_put(self, key: str, entry_json: str, image: bytes, ttl_s: float) -> bool:
        """Store (or replace) an entry and its image for ``ttl_s`` seconds, evicting the
        least recently used entries beyond the cap; ``False`` if it alone exceeds it."""
        ttl_ms = str(max(1, math.ceil(_positive(ttl_s, "ttl_s") * 1000)))
        args: list[str | bytes] = [
            self.keys.cache_prefix,
            key,
            entry_json,
            image,
            ttl_ms,
            str(self._cache_max_bytes),
        ]
        return _int(await self._run("cache_put", self.keys.cache_keys, args)) == 1

    async def cache_clear(self) -> int:
        """Delete every cache entry; returns how many there were."""
        return _int(await self._run("cache_clear", self.keys.cache_keys, [self.keys.cache_prefix]))

    async def cache_count(self) -> int:
        """How many entries are cached and not expired."""
        return (await self.cache_usage())[0]

    async def cache_usage(self) -> tuple[int, int]:
        """Entries cached and not expired, and the bytes they hold."""
        reply = _list(
            await self._run("cache_count", self.keys.cache_keys, [self.keys.cache_prefix])
        )
        return _int(reply[0]), _int(reply[1])

    # -- daily budgets -------------------------------------------------------------------

    async def budget_take(self, models: list[str], limit: int | None) -> BudgetDay:
        """Count one image for ``models[0]`` today unless it has used up ``limit``
        (``None``: no budget) or its worker answered the quota error today; ``done``
        says whether it was counted. Check and count are one step, for every front end."""
        if limit is not None and limit < 1:
            raise ValueError(f"a daily budget is at least 1 image, not {limit}")
        return await self._budget("take", models, limit or 0)

    async def budget_give_back(self, models: list[str]) -> BudgetDay:
        """Take back one image of ``models[0]`` today (none made); never below 0."""
        return await self._budget("give", models)

    async def budget_quota_hit(self, models: list[str]) -> BudgetDay:
        """``models[0]``'s worker answered its daily-quota error: paused until the reset."""
        return await self._budget("quota", models)

    async def budget_restore(self, models: list[str], used: int) -> BudgetDay:
        """Make ``models[0]``'s count today at least ``used`` (a front end's own stored
        count is a floor of everyone's: it matters after Redis restarted empty)."""
        return await self._budget("restore", models, used)

    async def budget_read(self, models: list[str]) -> BudgetDay:
        """Today's counts of ``models``, changing nothing."""
        return await self._budget("read", models)

    async def _budget(self, step: str, models: list[str], value: int = 0) -> BudgetDay:
        if step != "read" and not models:
            raise ValueError(f"the budget step {step!r} needs a model")
        args = [
            self.keys.budget_prefix,
            self.keys.budget_quota_prefix,
            str(BUDGET_KEPT_PAST_DAY_S),
            step,
            str(value),
            *models,
        ]
        reply = [_int(item) for item in _list(await self._run("budget", [], args))]
        counts = {
            model: (reply[2 + 2 * i], reply[3 + 2 * i] == 1) for i, model in enumerate(models)
        }
        return BudgetDay(reset_at_s=float(reply[0]), done=reply[1] == 1, counts=counts)


# -- reply parsing: redis-py types replies loosely; these say what each must be ----------


def _entries(reply: object) -> list[tuple[str, dict[bytes, object]]]:
    """The entries of an ``XREADGROUP`` reply on one stream."""
    if not reply:
        return []
    if isinstance(reply, dict):  # RESP3
        streams: list[object] = list(reply.values())
    else:
        streams = [_list(item)[1] for item in _list(reply)]
    found: list[tuple[str, dict[bytes, object]]] = []
    for entries in streams:
        if isinstance(entries, list) and entries and isinstance(entries[0], list):
            entries = entries[0]  # RESP3 nests the entries once more
        found += _pairs(entries)
    return found


def _pairs(entries: object) -> list[tuple[str, dict[bytes, object]]]:
    pairs = []
    for item in _list(entries):
        entry_id, fields = _list(item)
        pairs.append((_text(entry_id), fields if isinstance(fields, dict) else {}))
    return pairs


def _taken(entry_id: str, fields: dict[bytes, object], *, deliveries: int) -> Taken:
    return Taken(
        entry_id=entry_id,
        job_id=_text(fields[b"job"]),
        payload=_text(fields[b"payload"]),
        deliveries=deliveries,
    )


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
    if isinstance(value, list | tuple):
        return list(value)
    raise TypeError(f"expected a list reply from Redis, got {type(value).__name__}")


def _us(seconds: float) -> int:
    return round(seconds * 1_000_000)


def _block_ms(seconds: float) -> int:
    # BLOCK 0 would wait for ever: at least a millisecond.
    return max(1, math.ceil(seconds * 1000))


def _positive(value: float, name: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)
