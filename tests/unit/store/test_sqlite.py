"""The embedded SQLite store: schema migrations, job records, the result cache, its thread."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sakaibot.errors import JobIdTaken, StoreUnavailable
from sakaibot.store import CacheEntry, JobRecord, StoredJobState
from sakaibot.store.sqlite import SCHEMA_VERSION, SqliteStore, migrate
from tests.support.waiting import until

HASH_A = "a" * 64
HASH_B = "b" * 64
HASH_C = "c" * 64
HASH_D = "d" * 64


def job(
    job_id: str,
    *,
    user_id: str = "ann",
    created_at_s: float = 1000.0,
    state: str = StoredJobState.QUEUED,
    **fields: object,
) -> JobRecord:
    return JobRecord(
        id=job_id,
        user_id=user_id,
        chat_id="chat-1",
        reply_to=7,
        model="flux",
        request_json='{"prompt": "a fox"}',
        prompt="a fox",
        created_at_s=created_at_s,
        state=state,
        **fields,  # type: ignore[arg-type]
    )


def entry(key: str, *, last_used_at_s: float = 100.0, **fields: object) -> CacheEntry:
    values: dict[str, object] = {
        "key": key,
        "model": "flux",
        "image_hash": HASH_A,
        "image_ext": ".jpg",
        "mime_type": "image/jpeg",
        "width": 8,
        "height": 6,
        "prompt_used": "enhanced: a fox",
        "enhancer": "TestLLM",
        "created_at_s": 50.0,
        "last_used_at_s": last_used_at_s,
        **fields,
    }
    return CacheEntry(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain sqlite3 connection to look at (or prepare) a data file; always closed."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        yield connection


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "sakaibot.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    opened = SqliteStore(db_path)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


# -- migrations ------------------------------------------------------------------


async def test_an_empty_file_is_migrated_to_the_current_schema_in_wal_mode(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.close()

    assert SCHEMA_VERSION >= 2
    with raw(db_path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        tables = {row[0] for row in rows}
    assert {"jobs", "cache"} <= tables


async def test_opening_a_current_file_again_changes_nothing(db_path: Path) -> None:
    for _ in range(2):
        store = SqliteStore(db_path)
        await store.open()
        await store.close()
    with raw(db_path) as connection:
        assert migrate(connection) == SCHEMA_VERSION
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_1_file_is_migrated_and_its_jobs_stay_readable(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as connection:
        assert migrate(connection, target=1) == 0
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 1
        connection.execute(
            "INSERT INTO jobs (id, user_id, chat_id, reply_to, model, request_json, prompt, "
            "created_at_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old-1", "ann", "chat-1", 7, "flux", "{}", "a fox", 500.0, StoredJobState.DONE),
        )
        connection.commit()

    store = SqliteStore(db_path)
    await store.open()
    try:
        old = await store.get_job("old-1")
        assert old is not None
        assert (old.user_id, old.prompt, old.state, old.created_at_s) == (
            "ann",
            "a fox",
            StoredJobState.DONE,
            500.0,
        )
        assert old.image_hash is None
        assert old.image_ext is None
        assert old.cache_hit is False
        assert old.refunded is False
        assert old.seq == 1

        await store.update_job("old-1", image_hash=HASH_A, image_ext=".jpg", cache_hit=True)
        updated = await store.get_job("old-1")
        assert updated is not None
        assert (updated.image_hash, updated.image_ext, updated.cache_hit) == (HASH_A, ".jpg", True)

        await store.cache_put(entry("k1"))
        assert await store.cache_get("k1") == entry("k1")
    finally:
        await store.close()

    with raw(db_path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_a_version_2_file_gains_chat_addresses_and_its_unfinished_jobs_come_back(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as connection:
        assert migrate(connection, target=2) == 0
        connection.execute(
            "INSERT INTO jobs (id, user_id, chat_id, reply_to, model, request_json, prompt, "
            "created_at_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old-2", "ann", "42", 7, "flux", "{}", "a fox", 500.0, StoredJobState.QUEUED),
        )
        connection.commit()

    store = SqliteStore(db_path)
    await store.open()
    try:
        [old] = await store.unfinished_jobs()
        assert (old.id, old.chat_id, old.chat_address) == ("old-2", "42", None)
        await store.update_job("old-2", chat_address="user:42:99")
        await store.add_job(
            JobRecord(
                id="new-1", user_id="ann", chat_id="-1001", reply_to=8, model="flux",
                request_json="{}", prompt="a cat", created_at_s=600.0,
                chat_address="channel:1:77",
            )
        )  # fmt: skip
        addresses = {r.id: r.chat_address for r in await store.unfinished_jobs()}
        assert addresses == {"old-2": "user:42:99", "new-1": "channel:1:77"}
    finally:
        await store.close()

    with raw(db_path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


async def test_cache_entries_made_before_keys_named_their_worker_are_dropped(
    db_path: Path,
) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as connection:
        migrate(connection, target=2)  # the schema before cache keys named the worker
        old = entry("old-key")
        columns = ", ".join(vars(old))
        marks = ", ".join("?" for _ in vars(old))
        connection.execute(
            f"INSERT INTO cache ({columns}) VALUES ({marks})", tuple(vars(old).values())
        )
        connection.execute(
            "INSERT INTO jobs (id, user_id, chat_id, reply_to, model, request_json, prompt, "
            "created_at_s, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("old-1", "ann", "chat-1", 7, "flux", "{}", "a fox", 500.0, StoredJobState.DONE),
        )
        connection.commit()

    store = SqliteStore(db_path)
    await store.open()
    try:
        assert await store.cache_get("old-key") is None
        assert await store.cache_entries() == []
        assert await store.get_job("old-1") is not None  # history stays
    finally:
        await store.close()


async def test_a_file_from_a_newer_version_is_refused_with_a_hint_to_upgrade(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as connection:
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    opened: list[sqlite3.Connection] = []
    real_connect = sqlite3.connect

    def tracking_connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        connection = real_connect(*args, **kwargs)  # type: ignore[call-overload]
        opened.append(connection)
        return connection  # type: ignore[no-any-return]

    monkeypatch.setattr(sqlite3, "connect", tracking_connect)
    store = SqliteStore(db_path)
    try:
        with pytest.raises(StoreUnavailable, match="upgrade"):
            await store.open()
        # Nothing runs against a store that did not open.
        with pytest.raises(StoreUnavailable):
            await store.get_job("x")
    finally:
        await store.close()
    monkeypatch.undo()

    # The refused connection was closed, not leaked.
    assert len(opened) == 1
    with pytest.raises(sqlite3.ProgrammingError):
        opened[0].execute("SELECT 1")
    # And the file was left as it was.
    with raw(db_path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


# -- jobs ------------------------------------------------------------------------


async def test_add_job_assigns_increasing_seq_and_get_job_reads_it_back(
    store: SqliteStore,
) -> None:
    first, second, third = job("j1"), job("j2"), job("j3", status_message_id=55, refunded=True)
    for record in (first, second, third):
        await store.add_job(record)

    assert 0 < first.seq < second.seq < third.seq
    assert await store.get_job("j3") == third
    assert await store.get_job("nope") is None


async def test_an_id_a_stored_job_or_album_has_is_refused_as_taken(store: SqliteStore) -> None:
    # Found as the job is written (no look-up of its own): admission draws again.
    await store.add_job(job("j1"))
    await store.add_jobs([job("j2", album_id="a1"), job("j3", album_id="a1")])
    for taken in (job("j1"), job("a1"), job("j9", album_id="j2")):
        with pytest.raises(JobIdTaken):
            await store.add_job(taken)
    with pytest.raises(JobIdTaken):
        await store.add_jobs([job("j7", album_id="a2"), job("j1", album_id="a2")])
    assert await store.get_job("j7") is None  # an album is written whole or not at all
    await store.add_job(job("j4"))  # a free id still goes in


async def test_a_job_id_is_unique(store: SqliteStore) -> None:
    await store.add_job(job("j1"))
    with pytest.raises(StoreUnavailable):
        await store.add_job(job("j1"))


async def test_unfinished_jobs_are_the_queued_and_delivering_ones_in_seq_order(
    store: SqliteStore,
) -> None:
    states = [
        ("j1", StoredJobState.DELIVERING),
        ("j2", StoredJobState.DONE),
        ("j3", StoredJobState.QUEUED),
        ("j4", StoredJobState.FAILED),
        ("j5", StoredJobState.CANCELLED),
        ("j6", StoredJobState.QUEUED),
    ]
    for job_id, state in states:
        await store.add_job(job(job_id, state=state))
    # A later state change does not reorder them.
    await store.update_job("j6", state=StoredJobState.DELIVERING)

    unfinished = await store.unfinished_jobs()
    assert [record.id for record in unfinished] == ["j1", "j3", "j6"]
    assert [record.state for record in unfinished] == [
        StoredJobState.DELIVERING,
        StoredJobState.QUEUED,
        StoredJobState.DELIVERING,
    ]


async def test_update_job_changes_only_the_given_fields_of_that_job(store: SqliteStore) -> None:
    await store.add_job(job("j1"))
    await store.add_job(job("j2"))

    await store.update_job(
        "j1",
        state=StoredJobState.DONE,
        refunded=True,
        prompt_used="enhanced",
        generating_s=1.5,
        image_bytes=1234,
        finished_at_s=2000.0,
    )

    updated = await store.get_job("j1")
    assert updated is not None
    assert updated.state == StoredJobState.DONE
    assert updated.refunded is True
    assert updated.prompt_used == "enhanced"
    assert (updated.generating_s, updated.image_bytes) == (1.5, 1234)
    assert updated.finished_at_s == 2000.0
    assert updated.prompt == "a fox"
    assert await store.get_job("j2") == dataclasses.replace(job("j2"), seq=2)


@pytest.mark.parametrize("field", ["no_such_field", "seq", "id"])
async def test_update_job_refuses_unknown_and_fixed_fields(store: SqliteStore, field: str) -> None:
    await store.add_job(job("j1"))
    with pytest.raises(ValueError, match=field):
        await store.update_job("j1", **{field: 1})
    with pytest.raises(ValueError, match=field):
        store.update_job_soon("j1", **{field: 1})
    assert await store.get_job("j1") == dataclasses.replace(job("j1"), seq=1)


async def test_update_job_soon_is_seen_by_the_next_awaited_call_in_order(
    store: SqliteStore,
) -> None:
    await store.add_job(job("j1"))

    store.update_job_soon("j1", state=StoredJobState.DELIVERING, status_message_id=10)
    store.update_job_soon("j1", status_message_id=11)
    store.update_job_soon("j1", state=StoredJobState.DONE, delivered_message_id=12)

    record = await store.get_job("j1")
    assert record is not None
    assert (record.state, record.status_message_id, record.delivered_message_id) == (
        StoredJobState.DONE,
        11,
        12,
    )


async def test_a_failed_background_update_is_logged(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    await store.add_job(job("j1"))
    with caplog.at_level(logging.ERROR, logger="sakaibot.store.sqlite"):
        # NOT NULL column: the update fails on the store thread, not in the caller.
        store.update_job_soon("j1", state=None)
        assert await store.get_job("j1") is not None
        await until(
            lambda: "background update failed" in caplog.text,
            waiting_for="the failed update to be logged",
        )


async def test_accepted_since_skips_refunded_and_older_jobs(store: SqliteStore) -> None:
    await store.add_job(job("old", user_id="ann", created_at_s=100.0))
    await store.add_job(job("refunded", user_id="ann", created_at_s=300.0, refunded=True))
    await store.add_job(job("kept-b", user_id="bob", created_at_s=250.0))
    await store.add_job(job("kept-a", user_id="ann", created_at_s=400.0))
    await store.add_job(job("refunded-later", user_id="bob", created_at_s=450.0))
    await store.update_job("refunded-later", refunded=True)

    assert await store.accepted_since(200.0) == [("bob", 250.0), ("ann", 400.0)]


async def test_history_is_the_users_newest_jobs_first_up_to_the_limit(store: SqliteStore) -> None:
    for index in range(4):
        await store.add_job(job(f"ann-{index}", user_id="ann", created_at_s=100.0 + index))
        await store.add_job(job(f"bob-{index}", user_id="bob", created_at_s=100.0 + index))

    history = await store.history("ann", 3)
    assert [record.id for record in history] == ["ann-3", "ann-2", "ann-1"]
    assert [record.id for record in await store.history("bob", 10)] == [
        "bob-3",
        "bob-2",
        "bob-1",
        "bob-0",
    ]
    assert await store.history("carl", 5) == []


async def test_jobs_since_returns_jobs_from_that_time_on(store: SqliteStore) -> None:
    await store.add_job(job("j1", created_at_s=100.0))
    await store.add_job(job("j2", created_at_s=200.0))
    await store.add_job(job("j3", created_at_s=300.0, state=StoredJobState.FAILED))

    assert [record.id for record in await store.jobs_since(200.0)] == ["j2", "j3"]
    assert await store.jobs_since(301.0) == []


async def test_prune_jobs_deletes_only_finished_jobs_older_than_the_cutoff(
    store: SqliteStore,
) -> None:
    await store.add_job(job("old-done", created_at_s=100.0, state=StoredJobState.DONE))
    await store.add_job(job("old-failed", created_at_s=100.0, state=StoredJobState.FAILED))
    await store.add_job(job("old-cancelled", created_at_s=100.0, state=StoredJobState.CANCELLED))
    await store.add_job(job("old-queued", created_at_s=100.0, state=StoredJobState.QUEUED))
    await store.add_job(job("old-delivering", created_at_s=100.0, state=StoredJobState.DELIVERING))
    await store.add_job(job("new-done", created_at_s=900.0, state=StoredJobState.DONE))

    assert await store.prune_jobs(500.0) == 3

    remaining = [record.id for record in await store.jobs_since(0.0)]
    assert remaining == ["old-queued", "old-delivering", "new-done"]
    assert await store.prune_jobs(500.0) == 0


# -- the result cache ------------------------------------------------------------------


async def test_cache_put_and_get_round_trip(store: SqliteStore) -> None:
    stored = entry("k1", hits=3, upload_ref="ref-0")
    await store.cache_put(stored)

    assert await store.cache_get("k1") == stored
    assert await store.cache_get("k2") is None

    replaced = entry("k1", image_hash=HASH_B, width=16)
    await store.cache_put(replaced)
    assert await store.cache_get("k1") == replaced


async def test_cache_touch_counts_a_hit_and_keeps_or_replaces_the_upload_ref(
    store: SqliteStore,
) -> None:
    await store.cache_put(entry("k1", last_used_at_s=100.0))

    await store.cache_touch("k1", 200.0, upload_ref="ref-1")
    touched = await store.cache_get("k1")
    assert touched is not None
    assert (touched.hits, touched.last_used_at_s, touched.upload_ref) == (1, 200.0, "ref-1")

    await store.cache_touch("k1", 300.0, upload_ref=None)
    touched = await store.cache_get("k1")
    assert touched is not None
    assert (touched.hits, touched.last_used_at_s, touched.upload_ref) == (2, 300.0, "ref-1")

    await store.cache_touch("k1", 400.0, upload_ref="ref-2")
    touched = await store.cache_get("k1")
    assert touched is not None
    assert (touched.hits, touched.last_used_at_s, touched.upload_ref) == (3, 400.0, "ref-2")
    assert touched.created_at_s == 50.0

    # Touching an unknown key creates nothing.
    await store.cache_touch("nope", 500.0, upload_ref="ref-3")
    assert await store.cache_get("nope") is None


async def test_cache_entries_are_ordered_by_last_use_and_can_be_deleted(
    store: SqliteStore,
) -> None:
    await store.cache_put(entry("k1", last_used_at_s=30.0))
    await store.cache_put(entry("k2", last_used_at_s=10.0))
    await store.cache_put(entry("k3", last_used_at_s=20.0))
    assert [e.key for e in await store.cache_entries()] == ["k2", "k3", "k1"]

    await store.cache_touch("k2", 40.0, upload_ref=None)
    assert [e.key for e in await store.cache_entries()] == ["k3", "k1", "k2"]

    await store.cache_delete(["k1", "k3", "unknown"])
    assert [e.key for e in await store.cache_entries()] == ["k2"]
    assert await store.cache_get("k1") is None
    await store.cache_delete([])
    assert [e.key for e in await store.cache_entries()] == ["k2"]


async def test_image_hashes_in_use_are_those_of_unfinished_jobs_only(store: SqliteStore) -> None:
    await store.add_job(job("queued", state=StoredJobState.QUEUED, image_hash=HASH_A))
    await store.add_job(job("delivering", state=StoredJobState.DELIVERING, image_hash=HASH_B))
    await store.add_job(job("done", state=StoredJobState.DONE, image_hash=HASH_C))
    await store.add_job(job("failed", state=StoredJobState.FAILED, image_hash=HASH_D))
    await store.add_job(job("no-image", state=StoredJobState.QUEUED))

    assert await store.image_hashes_in_use() == {HASH_A, HASH_B}

    await store.update_job("delivering", state=StoredJobState.DONE)
    assert await store.image_hashes_in_use() == {HASH_A}


# -- durability, the thread, closing -------------------------------------------------


async def test_jobs_survive_closing_and_reopening_the_file(db_path: Path) -> None:
    first = SqliteStore(db_path)
    await first.open()
    try:
        record = job("j1", image_hash=HASH_A, image_ext=".jpg", cache_hit=True)
        await first.add_job(record)
        await first.cache_put(entry("k1"))
        # Queued without waiting, just before closing: close() still writes it.
        first.update_job_soon("j1", state=StoredJobState.DELIVERING, status_message_id=42)
    finally:
        await first.close()

    second = SqliteStore(db_path)
    await second.open()
    try:
        expected = dataclasses.replace(
            record, state=StoredJobState.DELIVERING, status_message_id=42, seq=1
        )
        assert await second.get_job("j1") == expected
        assert await second.unfinished_jobs() == [expected]
        assert await second.cache_get("k1") == entry("k1")
        # seq keeps increasing across restarts.
        later = job("j2")
        await second.add_job(later)
        assert later.seq > record.seq
    finally:
        await second.close()


async def test_a_slow_store_call_does_not_block_the_event_loop(store: SqliteStore) -> None:
    loop_ran = asyncio.Event()
    seen_by_store: list[bool] = []

    async def other_work() -> None:
        loop_ran.set()

    def slow(_db: sqlite3.Connection) -> str:
        time.sleep(0.2)
        seen_by_store.append(loop_ran.is_set())
        return "done"

    task = asyncio.create_task(other_work())
    assert await store._call(slow) == "done"
    await task

    # The other coroutine ran while the store thread was still busy.
    assert seen_by_store == [True]


async def test_calls_after_close_raise_store_unavailable(
    db_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store.add_job(job("j1"))
    await store.close()

    with pytest.raises(StoreUnavailable):
        await store.get_job("j1")
    with pytest.raises(StoreUnavailable):
        await store.add_job(job("j2"))
    with pytest.raises(StoreUnavailable):
        await store.cache_entries()
    # A fire-and-forget update cannot raise into its caller: it is logged and dropped.
    with caplog.at_level(logging.ERROR, logger="sakaibot.store.sqlite"):
        store.update_job_soon("j1", state=StoredJobState.DONE)
    assert "closed" in caplog.text


async def test_a_job_costs_at_most_two_commits(store: SqliteStore) -> None:
    # What the pipeline writes for each job, ten jobs one after the other.
    before = store.commits
    for n in range(10):
        job_id = f"job{n}"
        await store.add_job(job(job_id))
        store.update_job_soon(job_id, status_message_id=100 + n)
        await asyncio.gather(
            store.cache_put(entry(f"key{n}")),
            store.update_job(job_id, state=StoredJobState.DELIVERING, image_hash=HASH_A),
        )
        store.update_job_soon(job_id, state=StoredJobState.DONE, delivered_message_id=200 + n)
    await store.get_job("job9")  # a read takes the held writes along
    assert store.commits - before <= 2 * 10 + 1
    done = await store.get_job("job9")
    assert done is not None
    assert (done.state, done.status_message_id, done.delivered_message_id) == (
        StoredJobState.DONE,
        109,
        209,
    )
    assert {e.key for e in await store.cache_entries()} == {f"key{n}" for n in range(10)}


async def test_reading_a_chats_defaults_leaves_held_notes_to_share_their_commit(
    store: SqliteStore,
) -> None:
    # Admission reads the chat's defaults for every request: that read must not
    # commit the notes held for the next shared commit on its own.
    await store.add_job(job("j1"))
    await store.set_chat_default("chat-1", "model", "flux")
    store.update_job_soon("j1", status_message_id=7)
    before = store.commits

    assert await store.chat_defaults("chat-1") == {"model": "flux"}
    assert await store.chat_settings("language") == {}
    assert store.commits == before  # the note is still held

    await store.set_chat_default("chat-1", "model", None)
    assert await store.chat_defaults("chat-1") == {}  # a write made before is seen
    stored = await store.get_job("j1")
    assert stored is not None
    assert stored.status_message_id == 7


async def test_a_failing_call_fails_alone_in_its_shared_commit(store: SqliteStore) -> None:
    await store.add_job(job("one"))
    duplicate = store.add_job(job("one"))  # the unique id refuses it
    other = store.add_job(job("two"))
    results = await asyncio.gather(duplicate, other, return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable)
    assert results[1] is None
    assert await store.get_job("two") is not None
