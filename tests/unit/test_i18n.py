"""The message catalogues: complete, consistent, compiled; and Persian chats answered in Persian."""

from __future__ import annotations

import asyncio
import io
import re
import string
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from sakaibot.app import App, build_app
from sakaibot.chat.console import ConsoleChat
from sakaibot.chat.port import ActionPress, IncomingMessage
from sakaibot.commands import parse_command
from sakaibot.errors import (
    BadFlag,
    ConfigError,
    DeliveryFailed,
    EveryoneRateLimited,
    NotYourButton,
    PausedUntilReset,
    QueueFull,
    QuotaExhausted,
    RateLimited,
    UnknownModel,
    from_wire,
)
from sakaibot.i18n import (
    ENGLISH,
    FSI,
    LANGUAGES,
    LOCALE_DIR,
    LRI,
    PDI,
    Languages,
    every_language,
    isolate,
    load_texts,
)
from sakaibot.models import Contract, ModelRegistry, ModelSpec
from sakaibot.queues import QueuePlace
from sakaibot.reports import format_history
from sakaibot.settings import load_settings
from sakaibot.status import queued_text
from sakaibot.store import JobRecord
from tests.support.fakes import FakeClock, FakeEnhancer, FakeGenerator, RecordingChat
from tests.support.waiting import until_idle

ROOT = Path(__file__).resolve().parents[2]
POT = LOCALE_DIR / "sakaibot.pot"
TRANSLATED = [language for language in LANGUAGES if language != "en"]
PERSIAN_LETTER = re.compile("[\u0600-\u06ff]")


def _read_po(path: Path) -> Catalog:
    with path.open("rb") as handle:
        return read_po(handle)


