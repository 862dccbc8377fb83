"""The languages users are answered in: gettext catalogues, and text that reads right to left.

English is the source language: every message is written in English where it
is used, as ``texts.gettext("The {model} queue is full.", model=name)``, and
that English text is its ``msgid``. ``pybabel extract`` collects them into
``locale/sakaibot.pot``; each other language has a ``.po`` file translated
from it and a compiled ``.mo`` file read here with the standard library's
:mod:`gettext` (``docs/image-generation/translations.md``; ``make translations``).

Placeholders are Python's named braces, filled after translation, so a
translation may put them in any order. In a right-to-left language every text
value filled in that is not purely right-to-left (model names, ids, English
prompts) is wrapped in a Unicode isolate (:func:`isolate`), and so is every
``/image ...`` command or ``--flag`` written in a message, so Latin runs inside
Persian sentences keep their order. The cleaning of user input strips these
characters from what users send (``commands.strip_invisible``); our own texts
keep them.
"""

from __future__ import annotations

import gettext
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Final

#: The languages there is a catalogue for; English needs none.
LANGUAGES: Final = ("en", "fa")
SOURCE_LANGUAGE: Final = "en"
_RIGHT_TO_LEFT: Final = frozenset({"fa"})
#: The gettext domain: ``locale/<language>/LC_MESSAGES/sakaibot.mo``.
DOMAIN: Final = "sakaibot"
LOCALE_DIR: Final = Path(__file__).parent / "locale"
#: The store's name of a chat's language (``Store.chat_settings``).
LANGUAGE_SETTING: Final = "language"

#: Unicode 6.3 isolates (UAX #9): left-to-right, first-strong, and their end.
LRI: Final = "\u2066"
FSI: Final = "\u2068"
PDI: Final = "\u2069"

#: An ``/image ...`` command or a ``--flag`` written in a message: ASCII from
#: there on, up to the first letter of the sentence around it (placeholders included).
_COMMAND = re.compile(r"(?:/image|--[a-z])[\x20-\x7e]*")
_COMMAND_TAIL = " .,;:!?)"


def N_(message: str) -> str:  # noqa: N802 (gettext's name for it, which pybabel looks for)
    """Mark ``message`` for ``pybabel extract`` where it is only translated later."""
    return message


def isolate(value: str) -> str:
    """``value`` as a unit inside right-to-left text.

    Text in a right-to-left script alone needs nothing; anything else is
    isolated: left to right when it has no right-to-left letter (names, ids,
    numbers with signs), else by its own first strong letter (a mixed prompt).
    """
    directions = {unicodedata.bidirectional(char) for char in value}
    right_to_left = bool(directions & {"R", "AL"})
    if not value or (right_to_left and "L" not in directions):
        return value
    return f"{FSI if right_to_left else LRI}{value}{PDI}"


def _isolate_commands(template: str) -> str:
    def wrap(match: re.Match[str]) -> str:
        command = match.group(0)
        core = command
        # Punctuation of the sentence stays outside; "/image=..." keeps its dots.
        while core and core[-1] in _COMMAND_TAIL and not core.endswith("..."):
            core = core[:-1]
        return f"{LRI}{core}{PDI}{command[len(core) :]}"

    return _COMMAND.sub(wrap, template)


class _Ours(str):
    """A message rendered in a right-to-left language: filled into another, it is not isolated."""

    __slots__ = ()


class Texts:
    """Every user-visible message in one language: translated, then filled in.

    One per language, built once by :class:`Languages`; passed to whatever
    renders a message for a chat.
    """

    def __init__(self, language: str, translations: gettext.NullTranslations) -> None:
        self.language = language
        self.right_to_left = language in _RIGHT_TO_LEFT
        self._translations = translations

    def gettext(self, message: str, /, **values: object) -> str:
        """``message`` in this language, its ``{placeholders}`` filled from ``values``."""
        return self._fill(self._translations.gettext(message), values)

    def ngettext(self, singular: str, plural: str, count: int, /, **values: object) -> str:
        """The form for ``count`` (``{count}`` is filled in too)."""
        return self._fill(
            self._translations.ngettext(singular, plural, count), {"count": count, **values}
        )

    def _fill(self, template: str, values: dict[str, object]) -> str:
        if not self.right_to_left:
            # A message without values is not formatted: its braces are literal.
            return template.format(**values) if values else template
        template = _isolate_commands(template)
        values = {
            # Our own sentence put in another reads as the one around it; other text is isolated.
            name: isolate(value)
            if isinstance(value, str) and not isinstance(value, _Ours)
            else value
            for name, value in values.items()
        }
        return _Ours(template.format(**values) if values else template)

    def __repr__(self) -> str:
        return f"Texts({self.language!r})"


#: English, the source language: every ``msgid`` is its own English text.
ENGLISH: Final = Texts(SOURCE_LANGUAGE, gettext.NullTranslations())


def english_for(chat_id: str) -> Texts:
    """Every chat in English: the default where no :class:`Languages` is wired in."""
    return ENGLISH


def load_texts(language: str, *, locale_dir: Path = LOCALE_DIR) -> Texts:
    """The :class:`Texts` of ``language`` from its compiled catalogue.

    Raises :class:`FileNotFoundError` when the catalogue is missing (a broken install).
    """
    if language == SOURCE_LANGUAGE:
        return ENGLISH
    translations = gettext.translation(DOMAIN, localedir=locale_dir, languages=[language])
    return Texts(language, translations)


def every_language() -> tuple[Texts, ...]:
    """The :class:`Texts` of every language offered, English first."""
    return tuple(load_texts(language) for language in LANGUAGES)


class Languages:
    """The :class:`Texts` of every language, and which one each chat is answered in.

    A chat's choice (``/image lang``) is kept in the store; :meth:`remember`
    loads every choice at start (one row per chat that made one), so looking
    a chat's language up never waits.
    """

    def __init__(self, default: str, *, languages: Iterable[str] = LANGUAGES) -> None:
        self._texts = {language: load_texts(language) for language in languages}
        if default not in self._texts:
            raise ValueError(f"no catalogue for language {default!r}")
        self.default = default
        self._chosen: dict[str, str] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._texts)

    def texts(self, language: str) -> Texts:
        return self._texts.get(language, self._texts[self.default])

    def for_chat(self, chat_id: str) -> Texts:
        """The texts ``chat_id`` is answered in: its own choice, else the default."""
        return self.texts(self._chosen.get(chat_id, self.default))

    def remember(self, choices: dict[str, str]) -> None:
        """Take chats' choices as stored (languages no longer offered are skipped)."""
        self._chosen.update({c: lang for c, lang in choices.items() if lang in self._texts})
