"""Writing answers: graph paths under the KG-Trie constraint, document answers under AdaCAD, closed-book."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from agents.resources import Resources
from graph.paths import Path
from graph.trie import KGTrie
from lm.arbitration import AdaCAD, ArbitrationTrace, CKPlug, PairedArbitration, arbitrated_generate, entropy_bits
from lm.constraints import constrained_greedy

ANSWER_TOKENS = 24
ASK_SHORT = "Answer with a short phrase only."
# While a caller tallies (the OpenAI endpoint's usage), the token count of every prompt built for the model to
# read is appended here. A list, so that the contexts LangGraph copies for its nodes add to the caller's.
PROMPT_TALLY: ContextVar[list[int] | None] = ContextVar("prompt_tally", default=None)


def tallied(resources: Resources, prompt: str) -> str:
    """`prompt`, its tokens counted into PROMPT_TALLY when a caller has set one (else no cost)."""
    tally = PROMPT_TALLY.get()
    if tally is not None:
        tally.append(len(resources.model.encode(prompt)))
    return prompt


@dataclass
class GraphAnswer:
    path: Path
    log_prob: float
    choices: int
    forward_passes: int
    offered: int  # paths in the trie


def graph_answer(resources: Resources, question: str, paths: list[Path]) -> GraphAnswer | None:
    """The path the model writes under the constraint of `paths` (greedy, one whole path)."""
    if not paths:
        return None
    model = resources.model
    trie = KGTrie(paths, model.encode, encode_batch=model.encode_batch)
    prompt = tallied(resources, model.chat_prompt(f"{question}\nAnswer with a path of the knowledge graph."))
    chosen = constrained_greedy(model, model.encode(prompt) + list(trie.start_ids), trie.trie)
    path = trie.path_of(chosen.segment)
    if path is None:  # cannot happen for a whole trie sequence; kept as a guard
        return None
    return GraphAnswer(path, chosen.log_prob, chosen.choices, chosen.forward_passes, len(paths))


@dataclass
class TextAnswer:
    text: str
    method: str
    trace: ArbitrationTrace = field(default_factory=ArbitrationTrace)


def context_prompt(resources: Resources, question: str, passages: list[str]) -> str:
    context = "\n\n".join(passages)
    return tallied(resources, resources.model.chat_prompt(f"Context: {context}\n\nQuestion: {question}\n{ASK_SHORT}"))


def closed_book_prompt(resources: Resources, question: str) -> str:
    return tallied(resources, resources.model.chat_prompt(f"Question: {question}\n{ASK_SHORT}"))


def document_answer(
    resources: Resources,
    question: str,
    passages: list[str],
    method: str = "adacad",
    reliance: float = 0.0,
    on_text: Callable[[str], None] | None = None,
) -> TextAnswer:
    """An answer from the passages, arbitrated against the model's own knowledge (AdaCAD by default)."""
    processor: PairedArbitration = AdaCAD() if method == "adacad" else CKPlug(reliance)
    text = arbitrated_generate(
        resources.model,
        context_prompt(resources, question, passages),
        closed_book_prompt(resources, question),
        processor,
        ANSWER_TOKENS,
        on_text=on_text,
    )
    return TextAnswer(text.strip(), method, processor.trace)


def closed_book_entropy(resources: Resources, question: str) -> float:
    """Entropy (bits) of the model's first answer token with no context: low means it knows (or thinks so)."""
    model = resources.model
    ids = torch.tensor([model.encode(closed_book_prompt(resources, question))], device=model.device)
    with model.lock, torch.inference_mode():
        logits = model.model(ids).logits[0, -1].float()
    return float(entropy_bits(torch.log_softmax(logits, dim=-1)))


def closed_book_answer(resources: Resources, question: str, on_text: Callable[[str], None] | None = None) -> TextAnswer:
    model = resources.model
    text = model.greedy(model.encode(closed_book_prompt(resources, question)), ANSWER_TOKENS, on_text=on_text)
    return TextAnswer(text.strip(), "closed-book")


def probability(log_prob: float) -> float:
    return round(math.exp(log_prob), 4)
