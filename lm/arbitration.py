"""Parametric-vs-context arbitration at every decoding step: AdaCAD and CK-PLUG.

Both compare the next-token distribution with the retrieved context (p_ctx) to the one without it (p_par,
the model's parametric knowledge). The two come from one batched forward pass: `generate` runs a batch of
row pairs (with context, without), sharing KV caches as usual, and the processor turns each pair's two
distributions into one choice written into both rows, so the pair stays in step.

- AdaCAD (Wang et al. 2024, "AdaCAD: Adaptively Decoding to Balance Conflicts between Contextual and
  Parametric Knowledge"): alpha_t = JSD(p_ctx || p_par); logits (1 + alpha_t) z_ctx - alpha_t z_par.
  Identical distributions give alpha_t = 0, plain decoding with context.
- CK-PLUG (Bi et al. 2025, "Parameters vs. Context: Fine-Grained Control of Knowledge Reliance in Language
  Models"): confidence gain CG_t = H(p_par) - H(p_ctx); a step whose CG falls below the threshold (context
  made the model less sure) is a conflict, and there log p = (1 - r) log p_ctx + r log p_par for the
  reliance knob r in [0, 1] (0 follows the context, 1 the parameters), or, adaptively, r = H(p_ctx) /
  (H(p_ctx) + H(p_par)), weighing more the side that is surer. Other steps use p_ctx.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from transformers import LogitsProcessor

if TYPE_CHECKING:
    from lm.model import LanguageModel

NEG_INF = float("-inf")


@dataclass(frozen=True, slots=True)
class ArbitrationStep:
    token: int
    weight: float  # AdaCAD's alpha_t, or CK-PLUG's reliance r on a conflict step (0 otherwise)
    confidence_gain: float  # H(p_par) - H(p_ctx), in bits
    conflict: bool


@dataclass
class ArbitrationTrace:
    steps: list[ArbitrationStep] = field(default_factory=list)


def entropy_bits(log_probs: torch.Tensor) -> torch.Tensor:
    probs = log_probs.exp()
    return -(torch.special.xlogy(probs, probs)).sum(-1) / torch.log(torch.tensor(2.0))


def jensen_shannon_bits(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """JSD in bits (0 for identical distributions, at most 1)."""
    p, q = log_p.exp(), log_q.exp()
    mixture = 0.5 * (p + q)
    divergence = torch.special.xlogy(p, p) - torch.special.xlogy(p, mixture)
    divergence = divergence + torch.special.xlogy(q, q) - torch.special.xlogy(q, mixture)
    return (0.5 * divergence.sum(-1) / torch.log(torch.tensor(2.0))).clamp(0.0, 1.0)


class PairedArbitration(LogitsProcessor):
    """Rows 2i (with context) and 2i+1 (without): combine their log-probabilities, choose one token for both.

    The choice is greedy, or sampled at `temperature`; put this processor last in the list, after any
    constraint, and call generate with do_sample=False (the processor has already decided).
    """

    def __init__(
        self,
        sample: bool = False,
        temperature: float = 1.0,
        trace: ArbitrationTrace | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        self.sample, self.temperature, self.generator = sample, temperature, generator
        self.trace = trace if trace is not None else ArbitrationTrace()

    def combine(self, log_ctx: torch.Tensor, log_par: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
        """(combined scores, weight, confidence gain, conflict) for one pair."""
        raise NotImplementedError

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if scores.shape[0] % 2:
            raise ValueError("arbitration needs rows in (with context, without context) pairs")
        log_probs = torch.log_softmax(scores.float(), dim=-1)
        chosen = torch.full_like(scores, NEG_INF)
        for pair in range(scores.shape[0] // 2):
            combined, weight, gain, conflict = self.combine(log_probs[2 * pair], log_probs[2 * pair + 1])
            if self.sample:
                probs = torch.softmax(combined / self.temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=self.generator))
            else:
                token = int(torch.argmax(combined))
            chosen[2 * pair : 2 * pair + 2, token] = 0.0
            self.trace.steps.append(ArbitrationStep(token, weight, gain, conflict))
        return chosen


class AdaCAD(PairedArbitration):
    def combine(self, log_ctx: torch.Tensor, log_par: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
        alpha = float(jensen_shannon_bits(log_ctx, log_par))
        gain = float(entropy_bits(log_par) - entropy_bits(log_ctx))
        # On log-probabilities this equals the paper's rule on logits up to a constant; tokens masked to
        # -inf (a constraint) stay masked instead of turning into nan.
        combined = torch.where(torch.isinf(log_ctx), log_ctx, (1 + alpha) * log_ctx - alpha * log_par)
        return combined, alpha, gain, False


class CKPlug(PairedArbitration):
    def __init__(self, reliance: float | None = 0.5, threshold: float = 0.0, **options: object) -> None:
        """`reliance` in [0, 1] (None: adaptive); a step is a conflict when CG < `threshold` (bits)."""
        super().__init__(**options)  # type: ignore[arg-type]
        if reliance is not None and not 0.0 <= reliance <= 1.0:
            raise ValueError(f"reliance must lie in [0, 1], got {reliance}")
        self.reliance, self.threshold = reliance, threshold

    def combine(self, log_ctx: torch.Tensor, log_par: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
        h_ctx, h_par = float(entropy_bits(log_ctx)), float(entropy_bits(log_par))
        gain = h_par - h_ctx
        if gain >= self.threshold:
            return log_ctx, 0.0, gain, False
        reliance = self.reliance if self.reliance is not None else h_ctx / max(h_ctx + h_par, 1e-9)
        mixed = (1 - reliance) * log_ctx + reliance * log_par
        # Where either side rules a token out (-inf), it stays out, except at the ends of the knob.
        if reliance == 0.0:
            mixed = log_ctx
        elif reliance == 1.0:
            mixed = log_par
        return mixed, reliance, gain, True


def arbitrated_generate(
    model: LanguageModel,
    with_context: str,
    without_context: str,
    processor: PairedArbitration,
    max_new_tokens: int = 32,
    extra_processors: list[LogitsProcessor] | None = None,
    min_new_tokens: int = 0,
) -> str:
    """Generate one answer from the pair of prompts under `processor`; returns the decoded answer."""
    from transformers import LogitsProcessorList

    tokenizer = model.tokenizer
    rows = [model.encode(with_context), model.encode(without_context)]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
    with model.lock, torch.inference_mode():
        output = model.model.generate(
            input_ids,
            attention_mask=attention,
            logits_processor=LogitsProcessorList([*(extra_processors or []), processor]),
            do_sample=False,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            eos_token_id=model.eos_token_id,
            pad_token_id=pad,
        )
    return model.decode(output[0, width:])
