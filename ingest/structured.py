"""Structured output for extraction: a grammar the reply must follow, enforced token by token while decoding.

The grammar is built per chunk. Its JSON shape is fixed,

    {"triples":[["<head name>","<relation>","<tail name>"],...]}

relation names are the schema's, and every name is one of the chunk's own word spans (or the
document's title), so a reply always parses and nothing in it is invented. llguidance (the Rust engine
behind guidance, also used by vLLM and llama.cpp) compiles the grammar lazily and computes each step's
token mask from the tokenizer's token trie; `GrammarProcessor` applies that mask as a transformers logits
processor. Why llguidance: masks in tens of microseconds per token from Rust, no dependencies of its own
(xgrammar pulls in triton and a TVM runtime; outlines builds a whole-vocabulary index per regex, costly
when every chunk brings its own), and a grammar of a thousand literal alternatives compiles in
milliseconds. lm-format-enforcer, pure Python, was measured beside it (bench/extraction.py).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

from ingest.schema import ExtractionSchema

MAX_SPAN_WORDS = 8  # longer names are rare; each extra word multiplies the grammar's alternatives
MAX_TRIPLES = 16
CLOSE_RESERVE = 48  # tokens kept back to finish the item being written and close the reply
# A word for span purposes: letters and digits with inner hyphens, apostrophes, dots (`U.S.`, `O'Neill`).
_WORD = re.compile(r"\w+(?:[-'\u2019.&]\w+)*\.?|[^\w\s]")
_UNSAFE = re.compile(r'["\\\x00-\x1f]')  # what would need escaping inside a JSON string
# English function words: a name neither starts nor ends with one ("of the", "from" name nothing).
_FUNCTION_WORDS_TEXT = (
    "a an the of in on at by for from to with and or but as is was are were be been its it his her their "
    "this that these those which who whom whose he she they we i you not no than then also into onto over "
    "after before during between about"
)
FUNCTION_WORDS = frozenset(_FUNCTION_WORDS_TEXT.split())
_ITEM = re.compile(r'\[("(?:[^"\\]|\\.)*"(?:,"(?:[^"\\]|\\.)*")*)\]')


@dataclass(frozen=True, slots=True)
class Reply:
    triples: list[tuple[str, str, str]]


def chunk_spans(text: str, extra: Iterable[str] = (), max_words: int = MAX_SPAN_WORDS) -> list[str]:
    """Every run of up to `max_words` consecutive words of `text` that could name something: it stays on one
    line and in one sentence, and neither starts nor ends with punctuation or a function word (but `The Salt
    Road` may start with its article). `extra` (the document's title) is added as it is."""
    words = list(_WORD.finditer(text))
    spans: dict[str, None] = dict.fromkeys(e.strip() for e in extra if e.strip() and not _UNSAFE.search(e))
    for i, first in enumerate(words):
        if not first.group()[0].isalnum():
            continue
        # A capitalised article before a capitalised word is part of a name ("The Salt Road"); else not.
        leading = first.group().lower() in FUNCTION_WORDS
        if leading and not (first.group()[0].isupper() and i + 1 < len(words) and words[i + 1].group()[0].isupper()):
            continue
        for j in range(i + leading, min(i + max_words, len(words))):
            piece = words[j].group()
            if piece in {".", "!", "?", ";", ":"} or "\n" in text[first.start() : words[j].end()]:
                break
            bare = piece.rstrip(".")
            if not piece[0].isalnum() or bare.lower() in FUNCTION_WORDS:
                continue
            span = text[first.start() : words[j].start() + len(bare)]
            if _UNSAFE.search(span):
                break
            spans[span] = None
            if piece.endswith(".") and len(bare) > 1 and not bare.isupper():
                break  # "... in London." ended the sentence (an initial or "U.S." did not)
    return list(spans)


def _literal(text: str) -> str:
    """A Lark string literal matching `text` exactly (json.dumps escapes the way Lark reads literals)."""
    return json.dumps(text, ensure_ascii=False)


def extraction_grammar(schema: ExtractionSchema, names: Sequence[str]) -> str:
    """The Lark grammar of a reply naming only `names` and the schema's relation types."""
    quoted = sorted({_literal(json.dumps(n, ensure_ascii=False)) for n in names})
    relations = " | ".join(_literal(json.dumps(r)) for r in schema.relations)
    if not quoted:  # a chunk without a word: the list can only stay empty
        return 'start: "{\\"triples\\":[]}"'
    return "\n".join(
        [
            'start: "{\\"triples\\":[" triples? "]}"',
            f'triples: triple ("," triple){{0,{MAX_TRIPLES - 1}}}',
            'triple: "[" NAME "," RELATION "," NAME "]"',
            f"RELATION: {relations}",
            "NAME: " + " | ".join(quoted),
        ]
    )


def parse_reply(text: str) -> Reply:
    """The reply's triples; raises ValueError if it is not the grammar's shape (never, when decoded under it)."""
    raw = json.loads(text)
    if not isinstance(raw, dict) or set(raw) != {"triples"} or not isinstance(raw["triples"], list):
        raise ValueError("reply is not {triples: [...]}")
    triples = [
        (t[0], t[1], t[2])
        for t in raw["triples"]
        if isinstance(t, list) and len(t) == 3 and all(isinstance(x, str) for x in t)
    ]
    if len(triples) != len(raw["triples"]):
        raise ValueError("reply has malformed triples")
    return Reply(triples)


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer: Any, vocab_size: int, eos: int) -> Any:
    import llguidance.hf

    # ~0.7 s: once per model and process.
    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)


