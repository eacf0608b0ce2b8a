"""Reflection on extracted triples: critique each one against its sentence, then keep, correct or drop it.

After FinReflectKG (extract, critique, correct): the first pass proposes triples, this pass checks each.
Cheap checks run for every model; a model large enough to judge (see `ModelJudge`) is also asked, per
triple, whether its sentence states it. Checks, in order:

1. head and tail are one entity                        -> dropped
2. the same triple twice                               -> dropped (kept once)
3. no sentence names both ends (the document's title
   may stand for a pronoun: then the tail's sentence)   -> dropped
4. a date-shaped end where the relation takes no date  -> turned round when the reverse fits, else dropped
5. the judge says the sentence does not state it       -> dropped

Every kept triple carries its evidence, the sentence span in the chunk; every drop and correction carries
its reason, for the ingestion report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ingest.resolve import resolution_key
from ingest.schema import ExtractionSchema
from lm.scoring import next_token_probs

# Sentence ends: . ! ? followed by space and a capital, digit or quote; and line breaks.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\u201c])|\n+")
_MONTHS = "january february march april may june july august september october november december"
_DATE = re.compile(
    rf"^(?:(?:\d{{1,2}} )?(?:{_MONTHS.replace(' ', '|')})(?: \d{{1,2}})?,? )?\d{{3,4}}s?$"
    r"|^\d{1,2}(?:st|nd|rd|th)? century$",
    re.IGNORECASE,
)


@dataclass(frozen=True, slots=True)
class Judged:
    """One triple after reflection: kept (with its sentence span) or dropped, and why."""

    head: str
    relation: str
    tail: str
    kept: bool
    start: int = 0  # the evidence sentence's character span in the chunk text
    end: int = 0
    reason: str = ""  # why dropped, or how it was corrected ("" when kept as proposed)


class Judge(Protocol):
    def states(self, items: Sequence[tuple[str, str, str, str]]) -> list[bool]:
        """For each (sentence, head, relation, tail): does the sentence state the triple?"""
        ...


_ABBREVIATION = re.compile(r"(?:^|[\s(])(?:[A-Z]|Mr|Mrs|Ms|Dr|St|Jr|Sr|Prof|Gen|Col|Lt|Sgt|Mt|No|Vol|vs|etc)\.$")


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences of `text` (an initial or a title such as `Dr.` ends none)."""
    spans, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        if "\n" not in match.group() and _ABBREVIATION.search(text[start : match.start()]):
            continue
        if text[start : match.start()].strip():
            spans.append((start, match.start()))
        start = match.end()
    if text[start:].strip():
        spans.append((start, len(text.rstrip())))
    return spans


def is_date(name: str) -> bool:
    return bool(_DATE.match(name.strip()))


def _contains(sentence: str, name: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(name.casefold())}(?!\w)", sentence.casefold()) is not None


