"""The document route: evidence over retrieval rounds, an answer drawn from it, and a fact-level conflict check.

Retrieval runs in rounds (PIKE-RAG's decomposition, read as iterative retrieval as in RFM-RAG and
Knowledge-Aware Iterative Retrieval): when no evidence sentence holds the question's words together, the
question is multi-hop; the best-placed name of the first round's evidence that the question does not name
is the bridge, and the next round retrieves from it (its chunks in the mention graph, and vector search
with the question rewritten around it: the bridge and the question's words its sentence did not cover). The
answer is then read in the sentences that bear on that rewritten question, the second hop's; the sentence
that named the bridge is kept and cited as the first hop's.

The answer is a span of the evidence (`agents.answer_spans`), or free text for an explanation question; a
"who/what is <a name>?" question gets the evidence's own description of the name (a span too: "a Norwegian
novelist"), or, where no sentence gives one, the span answer any question gets.
FaithfulRAG's fact-level check then compares it with the model's closed-book answer: where they disagree,
the result says so, with both answers and which was chosen by the preference instruction > context >
parameters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agents.answer_spans import (
    Candidate,
    SpanAnswer,
    asks_explanation,
    candidates_of,
    choose_span,
    defined_name,
    description_of,
    evidence_score,
    reading_order,
)
from agents.chain_choice import AUTO_MIN_PARAMETERS, model_parameters
from agents.evidence import (
    Sentence,
    content_words,
    numbered,
    place_of,
    select_evidence,
    split_sentences,
    token_saving,
)
from agents.generation import closed_book_prompt, document_answer
from agents.resources import Resources
from agents.retrieval import chunks_from, retrieve_chunks
from agents.state import Citation, LinkedEntity
from agents.text import words
from lm.remote import RemoteLanguageModel, is_remote, messages_of, note
from lm.scoring import continuation_log_probs

COVERED = 0.75  # share of the question's content words one evidence sentence must hold to need no next round
CLOSED_BOOK_TOKENS = 12
LARGE_MODEL_SPAN_WEIGHT = 0.5  # per nat of mean token log-probability, for a model of 0.4B parameters or more
BRIDGE_LABELS = frozenset(["PERSON", "ORG", "GPE", "LOC", "FAC", "NORP", "WORK_OF_ART", "EVENT", "PRODUCT", "LAW"])


@dataclass
class Evidence:
    sentences: list[Sentence]
    passages: list[str]  # the retrieved chunks' text, for the trace's token count
    rounds: list[dict[str, Any]] = field(default_factory=list)

    @property
    def bridges(self) -> list[str]:
        return [r["bridge"] for r in self.rounds if "bridge" in r]


def sentences_of(resources: Resources, found: list[tuple[Citation, str]], first_rank: int = 0) -> list[Sentence]:
    nlp = resources.nlp
    return [s for rank, (c, text) in enumerate(found, first_rank) for s in split_sentences(nlp, c, rank, text)]


def _embed(resources: Resources) -> Callable[[list[str]], Any]:
    return lambda texts: resources.embedder.embed(texts, batch_size=64)


def covered(question: str, evidence: list[Sentence]) -> float:
    """The largest share of the question's content words that one evidence sentence holds."""
    asked = set(content_words(question))
    if not asked:
        return 1.0
    return max((len(asked & set(words(s.text))) / len(asked) for s in evidence), default=0.0)


def bridge_of(resources: Resources, question: str, evidence: list[Sentence], known: set[str]) -> Candidate | None:
    """The name the evidence offers as the first hop's answer: the best-placed named entity the question
    does not name (scored as an answer candidate would be, without an asked type)."""
    names = [
        c
        for c in candidates_of(resources.nlp, question, evidence)
        if c.label in BRIDGE_LABELS and c.text.casefold() not in known
    ]
    if not names:
        return None
    return min(names, key=lambda c: (-evidence_score(question, c, evidence, None), *reading_order(c)))


