"""Parametric-vs-context arbitration at every decoding step: AdaCAD and CK-PLUG.

Both compare the next-token distribution with the retrieved context (p_ctx) to the one without it (p_par,
the model's parametric knowledge). The two come from one batched forward pass per token over a pair of rows
(with context, without) that share one KV cache, and the processor turns the pair's two distributions into
one choice written into both rows, so the pair stays in step.

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

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessor

from lm.model import LanguageModel, TextCallback
from lm.scoring import left_padded

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
    def __init__(self, plausibility: float | None = None, **options: object) -> None:
        """`plausibility` (off by default, as in the paper): keep only tokens whose p_ctx is at least this
        share of the top p_ctx, the adaptive plausibility constraint of contrastive decoding (Li et al. 2023),
        so that subtracting p_par cannot promote a token the context finds implausible."""
        super().__init__(**options)  # type: ignore[arg-type]
        self.plausibility = plausibility

    def combine(self, log_ctx: torch.Tensor, log_par: torch.Tensor) -> tuple[torch.Tensor, float, float, bool]:
        alpha = float(jensen_shannon_bits(log_ctx, log_par))
        gain = float(entropy_bits(log_par) - entropy_bits(log_ctx))
        # On log-probabilities this equals the paper's rule on logits up to a constant; tokens masked to
        # -inf (a constraint) stay masked instead of turning into nan.
        combined = torch.where(torch.isinf(log_ctx), log_ctx, (1 + alpha) * log_ctx - alpha * log_par)
        if self.plausibility is not None:
            implausible = log_ctx < log_ctx.max() + torch.log(torch.tensor(self.plausibility))
            combined = combined.masked_fill(implausible, NEG_INF)
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


KVLayers = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: (keys, values)


def _prefill(model: LanguageModel, ids: list[int]) -> tuple[torch.Tensor, KVLayers]:
    """Next-token logits after `ids` and the per-layer (keys, values) of its KV cache."""
    output, cache = model.forward(torch.tensor([ids], device=model.device), last_logits=True, use_cache=True)
    layers = [(layer.keys, layer.values) for layer in cache.layers]
    return output.logits[0, -1], layers


def _left_padded(layers: KVLayers, width: int) -> KVLayers:
    def pad(tensor: torch.Tensor) -> torch.Tensor:
        missing = width - tensor.shape[-2]
        return torch.nn.functional.pad(tensor, (0, 0, missing, 0)) if missing else tensor

    return [(pad(keys), pad(values)) for keys, values in layers]


def arbitrated_generate(
    model: LanguageModel,
    with_context: str,
    without_context: str,
    processor: PairedArbitration,
    max_new_tokens: int = 32,
    extra_processors: list[LogitsProcessor] | None = None,
    min_new_tokens: int = 0,
    on_text: Callable[[str], None] | None = None,
) -> str:
    """Generate one answer from the pair of prompts under `processor`; returns the decoded answer.

    `on_text` receives the answer piece by piece as it is decoded.

    Each prompt is prefilled on its own (the prompt without context is short, so this costs far less than
    prefilling both padded to the longer one); their KV caches are then left-padded into one batch of two
    rows that decodes in step, one forward pass per token.
    """
    from transformers import DynamicCache

    prompts = [model.encode(with_context), model.encode(without_context)]
    lengths = [len(ids) for ids in prompts]
    width = max(lengths)
    device = model.device
    processors = [*(extra_processors or []), processor]
    with model.lock, torch.inference_mode():
        prefilled = [_prefill(model, ids) for ids in prompts]
        scores = torch.stack([logits for logits, _ in prefilled]).float()
        padded = [_left_padded(layers, width) for _, layers in prefilled]
        cache = DynamicCache(
            [(torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])) for a, b in zip(*padded, strict=True)],
            config=model.model.config,
        )
        sequences, attention = left_padded(model, prompts)
        positions = torch.tensor([[n] for n in lengths], device=device)
        answer: list[int] = []
        streamer = TextCallback(model.tokenizer, on_text) if on_text else None
        for step in range(max_new_tokens):
            if step < min_new_tokens:
                scores[:, model.eos_token_id] = NEG_INF
            for each in processors:
                scores = each(sequences, scores)
            token = int(torch.argmax(scores[0]))
            if token == model.eos_token_id:
                break
            answer.append(token)
            if streamer is not None:
                streamer.put(torch.tensor([token]))
            if step + 1 == max_new_tokens:
                break
            next_ids = torch.tensor([[token], [token]], device=device)
            sequences = torch.cat([sequences, next_ids], dim=1)
            attention = torch.cat([attention, torch.ones((2, 1), dtype=attention.dtype, device=device)], dim=1)
            output, cache = model.forward(
                next_ids,
                cache,
                # A ready 4-D boolean mask (row, head, query, key) spares transformers building one each step.
                attention_mask=attention.bool()[:, None, None, :],
                position_ids=positions + step,
                cache_position=torch.tensor([width + step], device=device),
                use_cache=True,
            )
            scores = output.logits[:, -1].float()
        if streamer is not None:
            streamer.end()
    return model.decode(answer)