@lru_cache(maxsize=4)
def _bracket_tokens(tokenizer: Any, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens whose text holds a `]`, those of them that close without opening another item: no `[` or `,`)."""
    holds = torch.zeros(vocab_size, dtype=torch.bool)
    closes = torch.zeros(vocab_size, dtype=torch.bool)
    for i in range(min(vocab_size, len(tokenizer))):
        piece = tokenizer.decode([i])
        if "]" in piece:
            holds[i] = True
            closes[i] = "[" not in piece and "," not in piece
    return holds, closes


class GrammarProcessor:
    """A transformers logits processor that masks every token the grammar does not allow next.

    One matcher per batch row; a row whose grammar is complete may only end (its end token). Small models
    loop ("the same triple again"), so a list is closed at the first repeated item, and when fewer than
    CLOSE_RESERVE tokens of `max_new_tokens` are left, so the reply always completes and parses.
    """

    def __init__(self, lm: Any, grammars: Sequence[str], prompt_length: int, max_new_tokens: int) -> None:
        import llguidance

        vocab = lm.model.config.vocab_size
        self._tokenizer = _ll_tokenizer(lm.tokenizer, vocab, lm.eos_token_id)
        self._holds_bracket, self._closing = _bracket_tokens(lm.tokenizer, vocab)
        self._decode = lm.tokenizer.decode
        self.matchers = []
        for grammar in grammars:
            matcher = llguidance.LLMatcher(self._tokenizer, llguidance.LLMatcher.grammar_from_lark(grammar))
            if matcher.is_error():
                raise ValueError(f"extraction grammar rejected: {matcher.get_error()}")
            self.matchers.append(matcher)
        self.prompt_length, self.max_new_tokens = prompt_length, max_new_tokens
        self.eos = lm.eos_token_id
        self._bitmask = torch.zeros(len(grammars), (vocab + 31) // 32, dtype=torch.int32)
        self._shifts = torch.arange(32, dtype=torch.int32)
        self._closing_rows = [False] * len(grammars)  # rows asked to close their list
        self._items: list[list[str]] = [[] for _ in grammars]  # each row's finished items, in order
        self._scanned = [0] * len(grammars)  # where each row's not yet read text starts (a generated token)
        self.steps = 0
        self.mask_seconds = 0.0  # time spent computing and applying masks, for the overhead measurement

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        from llguidance.torch import fill_next_token_bitmask

        started = time.perf_counter()
        generated = input_ids.shape[1] - self.prompt_length
        close = torch.zeros(len(self.matchers), dtype=torch.bool)
        for row, matcher in enumerate(self.matchers):
            if generated > 0 and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_stopped() or matcher.is_error():
                self._bitmask[row].zero_()
                bit = 1 << (self.eos % 32)
                self._bitmask[row, self.eos // 32] = bit - (1 << 32) if bit >= 1 << 31 else bit  # a signed int32
                continue
            fill_next_token_bitmask(matcher, self._bitmask, row)
            # An item can only have ended with a token holding `]`: decode and look only then, and only the
            # text since the token that ended the item before (it may open this one: `],[`).
            if generated > 0 and not self._closing_rows[row] and self._holds_bracket[int(input_ids[row, -1])]:
                start = self.prompt_length + self._scanned[row]
                text = self._decode(input_ids[row, start:], skip_special_tokens=True)
                for item in _ITEM.findall(text):
                    self._closing_rows[row] |= item in self._items[row]
                    self._items[row].append(item)
                self._scanned[row] = generated - 1
            if generated >= self.max_new_tokens - CLOSE_RESERVE:
                self._closing_rows[row] = True
            close[row] = self._closing_rows[row]
        self.steps += 1
        # 32 allowed-bits per int32 unpacked into a boolean mask over the vocabulary.
        allowed = ((self._bitmask.unsqueeze(-1) >> self._shifts) & 1).bool().view(len(self.matchers), -1)
        width = scores.shape[1]
        allowed = allowed[:, :width]
        if allowed.shape[1] < width:
            allowed = torch.nn.functional.pad(allowed, (0, width - allowed.shape[1]))
        for row in close.nonzero().flatten().tolist():
            # Only where the grammar allows a closing token now; mid-name, the name is finished first.
            narrowed = allowed[row] & self._closing[:width]
            if narrowed.any():
                allowed[row] = narrowed
        masked = scores.masked_fill(~allowed.to(scores.device), float("-inf"))  # the mask is built on the CPU
        self.mask_seconds += time.perf_counter() - started
        return masked

    def complete(self, row: int = 0) -> bool:
        """Whether row's reply satisfied the grammar (it could end there)."""
        matcher = self.matchers[row]
        return not matcher.is_error() and (matcher.is_accepting() or matcher.is_stopped())