def reflect(
    triples: Sequence[tuple[str, str, str]],
    text: str,
    title: str,
    schema: ExtractionSchema,
    judge: Judge | None = None,
) -> list[Judged]:
    """Critique `triples` proposed for chunk `text` (of a document titled `title`); one verdict each. Two
    names are one entity when entity resolution would merge them (`resolution_key`: "the Kari Lund's" is
    "Kari Lund"), so a triple between them, or one that repeats another up to that, is dropped."""
    spans = sentences(text)
    verdicts: list[Judged] = []
    seen: set[tuple[str, str, str]] = set()
    to_judge: list[tuple[int, tuple[str, str, str, str]]] = []
    for head, relation, tail in triples:
        note = ""
        if resolution_key(head) == resolution_key(tail):
            verdicts.append(Judged(head, relation, tail, False, reason="head and tail are the same entity"))
            continue
        kind = schema.relations[relation]
        if (is_date(head) and "date" not in kind.head) or (is_date(tail) and "date" not in kind.tail):
            reverse_fits = (not is_date(tail) or "date" in kind.head) and (not is_date(head) or "date" in kind.tail)
            if not reverse_fits:
                verdicts.append(Judged(head, relation, tail, False, reason=f"a date does not fit {relation}"))
                continue
            head, tail = tail, head
            note = f"turned round: {relation} takes a date as its tail, not its head"
        key = (resolution_key(head), relation, resolution_key(tail))
        if key in seen:
            verdicts.append(Judged(head, relation, tail, False, reason="duplicate"))
            continue
        seen.add(key)
        evidence = _evidence(text, spans, head, tail, title)
        if evidence is None:
            verdicts.append(Judged(head, relation, tail, False, reason="no sentence of the chunk names both"))
            continue
        verdicts.append(Judged(head, relation, tail, True, evidence[0], evidence[1], note))
        if judge is not None:
            to_judge.append((len(verdicts) - 1, (text[evidence[0] : evidence[1]], head, relation, tail)))
    if to_judge:
        for (index, _item), stated in zip(to_judge, judge.states([item for _i, item in to_judge]), strict=True):
            if not stated:
                v = verdicts[index]
                verdicts[index] = Judged(
                    v.head, v.relation, v.tail, False, v.start, v.end, "the model judged its sentence does not state it"
                )
    return verdicts


def _evidence(text: str, spans: list[tuple[int, int]], head: str, tail: str, title: str) -> tuple[int, int] | None:
    """The first sentence naming both ends; the title may be the subject of a sentence naming only the tail."""
    for start, end in spans:
        if _contains(text[start:end], head) and _contains(text[start:end], tail):
            return start, end
    if title and resolution_key(head) == resolution_key(title):
        for start, end in spans:
            if _contains(text[start:end], tail):
                return start, end
    return None


class ModelJudge:
    """Asks the language model whether a sentence states a triple: it compares the model's next-token
    probability of `yes` and `no` after the question. Worth it only for a model large enough to read a
    sentence (a 135M model's yes/no is near chance); `judge_for` decides. The questions of one call run as
    left-padded batches of `batch_size`, one forward pass each."""

    def __init__(self, lm: Any, schema: ExtractionSchema, batch_size: int = 8) -> None:
        self.lm, self.schema, self.batch_size = lm, schema, batch_size
        self.yes = lm.encode("yes")[:1] + lm.encode("Yes")[:1]
        self.no = lm.encode("no")[:1] + lm.encode("No")[:1]

    def question(self, sentence: str, head: str, relation: str, tail: str) -> str:
        meaning = self.schema.relations[relation].description or relation.replace("_", " ")
        return (
            f"Sentence: {sentence}\n\nRelation {relation} means: {meaning}.\n"
            f"Does the sentence state that ({head}, {relation}, {tail}) holds? Answer yes or no."
        )

    def states(self, items: Sequence[tuple[str, str, str, str]]) -> list[bool]:
        return [share >= 0.5 for share in self.yes_shares(items)]

    def yes_shares(self, items: Sequence[tuple[str, str, str, str]]) -> list[float]:
        """For each (sentence, head, relation, tail): P(yes) / (P(yes) + P(no)) for the next token."""
        if not items:
            return []
        prompts = self.lm.encode_batch([self.lm.chat_prompt(self.question(*item)) for item in items])
        probs = next_token_probs(self.lm, prompts, self.batch_size)
        yes, no = probs[:, self.yes].sum(-1), probs[:, self.no].sum(-1)
        return (yes / (yes + no)).tolist()


JUDGE_MIN_PARAMETERS = 300_000_000


def judge_for(lm: Any, schema: ExtractionSchema, mode: str = "auto") -> Judge | None:
    """`model`: always ask the model; `check`: cheap checks only; `auto`: the model if it has at least
    JUDGE_MIN_PARAMETERS parameters."""
    if mode == "check":
        return None
    if mode == "model" or sum(p.numel() for p in lm.model.parameters()) >= JUDGE_MIN_PARAMETERS:
        return ModelJudge(lm, schema)
    return None