def gather_evidence(
    resources: Resources, question: str, entities: list[LinkedEntity], k: int, rounds: int | None = None
) -> Evidence:
    """Evidence sentences over at most `settings.retrieval_rounds` rounds, each recorded for the trace."""
    settings = resources.settings
    rounds = settings.retrieval_rounds if rounds is None else rounds
    embed = _embed(resources)
    names = [e["name"] for e in entities]
    found = retrieve_chunks(resources, question, entities, k)
    seen = {c["chunk_id"] for c, _ in found}
    passages = [text for _, text in found]
    pool = sentences_of(resources, found)
    evidence = select_evidence(question, pool, embed, names, settings.evidence_sentences)
    trace = [{"round": 1, "query": question, "chunks": [c["chunk_id"] for c, _ in found]}]
    known = {n.casefold() for n in names}
    for number in range(2, rounds + 1):
        share = covered(question, evidence)
        if share >= COVERED:
            break
        bridge = bridge_of(resources, question, evidence, known)
        if bridge is None:
            break
        known.add(bridge.text.casefold())
        held = set(words(evidence[bridge.sentence].text))
        rest = [w for w in content_words(question) if w not in held]
        query = " ".join([bridge.text, *rest])
        linked = [e.id for e in resources.store.find_entities(bridge.text, "normalised", limit=2)]
        new = chunks_from(resources, query, linked, seen, k)
        seen |= {c["chunk_id"] for c, _ in new}
        passages += [text for _, text in new]
        pool += sentences_of(resources, new, first_rank=len(seen) - len(new))
        # The answer to a bridged question is read in the second hop's evidence: the sentences that bear on
        # the second hop's question (the bridge and what the first hop's sentence left unsaid). The sentence
        # that named the bridge stays, cited as the first hop, scored below every second-hop sentence.
        first_hop = evidence[bridge.sentence]
        others = [s for s in pool if place_of(s) != place_of(first_hop)]
        second = select_evidence(query, others, embed, [bridge.text], settings.evidence_sentences - 1)
        floor = min((s.score for s in second), default=0.0)
        evidence = sorted([*second, replace(first_hop, score=floor - 1.0)], key=lambda s: (s.rank, s.number))
        trace.append(
            {
                "round": number,
                "bridge": bridge.text,
                "covered_before": round(share, 3),
                "query": query,
                "chunks": [c["chunk_id"] for c, _ in new],
            }
        )
    return Evidence(evidence, passages, trace)


def sentence_citations(evidence: list[Sentence], answer: Candidate | None) -> list[Citation]:
    """One citation per evidence sentence: its chunk, its character span there, and whether the answer is in it."""
    cited: list[Citation] = []
    for number, sentence in enumerate(evidence):
        citation: Citation = {**sentence.citation}  # type: ignore[typeddict-item]
        citation.update(
            {
                "sentence": sentence.text,
                "sentence_start": sentence.start,
                "sentence_end": sentence.end,
                "evidence": number + 1,
                "answer_here": answer is not None and answer.sentence == number,
            }
        )
        if answer is not None and answer.sentence == number:
            citation["answer_start"] = sentence.start + answer.start
            citation["answer_end"] = sentence.start + answer.end
        cited.append(citation)
    return sorted(cited, key=lambda c: not c["answer_here"])


def _normalised(text: str) -> set[str]:
    return {w for w in words(text) if w not in ("a", "an", "the")}


def agree(first: str, second: str) -> bool:
    """Two short answers say the same thing: their words overlap by at least half (token F1 >= 0.5)."""
    a, b = _normalised(first), _normalised(second)
    if not a or not b:
        return False
    common = len(a & b)
    return common > 0 and 2 * common / (len(a) + len(b)) >= 0.5


def conflict_of(
    resources: Resources, question: str, context_answer: str, evidence: list[Sentence], instruction: str | None
) -> dict[str, Any]:
    """FaithfulRAG's fact-level check: the closed-book answer against the one drawn from the context."""
    model = resources.model
    if isinstance(model, RemoteLanguageModel):
        parametric, sure = remote_parametric(model, closed_book_prompt(resources, question), question)
    else:
        prompt = model.encode(closed_book_prompt(resources, question))
        parametric = first_sentence(model.greedy(prompt, CLOSED_BOOK_TOKENS))
        # how sure the model is of it: the geometric mean of its tokens' probabilities
        [scored] = continuation_log_probs(model, prompt, [model.encode(parametric) or [model.eos_token_id]])
        sure = math.exp(scored.mean)
    text = " ".join(s.text for s in evidence).casefold()
    disagree = bool(context_answer and parametric) and not (
        agree(parametric, context_answer) or parametric.casefold() in text
    )
    # a guess the model itself holds at less than even odds per token is no knowledge to conflict with
    conflict = disagree and sure >= 0.5
    chosen, reason = "context", "the retrieved context is preferred over the model's own knowledge"
    if instruction == "documents_only":
        reason = "the user asked for the documents only"
    return {
        "conflict": conflict,
        "context_answer": context_answer,
        "parametric_answer": parametric,
        "parametric_confidence": round(sure, 4),
        "chosen": chosen,
        "reason": reason if conflict else "context and the model's own knowledge agree, or it has none",
    }


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0].rstrip(".")


