"""The embedded store: one SQLite file under the data directory (the only module using sqlite3).

- WAL mode and ``synchronous=NORMAL``: a committed write survives the process
  being killed, and readers never block the writer.
- A schema version in ``PRAGMA user_version``; the migrations below run in
  order on open, each in its own transaction.
- Every call runs on one dedicated thread, so a slow disk never freezes the
  event loop, and writes keep the order they were made in.
- Group commit: the calls waiting for that thread run together in one
  transaction (each in a savepoint, so one failing call fails alone), and each
  call's answer is given only once that transaction is committed. Writes that
  nobody waits for (:meth:`SqliteStore.update_job_soon`) and cache entries are
  held up to :data:`SOON_WINDOW_S` to share the next commit, so a job costs about
  two commits: its record, and "delivering" with its cache entry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any, TypeVar

from sakaibot.errors import JobIdTaken, StoreUnavailable
from sakaibot.private_files import make_private_dir, open_private, touch_private
from sakaibot.store import CacheEntry, JobRecord, StoredJobState

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How long a write nobody waits for may be held to share a later commit.
SOON_WINDOW_S = 0.25

#: Each entry takes the schema from version N to N + 1.
MIGRATIONS: tuple[str, ...] = (
    # 1: job records (recovery, rate windows, history, statistics).
    """
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        chat_id TEXT NOT NULL,
        reply_to INTEGER NOT NULL,
        model TEXT NOT NULL,
        request_json TEXT NOT NULL,
        prompt TEXT NOT NULL,
        created_at_s REAL NOT NULL,
        state TEXT NOT NULL,
        refunded INTEGER NOT NULL DEFAULT 0,
        status_message_id INTEGER,
        prompt_used TEXT,
        enhancer TEXT,
        error_kind TEXT,
        error TEXT,
        waited_s REAL,
        enhancing_s REAL,
        generating_s REAL,
        uploading_s REAL,
        image_bytes INTEGER,
        delivered_message_id INTEGER,
        finished_at_s REAL
    );
    CREATE INDEX jobs_by_user ON jobs (user_id, seq);
    CREATE INDEX jobs_by_state ON jobs (state);
    CREATE INDEX jobs_by_time ON jobs (created_at_s);
    """,
    # 2: the result cache, and which stored image a job delivered.
    """
    ALTER TABLE jobs ADD COLUMN image_hash TEXT;
    ALTER TABLE jobs ADD COLUMN image_ext TEXT;
    ALTER TABLE jobs ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE cache (
        key TEXT PRIMARY KEY,
        model TEXT NOT NULL,
        image_hash TEXT NOT NULL,
        image_ext TEXT NOT NULL,
        mime_type TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        prompt_used TEXT NOT NULL,
        enhancer TEXT NOT NULL,
        created_at_s REAL NOT NULL,
        last_used_at_s REAL NOT NULL,
        hits INTEGER NOT NULL DEFAULT 0,
        upload_ref TEXT
    );
    CREATE INDEX cache_by_use ON cache (last_used_at_s);
    """,
    # 3: how to reach each job's chat after a restart (Telegram: peer kind, id,
    # access hash). Jobs stored before have none; the chat resolves them by id.
    """
    ALTER TABLE jobs ADD COLUMN chat_address TEXT;
    """,
    # 4: cache keys now name the worker (URL and contract) that made the image.
    # Older entries cannot say which worker made them (a demo's development
    # worker, perhaps), so none of them may answer a request any more. Their
    # images stay in images/ for /image resend, within CACHE_MAX_BYTES.
    """
    DELETE FROM cache;
    """,
    # 5: each chat's default flags (/image set), and finding the job whose
    # image a message is (/image again sent as a reply to it).
    """
    CREATE TABLE chat_defaults (
        chat_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (chat_id, name)
    );
    CREATE INDEX jobs_by_delivered ON jobs (chat_id, delivered_message_id);
    """,
    # 6: what a chat chose for itself (its language, from /image lang).
    """
    CREATE TABLE chat_settings (
        chat_id TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (chat_id, name)
    );
    """,
    # 7: the images of one --n request are jobs of one album, sent together;
    # a restart gathers them again by album id.
    """
    ALTER TABLE jobs ADD COLUMN album_id TEXT;
    ALTER TABLE jobs ADD COLUMN album_index INTEGER;
    ALTER TABLE jobs ADD COLUMN album_size INTEGER;
    CREATE INDEX jobs_by_album ON jobs (album_id) WHERE album_id IS NOT NULL;
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_JOB_FIELDS = tuple(field.name for field in dataclasses.fields(JobRecord))
_CACHE_FIELDS = tuple(field.name for field in dataclasses.fields(CacheEntry))
_BOOL_FIELDS = {"refunded", "cache_hit"}


