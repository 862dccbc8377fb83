"""Prompt enhancement: the interface the pipeline uses, and the result it gets.

The OpenAI-SDK adapter lives in :mod:`sakaibot.enhancer.llm` and the output
cleaning rules in :mod:`sakaibot.enhancer.cleaning`; this module imports
neither, so the core never loads the OpenAI SDK.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

#: What the caption says when no LLM improved the prompt.
ORIGINAL_PROMPT = "original prompt"


@dataclass(frozen=True)
class EnhancedPrompt:
    """The prompt to generate from, and who wrote it."""

    text: str
    #: "OpenRouter (model)", "Gemini (model)" or :data:`ORIGINAL_PROMPT`.
    source: str = ORIGINAL_PROMPT

    @property
    def enhanced(self) -> bool:
        return self.source != ORIGINAL_PROMPT


class PromptEnhancer(Protocol):
    """Improves a prompt; never raises and never fails a job."""

    async def enhance(self, prompt: str) -> EnhancedPrompt: ...
