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

import torch

from graph.paths import Pattern
from graph.relations import relation_name

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
    """Counted once per model, not per question."""
    return sum(p.numel() for p in model.model.parameters())


def chain_log_probs(model: LanguageModel, question: str, mention: str, patterns: Sequence[Pattern]) -> list[float]:
    """Mean log-probability of each chain's text after the question, in one batched forward pass."""
    prompt = model.chat_prompt(
        f"Question: {question}\nWhich relations of the knowledge graph lead from {mention} to the answer?"
    )
    prefix = model.encode(prompt + "Relations: ")
    bodies = [model.encode(chain_text(p)) or [model.eos_token_id] for p in patterns]
    rows = [prefix + body for body in bodies]
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=model.device)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=model.device)
    with model.lock, torch.inference_mode():
        logits = model.model(input_ids=ids, attention_mask=mask).logits.float()
    log_probs = torch.log_softmax(logits[:, :-1], dim=-1)
    scores = []
    for row, body in enumerate(bodies):
        start = len(prefix) - 1  # the logits at position i predict token i + 1
        picked = log_probs[row, start : start + len(body)].gather(
            1, ids[row, len(prefix) : len(prefix) + len(body), None]
        )
        scores.append(float(picked.mean()))
    return scores
