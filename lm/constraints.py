"""Graph-constrained decoding: between a start delimiter and the end of a path, only tokens that continue
some path of the KG-Trie are allowed; outside, the model writes freely.

The processor is stateless (it re-reads each row's tokens since the last start delimiter), so it works
unchanged under greedy search, sampling and beam search, where rows are reordered between steps.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from transformers import LogitsProcessor

if TYPE_CHECKING:
    from lm.model import LanguageModel


class TokenTree(Protocol):
    """What the processor needs of a trie (graph.trie.TokenTrie satisfies it)."""

    root: int

    def children(self, node: int) -> Mapping[int, int]: ...

    def walk(self, ids: Sequence[int], node: int = 0) -> int | None: ...


@dataclass
class ConstraintTrace:
    """Per decoding step: how many tokens the constraint allowed in each constrained row."""

    allowed_per_step: list[list[int]] = field(default_factory=list)


def last_occurrence(sequence: Sequence[int], pattern: Sequence[int]) -> int | None:
    """Index just past the last occurrence of `pattern` in `sequence`, or None."""
    size = len(pattern)
    for end in range(len(sequence), size - 1, -1):
        if list(sequence[end - size : end]) == list(pattern):
            return end
    return None


class TrieConstraintProcessor(LogitsProcessor):
    """Masks to -inf every token that does not continue a trie sequence, inside a delimited segment."""

    def __init__(
        self,
        trie: TokenTree,
        start_ids: Sequence[int],
        trace: ConstraintTrace | None = None,
        segment_start: int | None = None,
    ) -> None:
        """The segment begins after the last `start_ids` in a row, or at position `segment_start` if given
        (for a prompt that already ends inside a segment, as in step-wise decoding)."""
        if not start_ids and segment_start is None:
            raise ValueError("give a start delimiter of at least one token, or a segment start")
        self.trie, self.start_ids, self.trace, self.segment_start = trie, list(start_ids), trace, segment_start

    def allowed(self, row: Sequence[int]) -> list[int] | None:
        """Tokens allowed next for this row, or None where it is not inside a path segment."""
        start = self.segment_start if self.segment_start is not None else last_occurrence(row, self.start_ids)
        if start is None:
            return None
        node = self.trie.walk(row[start:])
        if node is None:
            return None  # left the trie: a finished path followed by free text
        children = self.trie.children(node)
        return list(children) if children else None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        rows, columns = [], []
        counts = []
        for index, row in enumerate(input_ids.tolist()):
            allowed = self.allowed(row)
            if allowed is None:
                continue
            rows.append(torch.full((len(allowed),), index, dtype=torch.long))
            columns.append(torch.tensor(allowed, dtype=torch.long))
            counts.append(len(allowed))
        if not rows:
            return scores
        constrained = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
        keep = torch.zeros_like(scores, dtype=torch.bool)
        row_index, column_index = torch.cat(rows).to(scores.device), torch.cat(columns).to(scores.device)
        keep[row_index, column_index] = True
        constrained[row_index] = True
        if self.trace is not None:
            self.trace.allowed_per_step.append(counts)
        return scores.masked_fill(constrained[:, None] & ~keep, float("-inf"))


@dataclass(frozen=True, slots=True)
class ConstrainedOutput:
    segment: list[int]  # tokens after the start delimiter, up to the end of the trie sequence
    score: float  # the sequence score generate() reports (beam: length-normalised log-probability)
    text: str  # everything generated, decoded


def constrained_generate(
    model: LanguageModel,
    prompt: str,
    tree: TokenTree,
    start_ids: Sequence[int],
    max_new_tokens: int,
    num_beams: int = 1,
    num_return: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    trace: ConstraintTrace | None = None,
    prefix_ids: Sequence[int] = (),
) -> list[ConstrainedOutput]:
    """Generate after `prompt` + the start delimiter (+ `prefix_ids`, tokens already inside the segment) under
    the trie constraint, which applies from the first generated token; distinct segments, best first."""
    from transformers import LogitsProcessorList

    prompt_ids = model.encode(prompt) + list(start_ids) + list(prefix_ids)
    input_ids = torch.tensor([prompt_ids], device=model.device)
    processor = TrieConstraintProcessor(tree, start_ids, trace, segment_start=len(prompt_ids))
    options: dict = {"do_sample": do_sample, "num_beams": num_beams, "num_return_sequences": num_return}
    if do_sample:
        options.update(temperature=temperature, top_k=0, top_p=1.0)
    with model.lock, torch.inference_mode():
        output = model.model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            logits_processor=LogitsProcessorList([processor]),
            max_new_tokens=max_new_tokens,
            eos_token_id=model.eos_token_id,
            pad_token_id=model.tokenizer.pad_token_id,
            output_scores=False,
            return_dict_in_generate=True,
            **options,
        )
    scores = output.sequences_scores.tolist() if getattr(output, "sequences_scores", None) is not None else None
    results: list[ConstrainedOutput] = []
    seen: set[tuple[int, ...]] = set()
    for number, sequence in enumerate(output.sequences.tolist()):
        generated = sequence[len(prompt_ids) :]
        segment = _segment(tree, generated)
        if tuple(segment) in seen:
            continue
        seen.add(tuple(segment))
        score = scores[number] if scores else 0.0
        results.append(ConstrainedOutput(segment, float(score), model.decode(generated)))
    return results


def _segment(tree: TokenTree, generated: Sequence[int]) -> list[int]:
    """The generated tokens that lie in the trie, from its root to where the sequence ends."""
    node, taken = tree.root, []
    for token in generated:
        children = tree.children(node)
        if token not in children:
            break
        node = children[token]
        taken.append(token)
    return taken


@dataclass(frozen=True, slots=True)
class GreedyPath:
    segment: list[int]  # tokens of the trie sequence chosen, from its root to a leaf
    log_prob: float  # sum of the log-probabilities of the choices the model made (forced tokens add 0)
    choices: int  # branching points where the model decided
    forward_passes: int


def constrained_greedy(model: LanguageModel, prompt_ids: Sequence[int], tree: TokenTree) -> GreedyPath:
    """Greedy decoding of one whole trie sequence after `prompt_ids`, skipping the model where it has no choice.

    Where a trie node has a single child the token is forced, so it is queued instead of decoded; the
    queued tokens enter the model together in the next forward pass, at a branching point. A path whose
    start entity and relation are fixed then costs the prompt's prefill and one pass per real decision;
    a trie that holds a single path costs no pass at all. Under the constraint this is exactly greedy
    decoding: a forced token is the argmax of a distribution masked to that one token.
    """
    node, segment, pending = tree.root, [], list(prompt_ids)
    log_prob, choices, passes, cache = 0.0, 0, 0, None
    with model.lock, torch.inference_mode():
        while children := tree.children(node):
            if len(children) == 1:
                [(token, node)] = children.items()
                segment.append(token)
                pending.append(token)
                continue
            output, cache = model.forward(
                torch.tensor([pending], device=model.device), cache, last_logits=True, use_cache=True
            )
            passes += 1
            log_probs = torch.log_softmax(output.logits[0, -1].float(), dim=-1)
            allowed = torch.tensor(list(children), device=log_probs.device)
            best = int(torch.argmax(log_probs[allowed]))
            token = int(allowed[best])
            log_prob += float(log_probs[token])
            choices += 1
            segment.append(token)
            node, pending = children[token], [token]
    return GreedyPath(segment, log_prob, choices, passes)