def migrate(connection: sqlite3.Connection, *, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema to ``target``; returns the version found before."""
    found = int(connection.execute("PRAGMA user_version").fetchone()[0])
    if found > SCHEMA_VERSION:
        raise StoreUnavailable(
            f"the data file has schema version {found}, newer than this SakaiBot "
            f"({SCHEMA_VERSION}); upgrade SakaiBot or use another SAKAIBOT_DATA_DIR"
        )
    for version in range(found, target):
        # executescript commits first; the version bump is part of the script.
        connection.executescript(
            f"BEGIN;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
        logger.info("store: schema migrated to version %d", version + 1)
    return found


def _job_from_row(row: sqlite3.Row) -> JobRecord:
    values = {name: row[name] for name in _JOB_FIELDS}
    for name in _BOOL_FIELDS:
        values[name] = bool(values[name])
    return JobRecord(**values)


def _refuse_taken_ids(db: sqlite3.Connection, records: list[JobRecord]) -> None:
    """Raise :class:`JobIdTaken` when a new job's or album's id is already used.

    Checked inside the insert's own transaction (users type both kinds of id as
    ``#id``), so taking a new id costs no separate look-up and no extra commit.
    """
    ids = sorted({r.id for r in records} | {r.album_id for r in records if r.album_id})
    marks = ", ".join("?" for _ in ids)
    found = db.execute(
        f"SELECT 1 FROM jobs WHERE id IN ({marks}) OR album_id IN ({marks}) LIMIT 1",
        (*ids, *ids),
    ).fetchone()
    if found is not None:
        raise JobIdTaken(f"one of the ids {', '.join(ids)} is already used")


class SqliteStore:
    """The :class:`~sakaibot.store.Store` on one SQLite file."""

    def __init__(self, path: Path, *, exclusive: bool = True) -> None:
        self._path = path
        #: A bot takes the folder for itself; a report (``sakaibot stats``) only reads.
        self._exclusive = exclusive
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sakaibot-store")
        self._connection: sqlite3.Connection | None = None
        self._closed = False
        self._lock: IO[str] | None = None
        #: Calls not yet run, in order, and whether a flush is on its way to the thread.
        self._pending: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]] = []
        self._pending_lock = threading.Lock()
        self._flush_queued = False
        self._soon_timer: asyncio.TimerHandle | None = None
        #: Transactions committed that wrote something (for benchmarks: commits per job).
        self.commits = 0

    # -- plumbing ----------------------------------------------------------------

    def _submit(self, work: Callable[[sqlite3.Connection], T], *, soon: bool = False) -> Future[T]:
        """Queue ``work`` for the store's thread; ``soon``: it may wait to share a commit."""
        if self._closed:
            raise StoreUnavailable("the store is closed")
        future: Future[T] = Future()
        with self._pending_lock:
            self._pending.append((work, future))
        if soon:
            self._flush_later()
        else:
            # The writes held so far go with this call: their timer is not needed.
            if self._soon_timer is not None:
                self._soon_timer.cancel()
                self._soon_timer = None
            self._queue_flush()
        return future

    def _queue_flush(self) -> None:
        with self._pending_lock:
            if self._flush_queued or not self._pending:
                return
            self._flush_queued = True
        try:
            self._executor.submit(self._flush)
        except RuntimeError as exc:  # the executor is shut down: close() was called
            raise StoreUnavailable("the store is closed") from exc

    def _flush_later(self) -> None:
        if self._soon_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._queue_flush()
            return

        def due() -> None:
            self._soon_timer = None
            if not self._closed:
                self._queue_flush()

        self._soon_timer = loop.call_later(SOON_WINDOW_S, due)

    def _flush(self) -> None:
        """On the store's thread: run every pending call in one transaction."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
            self._flush_queued = False
        batch = [(work, future) for work, future in batch if future.set_running_or_notify_cancel()]
        if not batch:
            return
        db = self._connection
        if db is None:
            for _, future in batch:
                future.set_exception(StoreUnavailable("the store is not open"))
            return
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        changes_before = db.total_changes
        try:
            db.execute("BEGIN IMMEDIATE")
            for work, future in batch:
                db.execute("SAVEPOINT call")
                try:
                    result = work(db)
                except sqlite3.Error as exc:
                    db.execute("ROLLBACK TO call")
                    unavailable = StoreUnavailable(f"{type(exc).__name__}: {exc}")
                    unavailable.__cause__ = exc
                    outcomes.append((future, None, unavailable))
                except Exception as exc:
                    db.execute("ROLLBACK TO call")
                    outcomes.append((future, None, exc))
                else:
                    outcomes.append((future, result, None))
                db.execute("RELEASE call")
            db.execute("COMMIT")
            if db.total_changes != changes_before:
                self.commits += 1  # reads alone write nothing to the disk
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.rollback()
            failure = StoreUnavailable(f"{type(exc).__name__}: {exc}")
            failure.__cause__ = exc
            for _, future in batch:
                future.set_exception(failure)
            return
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    async def _call(self, work: Callable[[sqlite3.Connection], T], *, soon: bool = False) -> T:
        return await asyncio.wrap_future(self._submit(work, soon=soon))

    async def _read_beside_held(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run a read of data the held writes never touch, leaving them held.

        Only job notes and cache entries are ever held (``soon``); every other
        write is queued for the thread at once, so a read queued after it still
        sees it. A per-request read (a chat's defaults) therefore no longer
        forces an extra commit of the notes waiting to share one.
        """
        if self._closed:
            raise StoreUnavailable("the store is closed")

        def read() -> T:
            db = self._connection
            if db is None:
                raise StoreUnavailable("the store is not open")
            try:
                return work(db)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{type(exc).__name__}: {exc}") from exc

        try:
            future = self._executor.submit(read)
        except RuntimeError as exc:  # the executor is shut down: close() was called
            raise StoreUnavailable("the store is closed") from exc
        return await asyncio.wrap_future(future)

    def _lock_sync(self) -> None:
        """One process per data file: two bots on one store would both recover its jobs."""
        lock_path = self._path.with_name(f"{self._path.name}.lock")
        handle = os.fdopen(open_private(lock_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StoreUnavailable(
                f"another SakaiBot is already using {self._path.parent}; stop it first, "
                "or give this one its own SAKAIBOT_DATA_DIR"
            ) from None
        self._lock = handle

    def _open_sync(self) -> None:
        try:
            make_private_dir(self._path.parent)
            if self._exclusive:
                self._lock_sync()
            # Created 0600 here: SQLite gives its -wal and -shm files the same mode.
            touch_private(self._path)
            connection = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            self._unlock_sync()
            raise StoreUnavailable(f"cannot open {self._path}: {exc}") from exc
        try:
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA busy_timeout = 5000")
            migrate(connection)
        except (sqlite3.Error, OSError) as exc:
            connection.close()
            self._unlock_sync()
            raise StoreUnavailable(f"cannot open {self._path}: {exc}") from exc
        except BaseException:
            # A newer schema (StoreUnavailable from migrate): do not leak the connection.
            connection.close()
            self._unlock_sync()
            raise
        self._connection = connection

    def _unlock_sync(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file releases the lock
            self._lock = None

    async def open(self) -> None:
        await asyncio.wrap_future(self._executor.submit(self._open_sync))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._soon_timer is not None:
            self._soon_timer.cancel()
            self._soon_timer = None

        def close_sync() -> None:
            self._flush()  # the writes still held for a shared commit
            if self._connection is not None:
                self._connection.close()
                self._connection = None
            self._unlock_sync()

        await asyncio.wrap_future(self._executor.submit(close_sync))
        self._executor.shutdown(wait=True)

    async def writable(self) -> bool:
        """Whether a write could be made now (for /healthz): the write lock, taken and let go."""

        def probe(db: sqlite3.Connection) -> None:
            # Every call runs inside the batch's BEGIN IMMEDIATE: reaching here
            # means the write lock was taken; the batch lets it go.
            db.execute("SELECT 1")

        try:
            await self._call(probe)
        except StoreUnavailable:
            return False
        return True

    # -- jobs --------------------------------------------------------------------

    async def add_job(self, record: JobRecord) -> None:
        await self.add_jobs([record])

    async def add_jobs(self, records: list[JobRecord]) -> None:
        """Add jobs (one, or an album's) in one transaction: all of them, or none."""
        if not records:
            return
        names = [name for name in _JOB_FIELDS if name != "seq"]
        columns = ", ".join(names)
        marks = ", ".join(f":{name}" for name in names)

        def insert(db: sqlite3.Connection) -> list[int]:
            # One call is one savepoint of the batch's transaction: a failure
            # part-way rolls back every insert of this call, and only those.
            _refuse_taken_ids(db, records)
            seqs: list[int] = []
            for record in records:
                values = {name: getattr(record, name) for name in names}
                cursor = db.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", values)
                seqs.append(int(cursor.lastrowid or 0))
            return seqs

        for record, seq in zip(records, await self._call(insert), strict=True):
            record.seq = seq

    def _update(
        self, job_id: str, fields: dict[str, object]
    ) -> Callable[[sqlite3.Connection], None]:
        unknown = set(fields) - set(_JOB_FIELDS)
        if unknown or "seq" in fields or "id" in fields:
            raise ValueError(f"cannot update {sorted(unknown | ({'seq', 'id'} & set(fields)))}")
        assignments = ", ".join(f"{name} = :{name}" for name in fields)

        def update(db: sqlite3.Connection) -> None:
            # An album's id (never a job's) names all its images: their one status message.
            db.execute(
                f"UPDATE jobs SET {assignments} WHERE id = :job_id OR album_id = :job_id",
                {**fields, "job_id": job_id},
            )

        return update

    async def update_job(self, job_id: str, **fields: object) -> None:
        if fields:
            await self._call(self._update(job_id, fields))

    async def update_job_grouped(self, job_id: str, **fields: object) -> None:
        """Update and wait until written, but held up to ``SOON_WINDOW_S`` to join
        other writes in one commit (the way background notes are)."""
        if fields:
            await self._call(self._update(job_id, fields), soon=True)

    def update_job_soon(self, job_id: str, **fields: object) -> None:
        if not fields:
            return
        update = self._update(job_id, fields)
        try:
            future = self._submit(update, soon=True)
        except StoreUnavailable as exc:  # closed: logged like any failed background update
            logger.error("store: a background update failed: %s", exc)
            return
        future.add_done_callback(_log_failure)

    async def get_job(self, job_id: str) -> JobRecord | None:
        def get(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else _job_from_row(row)

        return await self._call(get)

    async def album_jobs(self, album_id: str) -> list[JobRecord]:
        def select(db: sqlite3.Connection) -> list[JobRecord]:
            rows = db.execute(
                "SELECT * FROM jobs WHERE album_id = ? ORDER BY album_index, seq", (album_id,)
            )
            return [_job_from_row(row) for row in rows]

        return await self._call(select)

    async def job_by_delivered_message(self, chat_id: str, message_id: int) -> JobRecord | None:
        def get(db: sqlite3.Connection) -> JobRecord | None:
            row = db.execute(
                "SELECT * FROM jobs WHERE chat_id = ? AND delivered_message_id = ? "
                "ORDER BY seq DESC LIMIT 1",
                (chat_id, message_id),
            ).fetchone()
            return None if row is None else _job_from_row(row)

        return await self._call(get)

    async def unfinished_jobs(self) -> list[JobRecord]:
        marks = ", ".join("?" for _ in StoredJobState.UNFINISHED)

        def select(db: sqlite3.Connection) -> list[JobRecord]:
            rows = db.execute(
                f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY seq",
                StoredJobState.UNFINISHED,
            )
            return [_job_from_row(row) for row in rows]

        return await self._call(select)

    async def accepted_since(self, since_s: float) -> list[tuple[str, float]]:
        def select(db: sqlite3.Connection) -> list[tuple[str, float]]:
            rows = db.execute(
                "SELECT user_id, created_at_s FROM jobs WHERE created_at_s > ? AND refunded = 0 "
                "ORDER BY created_at_s",
                (since_s,),
            )
            return [(str(row[0]), float(row[1])) for row in rows]

        return await self._call(select)

    async def history(self, user_id: str, limit: int) -> list[JobRecord]:
        def select(db: sqlite3.Connection) -> list[JobRecord]:
            rows = db.execute(
                "SELECT * FROM jobs WHERE user_id = ? ORDER BY seq DESC LIMIT ?", (user_id, limit)
            )
            return [_job_from_row(row) for row in rows]

        return await self._call(select)

    async def jobs_since(self, since_s: float) -> list[JobRecord]:
        def select(db: sqlite3.Connection) -> list[JobRecord]:
            rows = db.execute("SELECT * FROM jobs WHERE created_at_s >= ? ORDER BY seq", (since_s,))
            return [_job_from_row(row) for row in rows]

        return await self._call(select)

    async def prune_jobs(self, before_s: float) -> int:
        finished = (StoredJobState.DONE, StoredJobState.FAILED, StoredJobState.CANCELLED)

        def delete(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "DELETE FROM jobs WHERE created_at_s < ? AND state IN (?, ?, ?)",
                (before_s, *finished),
            )
            return int(cursor.rowcount)

        return await self._call(delete)

    # -- the result cache ----------------------------------------------------------

    async def cache_get(self, key: str) -> CacheEntry | None:
        def get(db: sqlite3.Connection) -> CacheEntry | None:
            row = db.execute("SELECT * FROM cache WHERE key = ?", (key,)).fetchone()
            return None if row is None else CacheEntry(**{n: row[n] for n in _CACHE_FIELDS})

        return await self._call(get)

    async def cache_put(self, entry: CacheEntry) -> None:
        values = {name: getattr(entry, name) for name in _CACHE_FIELDS}
        columns = ", ".join(values)
        marks = ", ".join(f":{name}" for name in values)

        def put(db: sqlite3.Connection) -> None:
            db.execute(f"INSERT OR REPLACE INTO cache ({columns}) VALUES ({marks})", values)

        # Shares the commit of the job's "delivering" note, written next to it.
        await self._call(put, soon=True)

    async def cache_touch(
        self, key: str, at_s: float, *, upload_ref: str | None, hit: bool = True
    ) -> None:
        def touch(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE cache SET last_used_at_s = ?, hits = hits + ?, "
                "upload_ref = COALESCE(?, upload_ref) WHERE key = ?",
                (at_s, 1 if hit else 0, upload_ref, key),
            )

        await self._call(touch)

    async def cache_entries(self) -> list[CacheEntry]:
        def select(db: sqlite3.Connection) -> list[CacheEntry]:
            rows = db.execute("SELECT * FROM cache ORDER BY last_used_at_s")
            return [CacheEntry(**{n: row[n] for n in _CACHE_FIELDS}) for row in rows]

        return await self._call(select)

    async def cache_delete(self, keys: list[str]) -> None:
        def delete(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM cache WHERE key = ?", [(key,) for key in keys])

        await self._call(delete)

    async def image_hashes_in_use(self) -> set[str]:
        def select(db: sqlite3.Connection) -> set[str]:
            rows = db.execute(
                "SELECT image_hash FROM jobs WHERE image_hash IS NOT NULL AND state IN (?, ?)",
                StoredJobState.UNFINISHED,
            )
            return {str(row[0]) for row in rows}

        return await self._call(select)

    # -- chat settings -----------------------------------------------------------

    async def chat_settings(self, name: str) -> dict[str, str]:
        def select(db: sqlite3.Connection) -> dict[str, str]:
            rows = db.execute("SELECT chat_id, value FROM chat_settings WHERE name = ?", (name,))
            return {str(row["chat_id"]): str(row["value"]) for row in rows}

        return await self._read_beside_held(select)

    async def set_chat_setting(self, chat_id: str, name: str, value: str) -> None:
        def upsert(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO chat_settings (chat_id, name, value) VALUES (?, ?, ?) "
                "ON CONFLICT (chat_id, name) DO UPDATE SET value = excluded.value",
                (chat_id, name, value),
            )

        await self._call(upsert)

    # -- per-chat defaults ---------------------------------------------------------

    async def chat_defaults(self, chat_id: str) -> dict[str, str]:
        def select(db: sqlite3.Connection) -> dict[str, str]:
            rows = db.execute(
                "SELECT name, value FROM chat_defaults WHERE chat_id = ? ORDER BY name",
                (chat_id,),
            )
            return {str(row[0]): str(row[1]) for row in rows}

        return await self._read_beside_held(select)

    async def set_chat_default(self, chat_id: str, name: str, value: str | None) -> None:
        def write(db: sqlite3.Connection) -> None:
            if value is None:
                db.execute(
                    "DELETE FROM chat_defaults WHERE chat_id = ? AND name = ?", (chat_id, name)
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO chat_defaults (chat_id, name, value) VALUES (?, ?, ?)",
                    (chat_id, name, value),
                )

        await self._call(write)

    async def clear_chat_defaults(self, chat_id: str) -> int:
        def delete(db: sqlite3.Connection) -> int:
            cursor = db.execute("DELETE FROM chat_defaults WHERE chat_id = ?", (chat_id,))
            return int(cursor.rowcount)

        return await self._call(delete)


def _log_failure(future: Future[Any]) -> None:
    error = future.exception()
    if error is not None:
        logger.error("store: a background update failed: %s", error)
