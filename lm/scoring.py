"""Scoring given continuations of one prompt: the log-probability the model gives each, in one batch.

The prompt is read once (its key/value cache is then repeated for each continuation), so scoring forty
short candidates costs about one forward pass of their own tokens, not forty prompts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from lm.model import LanguageModel


@dataclass(frozen=True, slots=True)
class ContinuationScore:
    total: float  # sum of the tokens' log-probabilities (nats)
    tokens: int

    @property
    def mean(self) -> float:
        return self.total / max(self.tokens, 1)


# Each row of a group carries its own copy of the prompt's key/value cache; a long prompt (a document
# question's evidence) times 64 rows was most of a document question's peak memory. A group's copies stay
# within this many bytes, and a short prompt still runs the full batch.
GROUP_CACHE_BYTES = 128 * 2**20


def continuation_log_probs(
    model: LanguageModel, prompt_ids: Sequence[int], continuations: Sequence[Sequence[int]], batch: int = 64
) -> list[ContinuationScore]:
    """log p(continuation | prompt) for each token sequence, teacher-forced, at most `batch` at a time (fewer
    where the prompt's cache, repeated for each, would pass `GROUP_CACHE_BYTES`)."""
    if not continuations:
        return []
    if not prompt_ids:
        raise ValueError("a prompt of at least one token is needed to score continuations")
    device = model.device
    pad = model.tokenizer.pad_token_id  # LanguageModel sets one where the tokenizer has none
    results: list[ContinuationScore] = []
    with model.lock, torch.inference_mode():
        prefix = torch.tensor([list(prompt_ids)], device=device)
        output, cache = model.forward(prefix, last_logits=True, use_cache=True)
        first = torch.log_softmax(output.logits[0, -1].float(), dim=-1)  # predicts each continuation's first token
        batch = max(1, min(batch, GROUP_CACHE_BYTES // max(1, kv_bytes_per_token(model) * len(prompt_ids))))
        for at in range(0, len(continuations), batch):
            group = [list(c) for c in continuations[at : at + batch]]
            results += _score_group(model, cache, first, len(prompt_ids), group, pad, device)
    return results


def _score_group(
    model: LanguageModel,
    cache: object,
    first: torch.Tensor,
    prompt_length: int,
    group: list[list[int]],
    pad: int,
    device: torch.device | str,
) -> list[ContinuationScore]:
    width = max(len(c) for c in group)
    scores = [float(first[c[0]]) if c else 0.0 for c in group]
    if width > 1:
        expanded = copy.deepcopy(cache)
        expanded.batch_repeat_interleave(len(group))  # type: ignore[attr-defined]
        body = torch.tensor([c[:-1] + [pad] * (width - len(c)) for c in group], device=device)
        mask = torch.tensor([[1] * prompt_length + [1] * (len(c) - 1) + [0] * (width - len(c)) for c in group])
        output, _ = model.forward(body, expanded, attention_mask=mask.to(device), use_cache=False)
        logits = output.logits.float()
        log_probs = torch.log_softmax(logits, dim=-1)
        for row, tokens in enumerate(group):
            for position, token in enumerate(tokens[1:]):
                scores[row] += float(log_probs[row, position, token])
    return [ContinuationScore(s, len(c)) for s, c in zip(scores, group, strict=True)]


def kv_bytes_per_token(model: LanguageModel) -> int:
    """Bytes of key/value cache one token of context takes in `model` (keys and values, every layer)."""
    config = model.model.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.model.dtype.itemsize


def next_token_probs(model: LanguageModel, prompts: Sequence[Sequence[int]], batch: int = 8) -> torch.Tensor:
    """The next-token distribution after each prompt (one row each), the prompts run as left-padded batches:
    each row is masked to its own tokens and its positions count from its own first token, so it reads as
    it would alone."""
    rows: list[torch.Tensor] = []
    with model.lock, torch.inference_mode():
        for at in range(0, len(prompts), batch):
            ids, mask = left_padded(model, prompts[at : at + batch])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            output, _ = model.forward(ids, attention_mask=mask, position_ids=positions, last_logits=True)
            logits = output.logits[:, -1].float()
            rows.append(torch.softmax(logits, dim=-1).cpu())
    return torch.cat(rows) if rows else torch.zeros(0)


def left_padded(model: LanguageModel, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The prompts as rows padded on the left to one width, and the mask of each row's own tokens."""
    width = max(len(p) for p in prompts)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts], device=model.device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=model.device)
    return ids, mask
