"""Prompt tokens the models read while a caller tallies them (the OpenAI endpoint's `usage.prompt_tokens`).

Every place that builds a prompt for a model passes it through `counted`; outside a tally it costs nothing.
The tally is a list in a context variable, so the contexts LangGraph copies for its nodes add to the caller's.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

PROMPT_TALLY: ContextVar[list[int] | None] = ContextVar("prompt_tally", default=None)


def counted(model: Any, prompt: str) -> str:
    """`prompt`, its tokens added to PROMPT_TALLY when a caller has set one (a server model's are estimated)."""
    tally = PROMPT_TALLY.get()
    if tally is not None:
        tally.append(model.count_tokens(prompt))
    return prompt