def _po(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / "sakaibot.po"


def _ids(catalog: Catalog) -> set[str | tuple[str, ...]]:
    return {message.id for message in catalog if message.id}


def _fields(text: str) -> set[tuple[str, str]]:
    """The ``{name:spec}`` placeholders of a message."""
    return {
        (name, spec or "")
        for _, name, spec, _ in string.Formatter().parse(text)
        if name is not None
    }


def _english_fields(message: Message) -> set[tuple[str, str]]:
    ids = message.id if isinstance(message.id, tuple) else (message.id,)
    return set().union(*(_fields(text) for text in ids))


def _forms(message: Message) -> tuple[str, ...]:
    forms = message.string
    return tuple(forms) if isinstance(forms, (tuple, list)) else (forms,)


def _key(message: Message) -> str | tuple[str, ...]:
    return tuple(message.id) if isinstance(message.id, (tuple, list)) else message.id


# -- the catalogues ------------------------------------------------------------


def test_the_template_holds_exactly_the_messages_in_the_source() -> None:
    with (ROOT / "babel.cfg").open() as mapping:
        assert "[python: **.py]" in mapping.read()
    found = {
        message if isinstance(message, str) else tuple(message)
        for _, _, message, _, _ in extract_from_dir(
            str(ROOT / "src" / "sakaibot"), [("**.py", "python")]
        )
        if message
    }
    template = _ids(_read_po(POT))
    assert found - template == set(), "new messages: run `make translations`"
    assert template - found == set(), "messages no longer used: run `make translations`"


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_message_has_a_translation_with_the_same_placeholders(language: str) -> None:
    template = _read_po(POT)
    catalog = _read_po(_po(language))
    missing = sorted(
        str(message.id)
        for message in catalog
        if message.id and (message.fuzzy or not all(_forms(message)))
    )
    missing += sorted(str(m) for m in _ids(template) - _ids(catalog))
    assert missing == [], f"{language}: no (or a fuzzy) translation for: {missing}"
    assert _ids(catalog) == _ids(template), f"{language}: messages not in the template"
    mismatched = {
        str(message.id): sorted(_fields(form) ^ _english_fields(message))
        for message in catalog
        if message.id
        for form in _forms(message)
        if _fields(form) != _english_fields(message)
    }
    assert mismatched == {}, f"{language}: placeholders differ from the English"


def test_the_parity_check_fails_on_a_missing_or_different_placeholder() -> None:
    """The check above can fail: a renamed placeholder and an empty string are caught."""
    renamed = Message("The {model} queue is full.", "صف {mdl} پر است.")
    assert _fields(_forms(renamed)[0]) != _english_fields(renamed)
    plural = Message(("{count} image", "{count} images"), ("{count} تصویر", ""))
    assert not all(_forms(plural))


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_compiled_catalogue_matches_its_source(language: str) -> None:
    source = _read_po(_po(language))
    with (LOCALE_DIR / language / "LC_MESSAGES" / "sakaibot.mo").open("rb") as handle:
        compiled = read_mo(handle)
    expected = {_key(m): _forms(m) for m in source if m.id and not m.fuzzy}
    assert {_key(m): _forms(m) for m in compiled if m.id} == expected, "run `make translations`"
    assert compiled.plural_forms == source.plural_forms


# -- rendering -----------------------------------------------------------------


def test_english_is_the_source_text_itself() -> None:
    assert load_texts("en") is ENGLISH
    error = QueueFull("flux", 50)
    assert (
        error.message_in(ENGLISH)
        == error.user_message
        == (
            "The flux queue is full (50 waiting). "
            "Try again in a few minutes, or use another model (/image models)."
        )
    )
    assert "\u2066" not in queued_text("Flux", QueuePlace(2, 30.0))


def test_persian_wraps_ids_and_commands_in_isolates() -> None:
    fa = load_texts("fa")
    text = DeliveryFailed("refused", job_id="abc123", kept_for_s=3600).message_in(fa)
    assert PERSIAN_LETTER.search(text)
    assert f"{LRI}/image retry {LRI}abc123{PDI}{PDI}" in text
    assert "1 ساعت" in text  # the duration, in Persian, filled in
    assert "{" not in text
    # The sentence's punctuation stays outside the command's isolate.
    full = QueueFull("flux", 50).message_in(fa)
    assert full.endswith(f"({LRI}/image models{PDI}).")


def test_persian_plurals_durations_and_a_persian_prompt_read_right() -> None:
    fa = load_texts("fa")
    text = RateLimited(retry_after_s=125, limit=5, window_s=3600).message_in(fa)
    assert "5 تصویر" in text
    assert "2 دقیقه و 5 ثانیه" in text
    # A value with Persian letters is isolated by its own first strong letter.
    assert isolate("روباه red") == f"{FSI}روباه red{PDI}"
    assert isolate("flux") == f"{LRI}flux{PDI}"


def test_a_status_in_persian_names_the_model_in_an_isolate() -> None:
    text = queued_text("FLUX.1 [schnell]", QueuePlace(3, 90.0), load_texts("fa"))
    assert text.startswith("⏳ در صف ")
    assert f"{LRI}FLUX.1 [schnell]{PDI}" in text
    assert "نوبت 3" in text


def test_a_language_without_a_catalogue_is_refused() -> None:
    with pytest.raises(ValueError, match="xx"):
        Languages("xx")
    languages = Languages("en")
    languages.remember({"chat-1": "fa", "chat-2": "xx"})
    assert languages.for_chat("chat-1").language == "fa"
    assert languages.for_chat("chat-2").language == "en"  # not offered: the default


# -- a chat's language, end to end ---------------------------------------------


def _app(chat: RecordingChat, clock: FakeClock, **values: object) -> App:
    settings = load_settings(
        env_file=None,
        flux_worker_url="http://127.0.0.1:9/flux",
        **values,
    )
    return build_app(
        settings,
        chat,
        generator=FakeGenerator(),
        enhancer=FakeEnhancer(),
        clock=clock,
        sleep=clock.sleep,
    )


async def _say(app: App, text: str, *, message_id: int, owner: bool = False) -> None:
    message = IncomingMessage(
        chat_id="chat", message_id=message_id, user_id="ann", text=text, from_owner=owner
    )
    await asyncio.wait_for(app.bot.handle(message), timeout=10)


async def test_lang_fa_answers_the_chat_in_persian_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app = _app(chat, clock, sakaibot_data_dir=tmp_path)
    await app.start()
    try:
        await _say(app, "/image lang fa", message_id=1, owner=True)
        await _say(app, "/image=dalle=a cat", message_id=2)
    finally:
        await app.aclose()
    [chosen] = [e.text for e in chat.events if e.reply_to == 1]
    assert chosen == "✅ از این پس در این گفتگو به فارسی پاسخ داده می‌شود."
    [refused] = [e.text for e in chat.events if e.reply_to == 2]
    assert refused == f"❌ {UnknownModel('dalle', ['flux']).message_in(load_texts('fa'))}"
    assert f"{LRI}dalle{PDI}" in refused

    restarted = _app(chat, clock, sakaibot_data_dir=tmp_path)
    await restarted.start()
    try:
        await _say(restarted, "/image lang", message_id=3)
    finally:
        await restarted.aclose()
    [told] = [e.text for e in chat.events if e.reply_to == 3]
    assert told.startswith("زبان پاسخ‌ها در این گفتگو فارسی است.")


async def test_only_the_owner_chooses_and_an_unknown_language_is_named(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app = _app(chat, clock, sakaibot_data_dir=tmp_path)
    await app.start()
    try:
        await _say(app, "/image lang fa", message_id=1)
        await _say(app, "/image lang de", message_id=2, owner=True)
    finally:
        await app.aclose()
    assert [e.text for e in chat.events if e.reply_to == 1] == [
        "❌ Only the bot's owner can use /image lang."
    ]
    assert [e.text for e in chat.events if e.reply_to == 2] == [
        "❌ There is no language 'de'. Available: en, fa, e.g. /image lang fa."
    ]


async def test_bot_language_is_every_chats_default(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    # No prompt improved ahead: the first status is the job's place in the queue.
    app = _app(chat, clock, sakaibot_data_dir=tmp_path, bot_language="fa", enhance_ahead=0)
    await app.start()
    try:
        await _say(app, "/image=flux=a red fox", message_id=1)
        await asyncio.wait_for(app.drain(), timeout=10)
        await _say(app, "/image lang en", message_id=2, owner=True)
        await _say(app, "/image=dalle=a cat", message_id=3)
    finally:
        await app.aclose()
    [queued] = [e.text for e in chat.events if e.reply_to == 1 and e.kind == "send"]
    assert queued == "⏳ در صف \u2066Flux\u2069: نفر بعدی هستید، آماده در حدود 10 ثانیه."
    [image] = [e for e in chat.events if e.reply_to == 1 and e.kind == "image"]
    assert image.text.startswith("\u200f🎨 \u2066Flux\u2069 · پرامپت: ")
    assert [e.text for e in chat.events if e.reply_to == 3] == [
        f"❌ {UnknownModel('dalle', ['flux']).user_message}"
    ]


def test_bot_language_must_be_offered() -> None:
    with pytest.raises(ConfigError, match="BOT_LANGUAGE"):
        load_settings(env_file=None, bot_language="de")


def test_the_catalogue_files_are_shipped_with_the_package() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"locale/*/LC_MESSAGES/*.mo"' in pyproject


async def test_a_persian_console_chat_shows_persian_with_its_isolates(tmp_path: Path) -> None:
    out = io.StringIO()
    chat = ConsoleChat(out, out_dir=tmp_path / "out", jsonl=False, echo_input=True)
    clock = FakeClock()
    app = build_app(
        load_settings(
            env_file=None,
            flux_worker_url="http://127.0.0.1:9/flux",
            sakaibot_data_dir=tmp_path / "data",
        ),
        chat,
        generator=FakeGenerator(),
        enhancer=FakeEnhancer(),
        clock=clock,
        sleep=clock.sleep,
    )
    await app.start()
    try:
        for line in ("/image lang fa", "/image retry abc123"):
            message = chat.incoming(line)
            assert message is not None
            await asyncio.wait_for(app.bot.handle(message), timeout=10)
    finally:
        await app.aclose()
    lines = out.getvalue().splitlines()
    assert lines[1] == "bot #2 ↩ #1: ✅ از این پس در این گفتگو به فارسی پاسخ داده می‌شود."
    assert lines[3].startswith(f"bot #4 ↩ #3: ❌ تصویر ارسال‌نشده‌ای با شناسهٔ {LRI}abc123{PDI} ")
    assert f"{LRI}/image=...{PDI}" in lines[3]


def test_a_failure_from_another_process_is_told_in_the_chats_language() -> None:
    fa = load_texts("fa")
    sent = QuotaExhausted("daily quota", model="Flux")
    received = from_wire(
        sent.kind,
        sent.user_message,
        "daily quota",
        model="Flux",
        messages={text.language: sent.message_in(text) for text in every_language()},
    )
    assert isinstance(received, QuotaExhausted)
    assert received.message_in(fa) == sent.message_in(fa)
    assert received.user_message == sent.user_message
    # From a worker of an older version: its one message, whatever the language.
    older = from_wire(sent.kind, sent.user_message, "daily quota", model="Flux")
    assert older.message_in(fa) == sent.user_message


def test_a_bad_flag_and_the_history_are_told_in_persian() -> None:
    fa = load_texts("fa")
    sdxl = ModelSpec(
        name="sdxl", contract=Contract.POST, url="http://127.0.0.1:9", options=frozenset({"ar"})
    )
    registry = ModelRegistry([sdxl])
    with pytest.raises(BadFlag) as caught:
        parse_command("/image=sdxl=a fox --ar 5:4", registry, max_prompt_chars=100)
    text = caught.value.message_in(fa)
    assert text.startswith(f"اشکال در {LRI}--ar{PDI}: «{LRI}5:4{PDI}» مقدار درستی نیست.")
    # English stays what it always was.
    assert caught.value.user_message.startswith("Problem with --ar: '5:4' is not a valid value.")
    record = JobRecord(
        id="ab12cd", user_id="ann", chat_id="chat", reply_to=1, model="sdxl",
        request_json="{}", prompt="یک روباه قرمز", created_at_s=0.0, state="done",
    )  # fmt: skip
    history = format_history([record], now_s=120.0, texts=fa).splitlines()
    assert history[0] == "1 تصویر آخر شما:"
    assert history[1] == f"• {LRI}ab12cd{PDI} {LRI}sdxl{PDI}، 2 دقیقه پیش: تحویل شد — یک روباه قرمز"


def test_a_flag_in_a_persian_sentence_is_isolated() -> None:
    fa = load_texts("fa")
    sdxl = ModelSpec(
        name="sdxl", contract=Contract.POST, url="http://127.0.0.1:9", options=frozenset({"seed"})
    )
    with pytest.raises(BadFlag) as caught:
        parse_command("/image=sdxl=a fox --seed x", ModelRegistry([sdxl]), max_prompt_chars=100)
    assert f"{LRI}--seed{PDI} یک عدد صحیح" in caught.value.message_in(fa)


async def test_buttons_press_answers_and_defaults_in_a_persian_chat(tmp_path: Path) -> None:
    clock = FakeClock()
    chat = RecordingChat(clock=clock)
    app = _app(chat, clock, sakaibot_data_dir=tmp_path, bot_language="fa")
    await app.start()
    try:
        await _say(app, "/image=flux=a red fox", message_id=1)
        await until_idle(app)
        await asyncio.wait_for(app.status.drain(), timeout=10)
        [image] = chat.of_kind("image")
        again, as_file = image.actions
        assert (again.label, as_file.label) == ("🔁 دوباره", "📄 به‌صورت فایل")
        # Someone else's press, then the owner's: each told in the chat's language.
        stranger = ActionPress("chat", image.message_id, "bob", as_file)
        told = await asyncio.wait_for(app.bot.handle_action(stranger), timeout=10)
        assert told.text == NotYourButton().message_in(load_texts("fa"))
        assert told.text.startswith("فقط کسی که این تصویر را خواسته")
        done = await app.bot.handle_action(ActionPress("chat", image.message_id, "ann", as_file))
        assert done.text == "📄 به‌صورت فایل فرستاده شد."
        await _say(app, "/image set ar 16:9", message_id=5, owner=True)
        await _say(app, "/image set", message_id=6)
        await _say(app, "/image set raw maybe", message_id=7, owner=True)
    finally:
        await app.aclose()
    [set_ar] = [e.text for e in chat.events if e.reply_to == 5]
    assert set_ar.startswith(f"✅ از این پس هر تصویر در این گفتگو {LRI}--ar 16:9{PDI} می‌گیرد")
    [shown] = [e.text for e in chat.events if e.reply_to == 6]
    assert shown.splitlines()[0] == f"پیش‌فرض‌های این گفتگو: {LRI}--ar 16:9{PDI}"
    [refused] = [e.text for e in chat.events if e.reply_to == 7]
    assert refused == (
        f"❌ اشکال در {LRI}/image set raw{PDI}: «{LRI}maybe{PDI}» نه on است نه off؛ "
        f"مثلاً {LRI}/image set raw on{PDI}."
    )


def test_a_daily_budget_and_everyones_limit_are_told_in_persian() -> None:
    fa = load_texts("fa")
    paused = PausedUntilReset("Flux", 3 * 3600 + 60, fallback="SDXL")
    assert paused.message_in(fa) == (
        f"تصویرهای امروز {LRI}Flux{PDI} تمام شده است؛ ساعت ۰۰:۰۰ به وقت UTC "
        f"(تا 3 ساعت و 1 دقیقه دیگر) برمی‌گردد. تا آن زمان از {LRI}SDXL{PDI} استفاده کنید."
    )
    assert paused.user_message == (
        "Flux has used up today's images; it comes back at 00:00 UTC (in 3 h 1 min). "
        "Until then, use SDXL."
    )
    everyone = EveryoneRateLimited(30.0, 100, 3600.0)
    assert everyone.message_in(fa) == (
        "ربات به سقف 100 تصویر در هر 1 ساعت برای همهٔ کاربران رسیده است. 30 ثانیه دیگر "
        "دوباره امتحان کنید."
    )
