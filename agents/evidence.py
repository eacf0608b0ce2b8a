"""Evidence, not chunks (Refiner): the sentences of the retrieved chunks that bear on the question.

Refiner (Li et al. 2024) shows that a small reader answers better from a few extracted, source-tagged
sentences than from whole passages. Here each retrieved chunk is cut into sentences (spaCy's parser, the
pipeline ingestion already uses; markdown lines and code fences are cut first, and a fence is never
evidence); a sentence scores by its cosine with the question plus the share of the question's content words
(and linked entity names) it contains; the best few are kept, with the sentence before one that opens on a
pronoun ("He was born in ...": who is "he"?), and the sentences around a quotation (who said it). The model
then reads only those, numbered and tagged with their source.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from agents.state import Citation
from agents.text import STOPWORDS, WH_WORDS, words

MAX_SENTENCES = 6
LEXICAL_WEIGHT = 0.5  # share of the question's content words a sentence holds (IDF-weighted), against its cosine
MIN_SENTENCE_CHARS = 12
_PRONOUN_START = re.compile(r"^(he|she|it|its|they|their|his|her|this|these|those|that|there)\b", re.I)
_TAG = re.compile(r"</?[A-Za-z][^<>]{0,200}>")
# tags that end a block of text (a table row, a paragraph, a list item): a line break, as in a browser
_BLOCK_TAG = re.compile(r"</?(?:tr|p|li|br|div|table|thead|tbody|ul|ol|dl|dt|dd|h[1-6])\b[^<>]{0,200}>", re.I)
_QUOTE_START = re.compile(r"^[\"\u201c\u2018']")
_FENCE = re.compile(r"^\s*(```|~~~)")
_MARKUP = re.compile(r"^\s*(#{1,6}\s+|[-*+]\s+|\d+[.)]\s+|>\s*)")


@dataclass(frozen=True, slots=True)
class Sentence:
    citation: Citation  # the chunk it comes from
    rank: int  # the chunk's place among those retrieved
    number: int  # the sentence's place in its chunk
    start: int  # character offsets in the chunk's text
    end: int
    text: str
    heading: bool = False  # a markdown heading or list marker line: context, never an answer
    score: float = 0.0


def split_sentences(nlp: Any, citation: Citation, rank: int, text: str) -> list[Sentence]:
    """Sentences of a chunk with their character offsets; code fences dropped, markdown lines kept apart."""
    blocks: list[tuple[int, str, bool]] = []
    offset, fenced = 0, False
    # a block tag becomes a line break padded to its length: offsets stay the chunk's
    text = _BLOCK_TAG.sub(lambda m: "\n" + " " * (len(m.group()) - 1), text)
    for line in text.splitlines(keepends=True):
        at, offset = offset, offset + len(line)
        if _FENCE.match(line):
            fenced = not fenced
            continue
        # HTML tags and inline code marks become spaces of their own length: offsets stay the chunk's
        line = _TAG.sub(lambda m: " " * len(m.group()), line).replace("`", " ")
        if fenced or not line.strip():
            continue
        marked = _MARKUP.match(line)
        skip = marked.end() if marked else 0
        blocks.append((at + skip, line[skip:].rstrip(), bool(marked and line.lstrip().startswith("#"))))
    sentences: list[Sentence] = []
    for (start, _block, heading), doc in zip(blocks, nlp.pipe(b for _, b, _ in blocks), strict=True):
        for span in doc.sents if not heading else [doc[:]]:
            piece = span.text.strip()
            if len(piece) < MIN_SENTENCE_CHARS and not heading:
                continue
            begin = start + span.start_char + len(span.text) - len(span.text.lstrip())
            sentences.append(
                Sentence(citation, rank, len(sentences), begin, begin + len(piece), piece, heading=heading)
            )
    return sentences


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if w not in STOPWORDS and w not in WH_WORDS and len(w) > 1]


def select_evidence(
    question: str,
    sentences: list[Sentence],
    embed: Any,
    names: list[str] = (),  # type: ignore[assignment]
    limit: int = MAX_SENTENCES,
) -> list[Sentence]:
    """The `limit` sentences that bear most on the question (each with its score), in reading order, with
    the sentence before any that opens on a pronoun."""
    if not sentences:
        return []
    asked = set(content_words(question)) | {w for name in names for w in content_words(name)}
    vectors = embed([question] + [s.text for s in sentences])
    cosines = vectors[1:] @ vectors[0]
    held_by = [set(words(s.text)) for s in sentences]
    weight = _rarity(asked, held_by)
    total = sum(weight.values())
    scored = []
    for sentence, cosine, held in zip(sentences, cosines, held_by, strict=True):
        lexical = sum(weight[w] for w in asked & held) / total if total else 0.0
        scored.append(_with_score(sentence, float(cosine) + LEXICAL_WEIGHT * lexical))
    best = sorted(scored, key=lambda s: -s.score)[:limit]
    chosen = {place_of(s): s for s in best}
    by_place = {place_of(s): s for s in scored}
    for sentence in best:
        # who "he" is, or who speaks a quotation, is told in the sentence before (or, for speech, after):
        # that neighbour is read with the sentence and counts as much
        steps = [-1] if _PRONOUN_START.match(sentence.text) else [-1, 1] if _QUOTE_START.match(sentence.text) else []
        for step in steps:
            chunk_id, number = place_of(sentence)
            near = by_place.get((chunk_id, number + step))
            if near is not None:
                place = place_of(near)
                held = chosen.get(place, near)
                chosen[place] = _with_score(held, max(held.score, sentence.score))
    return sorted(chosen.values(), key=lambda s: (s.rank, s.number))


def place_of(sentence: Sentence) -> tuple[str, int]:
    """Where a sentence stands: its chunk and its number there."""
    return sentence.citation["chunk_id"], sentence.number


def _rarity(asked: set[str], held_by: list[set[str]]) -> dict[str, float]:
    """Each question word's inverse document frequency among the candidate sentences: a word every sentence
    holds (the passage's own topic) tells them apart less than one only a few hold."""
    count = len(held_by)
    return {w: math.log(1 + count / (1 + sum(w in held for held in held_by))) for w in asked}


def _with_score(sentence: Sentence, score: float) -> Sentence:
    return replace(sentence, score=round(score, 4))


def numbered(evidence: list[Sentence]) -> str:
    """The evidence as the model reads it: one numbered line per sentence, tagged with its source."""
    return "\n".join(
        f"[{n}] ({s.citation['title'] or s.citation['doc_id']}) {s.text}" for n, s in enumerate(evidence, 1)
    )


def token_saving(count: Callable[[str], int], passages: list[str], evidence: list[Sentence]) -> dict[str, int]:
    """Tokens of the whole chunks against those of the selected sentences (for the trace)."""
    whole = sum(count(p) for p in passages)
    kept = sum(count(s.text) for s in evidence)
    return {"chunk_tokens": whole, "evidence_tokens": kept, "saved_tokens": max(0, whole - kept)}
