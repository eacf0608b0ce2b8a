"""Writing answers: graph paths under the KG-Trie constraint, document answers under AdaCAD, closed-book."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from agents.resources import Resources
from agents.usage import counted
from graph.paths import Path
from graph.trie import PATH_END, PATH_START, KGTrie
from lm.arbitration import (
    AdaCAD,
    ArbitrationStep,
    ArbitrationTrace,
    CKPlug,
    PairedArbitration,
    arbitrated_generate,
    entropy_bits,
)
from lm.constraints import constrained_greedy
from lm.remote import TOP_LOGPROBS, RemoteLanguageModel, note
from lm.remote import take_approximations as take_approximations  # re-exported for the agent's trace

ANSWER_TOKENS = 24
LISTED_PATHS = 40  # paths shown in the prompt where a server cannot be constrained to them (best first)
ASK_SHORT = "Answer with a short phrase only."


def tallied(resources: Resources, prompt: str) -> str:
    """`prompt`, counted into the caller's usage tally (`agents.usage`)."""
    return counted(resources.model, prompt)


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
    if isinstance(model, RemoteLanguageModel):
        return remote_graph_answer(resources, model, question, paths, trie)
    prompt = tallied(resources, model.chat_prompt(f"{question}\nAnswer with a path of the knowledge graph."))
    chosen = constrained_greedy(model, model.encode(prompt) + list(trie.start_ids), trie.trie)
    path = trie.path_of(chosen.segment)
    if path is None:  # cannot happen for a whole trie sequence; kept as a guard
        return None
    return GraphAnswer(path, chosen.log_prob, chosen.choices, chosen.forward_passes, len(paths))


def remote_graph_answer(
    resources: Resources, model: RemoteLanguageModel, question: str, paths: list[Path], trie: KGTrie
) -> GraphAnswer:
    """The path a server writes: guided to the allowed paths where it can be, else written freely among those
    listed in the prompt; either way the reply is checked against the (character) trie. A free reply that is
    no allowed path is read leniently (an allowed path inside it, else the best-ranked path ending at an
    entity it names), else replaced by the top-ranked path; the trace says which."""
    texts = list(dict.fromkeys(p.verbalise() for p in paths))  # two paths may read alike: one choice each
    guidance = model.guidance
    ask = f"{question}\nAnswer with a path of the knowledge graph."
    if guidance is None:
        listed = "\n".join(texts[:LISTED_PATHS])
        ask += f" Copy one of these paths exactly, nothing else:\n{listed}"
        if len(texts) > LISTED_PATHS:
            note(f"graph path: no guided decoding; only the top {LISTED_PATHS} of {len(texts)} paths listed", question)
    tallied(resources, ask)
    reply = model.chat([{"role": "user", "content": ask}], max_tokens=256, top_logprobs=1, choices=texts)
    written = reply.text
    if PATH_START in written:  # a model that kept the delimiters: the text between them
        written = written.split(PATH_START, 1)[1]
    written = written.split(PATH_END.strip(), 1)[0].strip()
    path = trie.path_of(model.encode(" " + written) + list(trie.end_ids))
    if guidance is not None:
        note(f"graph path: constrained by the server's {guidance.name}, checked against the trie", question)
    else:
        note("graph path: decoded freely by the server, checked against the trie after decoding", question)
    if path is None:
        path = next((p for p in paths if p.verbalise() in written), None)
        if path is None:
            named = [p for p in paths if len(p.entity_ids) > 1 and p.end_name.casefold() in written.casefold()]
            path = named[0] if named else None
            how = "the best-ranked allowed path ending at an entity it names" if named else "the top-ranked path"
            note(f"graph path: the reply was no allowed path; taken instead: {how}", question)
            path = path or paths[0]
        else:
            note("graph path: the reply held an allowed path among other text; that path was taken", question)
    if reply.tokens:
        log_prob = sum(t.logprob for t in reply.tokens)
    else:  # no information about the choice: a uniform prior over the allowed paths, not certainty
        log_prob = -math.log(len(texts))
        note("graph path: the server returned no log-probabilities; the path's is uniform over the choices", question)
    return GraphAnswer(path, log_prob, 1, 1, len(paths))


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
    model = resources.model
    if isinstance(model, RemoteLanguageModel):
        steps = processor.trace.steps
        text = model.arbitrated(
            context_prompt(resources, question, passages),
            closed_book_prompt(resources, question),
            processor.combine,
            ANSWER_TOKENS,
            lambda token, weight, gain, conflict: steps.append(ArbitrationStep(token, weight, gain, conflict)),
            on_text=on_text,
        )
        note(
            f"{method}: each step combines the server's top-{TOP_LOGPROBS} next-token log-probabilities with and "
            "without context (a token missing from one side's top-k gets that side's lowest shown value), "
            "on plain-text prompts (no chat template), one /completions call per side per token",
            question,
        )
        return TextAnswer(text.strip(), method, processor.trace)
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
    if isinstance(model, RemoteLanguageModel):
        top = model.next_token_logprobs(closed_book_prompt(resources, question))
        note(f"closed-book entropy: over the server's top-{TOP_LOGPROBS} first tokens, renormalised", question)
        if not top:
            note("closed-book entropy: the server returned no log-probabilities; taken as unknown (infinite)", question)
            return math.inf
        return float(entropy_bits(torch.log_softmax(torch.tensor(list(top.values())), dim=-1)))
    ids = torch.tensor([model.encode(closed_book_prompt(resources, question))], device=model.device)
    with model.lock, torch.inference_mode():
        output, _ = model.forward(ids, last_logits=True)
        logits = output.logits[0, -1].float()
    return float(entropy_bits(torch.log_softmax(logits, dim=-1)))


def closed_book_answer(resources: Resources, question: str, on_text: Callable[[str], None] | None = None) -> TextAnswer:
    model = resources.model
    text = model.greedy(model.encode(closed_book_prompt(resources, question)), ANSWER_TOKENS, on_text=on_text)
    return TextAnswer(text.strip(), "closed-book")


def probability(log_prob: float) -> float:
    return round(math.exp(log_prob), 4)