def remote_parametric(model: RemoteLanguageModel, prompt: str, question: str) -> tuple[str, float]:
    """The server's closed-book answer and its confidence, from the reply's own token log-probabilities (the
    tokens that spell its first sentence) instead of a second scoring pass."""
    reply = model.chat(messages_of(prompt) or [], CLOSED_BOOK_TOKENS, top_logprobs=1)
    parametric = first_sentence(reply.text)
    if not reply.tokens:
        note(
            "conflict check: the server returned no log-probabilities; its closed-book answer counts as unsure",
            question,
        )
        return parametric, 0.0
    note(
        "conflict check: confidence from the server's log-probabilities of its reply's first-sentence tokens", question
    )
    written, taken = "", []
    for token in reply.tokens:
        if len(written.strip()) >= len(parametric):
            break
        written += token.text
        taken.append(token.logprob)
    return parametric, math.exp(sum(taken) / max(len(taken), 1))


def answer_from_evidence(
    resources: Resources,
    question: str,
    evidence: list[Sentence],
    method: str = "adacad",
    reliance: float = 0.0,
    instruction: str | None = None,
    on_text: Callable[[str], None] | None = None,
    check_conflict: bool = True,
    bridges: Sequence[str] = (),
) -> dict[str, Any]:
    """A span of the evidence (or free text for an explanation question), its citations and the conflict check."""
    if not evidence:
        return {}
    if asks_explanation(question):
        written = document_answer(resources, question, [numbered(evidence)], method, reliance, on_text=on_text)
        return {
            "answer": written.text,
            "free_text": True,
            "citations": sentence_citations(evidence, None),
            "span": None,
            "conflict": None,
            "arbitration_steps": written.trace.steps,
        }
    name = defined_name(question)
    described = description_of(resources.nlp, name, evidence) if name is not None else None
    if described is not None:  # the evidence's own description of the name, a span of a cited sentence too
        chosen = SpanAnswer(described.text, described, [described])
    else:
        weight = span_model_weight(resources)
        chosen = choose_span(resources.model, resources.nlp, question, evidence, bridges, weight)
    if on_text and chosen.text:  # the span is chosen whole; a streaming client still gets it word by word
        for number, piece in enumerate(chosen.text.split(" ")):
            on_text(piece if number == 0 else f" {piece}")
    # a description has no closed-book fact to conflict with: the check compares short factual answers
    conflict = (
        conflict_of(resources, question, chosen.text, evidence, instruction)
        if check_conflict and described is None
        else None
    )
    return {
        "answer": chosen.text,
        "free_text": False,
        "citations": sentence_citations(evidence, chosen.candidate),
        "span": chosen,
        "conflict": conflict,
        "arbitration_steps": [],
    }


def span_model_weight(resources: Resources) -> float:
    """How much the model's log-probability of a candidate span counts against its evidence score.

    `TRELLIS_SPAN_MODEL_WEIGHT` sets it; unset, it is 0 below `AUTO_MIN_PARAMETERS` (SmolLM2-135M's span
    scores lowered EM on held-out NQ items at every weight tried) and `LARGE_MODEL_SPAN_WEIGHT` above."""
    configured = resources.settings.span_model_weight
    if configured is not None:
        return configured
    return LARGE_MODEL_SPAN_WEIGHT if model_parameters(resources.model) >= AUTO_MIN_PARAMETERS else 0.0


def span_confidence(span: SpanAnswer) -> float:
    """The chosen span's share of a softmax over all candidates' scores."""
    if not span.candidates:
        return 0.0
    top = span.candidates[0].score
    return round(1.0 / sum(math.exp(c.score - top) for c in span.candidates), 4)


def evidence_trace(resources: Resources, gathered: Evidence) -> dict[str, Any]:
    return {
        "rounds": gathered.rounds,
        "evidence_sentences": len(gathered.sentences),
        **token_saving(resources.model.count_tokens, gathered.passages, gathered.sentences),
        **(
            {"token_counts": "estimated at four characters a token (a remote server's tokenizer is not local)"}
            if is_remote(resources.model)
            else {}
        ),
    }
