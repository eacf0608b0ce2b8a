"""Question text as the agent reads it: words, English function words, and where a mention sits."""

from __future__ import annotations

import re

_WORD = re.compile(r"[\w]+(?:['\u2019][\w]+)*")
_POSSESSIVE = re.compile(r"['\u2019]s?$")

# English function words: they carry the question's grammar, not which relation or entity it is about.
STOPWORDS = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "been",
        "being",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "than",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "whom",
        "whose",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
WH_WORDS = frozenset(["what", "which", "who", "whom", "whose", "when", "where", "how", "name", "list"])


def words(text: str) -> list[str]:
    """Lower-case words, possessive endings dropped: "Denmark's father" -> [denmark, father]."""
    return [_POSSESSIVE.sub("", w) for w in _WORD.findall(text.lower())]


def find_span(tokens: list[str], mention: str, taken: set[int] | None = None) -> list[int]:
    """Positions of the first run of `tokens` that spells `mention` (word for word, any case), not in `taken`."""
    target = words(mention)
    if not target:
        return []
    taken = taken or set()
    for start in range(len(tokens) - len(target) + 1):
        span = list(range(start, start + len(target)))
        if tokens[start : start + len(target)] == target and not taken.intersection(span):
            return span
    return []
