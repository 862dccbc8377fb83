"""Plain fakes for the edges the core talks to: a chat, a clock, a generator, an enhancer."""

from __future__ import annotations

import asyncio
import io
from dataclasses import dataclass, field

from PIL import Image

from sakaibot.captions import Caption
from sakaibot.chat.port import Action, OutgoingImage
from sakaibot.enhancer import EnhancedPrompt
from sakaibot.errors import GenerationError, SakaiBotError
from sakaibot.generation import GeneratedImage, GenerationParams, GenerationResult
from sakaibot.models import Contract, ModelRegistry, ModelSpec


class FakeClock:
    """Time that moves only when something sleeps on it (or a test advances it)."""

    def __init__(self, start_s: float = 1000.0) -> None:
        self.now_s = start_s
        #: When set, sleeping waits for this event first: a test can hold
        #: whoever sleeps (a muted status lane) while other work goes on.
        self.gate: asyncio.Event | None = None

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds

    async def sleep(self, seconds: float) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.now_s += max(seconds, 0.0)
        await asyncio.sleep(0)


@dataclass
class ChatEvent:
    kind: str  # send | edit | delete | image
    message_id: int
    text: str = ""
    reply_to: int | None = None
    at_s: float = 0.0
    image: OutgoingImage | None = None
    #: The one-tap actions offered under the message (as a bot account's buttons).
    actions: tuple[Action, ...] = ()


@dataclass
class RecordingChat:
    """A chat port that records what a person would see; failures can be scripted."""

    clock: FakeClock | None = None
    events: list[ChatEvent] = field(default_factory=list)
    texts: dict[int, str] = field(default_factory=dict)
    #: Exceptions raised by the next edits / sends / image sends, in order.
    edit_failures: list[SakaiBotError] = field(default_factory=list)
    send_failures: list[SakaiBotError] = field(default_factory=list)
    image_failures: list[SakaiBotError] = field(default_factory=list)
    #: The message ids of each album sent, in order.
    albums: list[list[int]] = field(default_factory=list)
    #: What :meth:`remember_chat` was taught, by chat id.
    addresses: dict[str, str] = field(default_factory=dict)
    _last_id: int = 100

    def _now(self) -> float:
        return self.clock() if self.clock is not None else 0.0

    def _new_id(self) -> int:
        self._last_id += 1
        return self._last_id

    def remember_chat(self, chat_id: str, address: str | None) -> None:
        if address is not None:
            self.addresses[chat_id] = address

    async def send_text(
        self,
        chat_id: str,
        text: str,
        *,
        reply_to: int | None,
        actions: tuple[Action, ...] = (),
    ) -> int:
        if self.send_failures:
            raise self.send_failures.pop(0)
        message_id = self._new_id()
        self.texts[message_id] = text
        self.events.append(
            ChatEvent("send", message_id, text, reply_to, self._now(), actions=actions)
        )
        return message_id

    async def edit_text(
        self, chat_id: str, message_id: int, text: str, *, actions: tuple[Action, ...] = ()
    ) -> None:
        if self.edit_failures:
            raise self.edit_failures.pop(0)
        self.texts[message_id] = text
        self.events.append(ChatEvent("edit", message_id, text, None, self._now(), actions=actions))

    async def delete_message(self, chat_id: str, message_id: int) -> None:
        self.texts.pop(message_id, None)
        self.events.append(ChatEvent("delete", message_id, at_s=self._now()))

    async def send_image(self, chat_id: str, image: OutgoingImage, *, reply_to: int | None) -> int:
        if self.image_failures:
            raise self.image_failures.pop(0)
        message_id = self._new_id()
        self.events.append(
            ChatEvent(
                "image",
                message_id,
                image.caption.plain(),
                reply_to,
                self._now(),
                image,
                actions=image.actions,
            )
        )
        return message_id

    async def send_album(
        self, chat_id: str, images: list[OutgoingImage], caption: Caption, *, reply_to: int | None
    ) -> list[int]:
        """One ``image`` event per image, the caption on the first (as Telegram shows it)."""
        if self.image_failures:
            raise self.image_failures.pop(0)
        ids: list[int] = []
        for index, image in enumerate(images):
            message_id = self._new_id()
            text = caption.plain() if index == 0 else ""
            self.events.append(ChatEvent("image", message_id, text, reply_to, self._now(), image))
            ids.append(message_id)
        self.albums.append(ids)
        return ids

    async def find_delivered(self, chat_id: str, *, reply_to: int, job_id: str) -> int | None:
        for event in self.events:
            if event.kind == "image" and event.image is not None and job_id in event.image.filename:
                return event.message_id
        return None

    def of_kind(self, kind: str) -> list[ChatEvent]:
        return [event for event in self.events if event.kind == kind]

    def visible_texts(self) -> list[str]:
        """Texts of the messages still in the chat, oldest first."""
        return list(self.texts.values())


def tiny_image(fmt: str = "JPEG") -> GeneratedImage:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 40, 40)).save(buffer, format=fmt)
    mime, ext = ("image/png", ".png") if fmt == "PNG" else ("image/jpeg", ".jpg")
    return GeneratedImage(data=buffer.getvalue(), mime_type=mime, extension=ext, width=8, height=6)


@dataclass
class FakeGenerator:
    """Returns an image (or a scripted error); can hold jobs until a test releases them."""

    errors: list[GenerationError] = field(default_factory=list)
    calls: list[tuple[str, GenerationParams]] = field(default_factory=list)
    gate: asyncio.Event | None = None
    #: While held at the gate, ignore every cancel (as a cancel lost in flight is).
    deaf: bool = False
    running: int = 0
    max_running: dict[str, int] = field(default_factory=dict)

    async def generate(self, model: ModelSpec, params: GenerationParams) -> GenerationResult:
        self.calls.append((model.name, params))
        self.running += 1
        self.max_running[model.name] = max(self.max_running.get(model.name, 0), self.running)
        try:
            while self.gate is not None and not self.gate.is_set():
                try:
                    await self.gate.wait()
                except asyncio.CancelledError:
                    if not self.deaf:
                        raise
            if self.errors:
                return GenerationResult(False, None, self.errors.pop(0))
            return GenerationResult(True, tiny_image(), None)
        finally:
            self.running -= 1


@dataclass
class FakeEnhancer:
    """Prefixes the prompt, as an LLM that always answers would."""

    source: str = "TestLLM (model-x)"
    prompts: list[str] = field(default_factory=list)

    async def enhance(self, prompt: str) -> EnhancedPrompt:
        self.prompts.append(prompt)
        return EnhancedPrompt(text=f"enhanced: {prompt}", source=self.source)


def registry(*, flux_concurrency: int = 1, sdxl_concurrency: int = 1) -> ModelRegistry:
    return ModelRegistry(
        [
            ModelSpec(
                name="flux",
                contract=Contract.GET,
                url="http://127.0.0.1:9/flux",
                options=frozenset({"seed", "steps"}),
                max_steps=8,
                concurrency=flux_concurrency,
                typical_duration_s=10.0,
                label="Flux",
            ),
            ModelSpec(
                name="sdxl",
                contract=Contract.POST,
                url="http://127.0.0.1:9/sdxl",
                options=frozenset({"ar", "seed", "neg", "steps"}),
                max_steps=20,
                concurrency=sdxl_concurrency,
                typical_duration_s=12.0,
                label="SDXL",
            ),
        ]
    )
