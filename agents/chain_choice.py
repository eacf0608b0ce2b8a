"""GCR's relation-path step: the language model scores which relation chain answers the question.

Reasoning on Graphs / GCR let the model write the relation path under a trie of the paths that exist. Here
the candidates are the chains that exist from the linked entity (the fast scorer's best few), each written
as its relations' words; the model scores each by the mean log-probability of its tokens after the
question (a trie over so few candidates adds nothing over scoring each whole). The score joins the fast
scorer's with weight `MODEL_WEIGHT`. A small model reads relation words poorly, so this runs only when
`TRELLIS_CHAIN_SCORER=model`, or `auto` with a model of at least `AUTO_MIN_PARAMETERS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from agents.usage import counted
from graph.paths import Pattern
from graph.relations import relation_name
from lm.remote import is_remote, note
from lm.scoring import continuation_log_probs

if TYPE_CHECKING:
    from lm.model import LanguageModel

MODEL_WEIGHT = 1.0  # nats of mean token log-probability worth one point of the fast score
AUTO_MIN_PARAMETERS = 400_000_000


def chain_text(pattern: Pattern) -> str:
    """`plays in club, then is in country`; a hop taken backwards says so."""
    return ", then ".join(relation_name(r).words + ("" if forward else " (of)") for r, forward in pattern)


def model_chooses(model: LanguageModel, setting: str) -> bool:
    if setting == "model":
        return True
    return setting == "auto" and model_parameters(model) >= AUTO_MIN_PARAMETERS


@lru_cache(maxsize=4)
def model_parameters(model: LanguageModel) -> int:
    """Counted once per model, not per question; 0 for a server's model, whose size is not known here (so
    `auto` settings keep to what needs no model score; set them to `model` to use the server's scores)."""
    if is_remote(model):
        return 0
    return sum(p.numel() for p in model.model.parameters())


def chain_log_probs(model: LanguageModel, question: str, mention: str, patterns: Sequence[Pattern]) -> list[float]:
    """Mean log-probability of each chain's text after the question (`lm.scoring`: one batch over the
    prompt's cached keys and values)."""
    prompt = counted(
        model,
        model.chat_prompt(
            f"Question: {question}\nWhich relations of the knowledge graph lead from {mention} to the answer?"
        ),
    )
    if is_remote(model):
        scores = model.score_continuations(prompt + "Relations:", [chain_text(p) for p in patterns])  # type: ignore[attr-defined]
        if scores is None:
            note(
                "chain choice: skipped (the server returns no prompt log-probabilities); the fast scorer decides",
                question,
            )
            return [0.0] * len(patterns)
        note("chain choice: scored by the server's prompt log-probabilities (echo) on a plain-text prompt", question)
        return [total / max(tokens, 1) for total, tokens in scores]
    bodies = [model.encode(chain_text(p)) or [model.eos_token_id] for p in patterns]
    return [score.mean for score in continuation_log_probs(model, model.encode(prompt + "Relations: "), bodies)]
