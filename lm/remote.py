"""A language model behind an OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, ...).

The server keeps its tokenizer to itself, so `RemoteLanguageModel` stands in for `LanguageModel` with a
tokenizer-free encoding: one id per Unicode code point. Tries built with it (`graph.trie.KGTrie`) are tries
of characters, which is what a reply's text can be checked against after decoding. Prompts built with
`chat_prompt` carry their messages in the string (behind `CHAT_MARK`), so that code written for the local
model (`greedy(encode(chat_prompt(...)))`) sends real chat messages to the server.

What the server cannot give is approximated and said so: each approximation is recorded with `note()` and
collected per question by `take_approximations()` for the answer's trace.

Only the standard library speaks HTTP here (urllib, with timeouts): the backend needs no extra dependency.
"""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

# A chat prompt's messages travel inside the prompt string behind this mark (record separators cannot
# appear in text read from documents or questions without being typed on purpose; `plain` removes them).
CHAT_MARK = "\x1etrellis-chat\x1e"
UNICODE_SIZE = 0x110000  # code points are ids below this; token strings the server names are interned above
TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs, which vLLM and llama.cpp's server also accept
# Token strings that end a reply when arbitration decodes token by token (servers spell end-of-turn so).
STOP_TOKENS = frozenset({"", "<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "<end_of_turn>", "<|end|>"})

# Approximations recorded per question (the agent's nodes may run on different threads), drained by the
# answer's trace; bounded, since a question that fails before its answer never drains its notes.
_NOTES: OrderedDict[str, list[str]] = OrderedDict()
_NOTES_LOCK = threading.Lock()
MAX_NOTED_QUESTIONS = 256


def note(text: str, question: str) -> None:
    """Record that, for `question`, something the local model does exactly was approximated or skipped."""
    with _NOTES_LOCK:
        notes = _NOTES.setdefault(question, [])
        _NOTES.move_to_end(question)
        if text not in notes:
            notes.append(text)
        while len(_NOTES) > MAX_NOTED_QUESTIONS:
            _NOTES.popitem(last=False)


def take_approximations(question: str) -> dict[str, list[str]]:
    """The approximations recorded for `question` since the last call, as a trace entry (empty: none)."""
    with _NOTES_LOCK:
        notes = _NOTES.pop(question, [])
    return {"approximations": notes} if notes else {}


def is_remote(model: object) -> bool:
    return isinstance(model, RemoteLanguageModel)


class RemoteModelError(RuntimeError):
    """The server cannot be reached, does not know the model, or answered with an error."""


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    text: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)  # the server's top alternatives at this step


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    tokens: list[TokenLogprob] | None  # None where the server returned no log-probabilities
    finish_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Guidance:
    """How this server constrains a reply to a set of strings: the request field and how to spell the set."""

    name: str
    body: Callable[[list[str]], dict[str, Any]]


def gbnf_alternation(choices: list[str]) -> str:
    """A GBNF grammar (llama.cpp) whose only sentences are `choices`."""
    return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in choices)


GUIDANCE = (
    Guidance("vllm guided_choice", lambda c: {"guided_choice": c}),
    Guidance("vllm structured_outputs.choice", lambda c: {"structured_outputs": {"choice": c}}),
    Guidance("llama.cpp grammar", lambda c: {"grammar": gbnf_alternation(c)}),
)


class RemoteLanguageModel:
    """Generation on an OpenAI-compatible server, with the interface the agent uses of `LanguageModel`."""

    device = "remote"

    def __init__(
        self, base_url: str, api_key: str | None = None, model: str | None = None, timeout: float = 120.0
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key, self.timeout = api_key, timeout
        self.eos_token_id = UNICODE_SIZE  # never a character: decode drops it, as a tokenizer skips specials
        self._interned: dict[str, int] = {}
        self._strings: list[str] = []
        self._intern_lock = threading.Lock()
        served = self._served_models()
        if model is None:
            if not served:
                raise RemoteModelError(f"the server at {self.base_url} (TRELLIS_LLM_BASE_URL) lists no models")
            model = served[0]
        elif served and model not in served:
            raise RemoteModelError(
                f"the server at {self.base_url} (TRELLIS_LLM_BASE_URL) does not serve model {model!r} "
                f"(TRELLIS_LLM_API_MODEL); it serves: {', '.join(served)}"
            )
        self.api_model = model
        self.name = f"{model}@{self.base_url}"
        self._guidance: Guidance | bool | None = False  # False: not probed yet
        self._probing = threading.Lock()
        self._echo: bool | None = None

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _request(self, path: str, body: dict[str, Any] | None = None, timeout: float | None = None) -> Any:
        url = f"{self.base_url}{path}"
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                return json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            raise RemoteModelError(
                f"the model server at {self.base_url} (TRELLIS_LLM_BASE_URL) answered {path} with "
                f"HTTP {error.code}: {detail}"
            ) from error
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise RemoteModelError(
                f"cannot reach the model server at {self.base_url} (TRELLIS_LLM_BASE_URL): {reason}"
            ) from error

    def _served_models(self) -> list[str]:
        # A short timeout: an unreachable or silent server is reported at once, not after a long hang.
        listed = self._request("/models", timeout=min(self.timeout, 10.0))
        return [m["id"] for m in listed.get("data", []) if isinstance(m, dict) and "id" in m]

    # -- generation ------------------------------------------------------------------------------------------

    def chat(
        self,
        messages: list[dict[str, str]],
        max_tokens: int,
        top_logprobs: int = 0,
        choices: list[str] | None = None,
        guidance: Guidance | None = None,
    ) -> Reply:
        """A greedy reply (temperature 0) to `messages`; `choices`: constrain it with the server's guidance
        (the caller checks whether there is one: `guidance`)."""
        body: dict[str, Any] = {
            "model": self.api_model,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0.0,
        }
        if top_logprobs:
            body.update(logprobs=True, top_logprobs=min(top_logprobs, TOP_LOGPROBS))
        # the guidance found by the probe, or (while probing) the one being tried: never shared state in flux
        use = guidance or (self._guidance if isinstance(self._guidance, Guidance) else None)
        if choices is not None and use is not None:
            body.update(use.body(choices))
        answer = self._request("/chat/completions", body)
        choice = answer["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        content = (choice.get("logprobs") or {}).get("content")
        tokens = None
        if content:
            tokens = [
                TokenLogprob(
                    t["token"],
                    float(t["logprob"]),
                    {a["token"]: float(a["logprob"]) for a in t.get("top_logprobs", [])},
                )
                for t in content
            ]
        return Reply(text, tokens, choice.get("finish_reason"))

    def complete(self, prompt: str, max_tokens: int, logprobs: int = 0, echo: bool = False) -> dict[str, Any]:
        """The first choice of /completions (a plain-text prompt: no chat template)."""
        body: dict[str, Any] = {
            "model": self.api_model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "echo": echo,
        }
        if logprobs:
            body["logprobs"] = min(logprobs, TOP_LOGPROBS)
        return self._request("/completions", body)["choices"][0]

    @property
    def guidance(self) -> Guidance | None:
        """The first way of constraining replies this server honours, found once by trying each on a pair
        of strings no free reply would produce; None: it honours none (replies are checked afterwards)."""
        with self._probing:  # one probe, even when the first questions arrive together
            if self._guidance is False:
                probe = ["zq7 violet", "xj4 amber"]
                found: Guidance | None = None
                for guidance in GUIDANCE:
                    try:
                        reply = self.chat(
                            [{"role": "user", "content": "Say hello."}], 8, choices=probe, guidance=guidance
                        )
                    except RemoteModelError:
                        continue  # a server that refuses the field (400) does not have it
                    if reply.text.strip() in probe:
                        found = guidance
                        break
                self._guidance = found
        return self._guidance if isinstance(self._guidance, Guidance) else None

    def generate(self, prompt: str, max_tokens: int, on_text: Callable[[str], None] | None = None) -> str:
        """A greedy reply to a `chat_prompt` (sent as messages) or to plain text (sent to /completions)."""
        messages = messages_of(prompt)
        text = self.chat(messages, max_tokens).text if messages else self.complete(prompt, max_tokens)["text"]
        if on_text and text:
            on_text(text)  # the reply arrives whole; a streaming caller gets it in one piece
        return text

    # -- scoring ---------------------------------------------------------------------------------------------

    def score_continuations(self, prompt: str, continuations: Sequence[str]) -> list[tuple[float, int]] | None:
        """(sum of log-probabilities, tokens) of each continuation after `prompt`, from the prompt
        log-probabilities of /completions with echo; None where the server does not return them."""
        if self._echo is False:
            return None
        text = flat_text(prompt)
        scores = []
        for continuation in continuations:
            joint = text + ("" if continuation[:1].isspace() else " ") + continuation
            try:
                # one new token: vLLM refuses max_tokens=0; tokens past the joint text are not counted
                choice = self.complete(joint, 1, logprobs=1, echo=True)
            except RemoteModelError:
                if self._echo is None:  # refused outright (llama.cpp has no echo): stop asking
                    self._echo = False
                    return None
                raise
            logprobs = choice.get("logprobs") or {}
            offsets, values = logprobs.get("text_offset"), logprobs.get("token_logprobs")
            # OpenAI's echo: an entry per prompt token, the first without a log-probability. A server that
            # ignores echo returns the new token's alone, which would score every continuation 0.
            if not offsets or not values or len(values) < 2 or values[0] is not None:
                self._echo = False
                return None
            self._echo = True
            taken = [v for o, v in zip(offsets, values, strict=False) if len(text) <= o < len(joint) and v is not None]
            scores.append((float(sum(taken)), len(taken)))
        return scores

    def next_token_logprobs(self, prompt: str) -> dict[str, float]:
        """The server's top next-token log-probabilities after `prompt` (at most TOP_LOGPROBS of them)."""
        messages = messages_of(prompt)
        if messages:
            reply = self.chat(messages, 1, top_logprobs=TOP_LOGPROBS)
            return reply.tokens[0].top if reply.tokens else {}
        choice = self.complete(prompt, 1, logprobs=TOP_LOGPROBS)
        tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
        return {k: float(v) for k, v in (tops[0] if tops else {}).items()}

    def arbitrated(
        self,
        with_context: str,
        without_context: str,
        combine: Callable[[Any, Any], tuple[Any, float, float, bool]],
        max_new_tokens: int,
        on_step: Callable[[int, float, float, bool], None],
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """Token-by-token arbitration from the two prompts' top-k next-token distributions.

        Each step asks /completions for one token after each prompt (both in parallel), restricts both
        distributions to the union of their top-k tokens (a token outside one side's top-k gets that side's
        lowest shown log-probability, an upper bound), renormalises, lets `combine` (AdaCAD's or CK-PLUG's
        rule) weigh them, and appends the chosen token's text to both prompts. The prompts are plain text:
        the server's chat template cannot be continued mid-reply through the OpenAI API."""
        import torch

        prompts = [flat_text(with_context), flat_text(without_context)]
        written = ""
        with ThreadPoolExecutor(max_workers=2) as pool:
            for _ in range(max_new_tokens):
                ctx, par = pool.map(self._top_after, [p + written for p in prompts])
                if not ctx:
                    break
                vocabulary = list(dict.fromkeys([*ctx, *par]))
                floor_ctx, floor_par = min(ctx.values()), min(par.values(), default=min(ctx.values()))
                log_ctx = torch.log_softmax(torch.tensor([ctx.get(t, floor_ctx) for t in vocabulary]), dim=-1)
                log_par = torch.log_softmax(torch.tensor([par.get(t, floor_par) for t in vocabulary]), dim=-1)
                combined, weight, gain, conflict = combine(log_ctx, log_par)
                token = vocabulary[int(torch.argmax(combined))]
                if token in STOP_TOKENS or (written.strip() and "\n" in token):
                    break
                on_step(self.intern(token), weight, gain, conflict)
                written += token
                if on_text:
                    on_text(token)
        return written

    def _top_after(self, prompt: str) -> dict[str, float]:
        choice = self.complete(prompt, 1, logprobs=TOP_LOGPROBS)
        tops = (choice.get("logprobs") or {}).get("top_logprobs") or []
        top = {k: float(v) for k, v in (tops[0] if tops and tops[0] else {}).items()}
        if not top and choice.get("finish_reason") == "stop":
            return {"": 0.0}  # the server ended the reply: an end-of-turn with all the mass
        return top

    # -- the tokenizer-free interface ------------------------------------------------------------------------

    def intern(self, token: str) -> int:
        """An id for a token string the server named (so traces can hold it like a local token id)."""
        with self._intern_lock:
            if token not in self._interned:
                self._interned[token] = UNICODE_SIZE + 1 + len(self._strings)
                self._strings.append(token)
            return self._interned[token]

    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: Any) -> str:
        pieces = []
        for i in ids:
            i = int(i)
            if i < UNICODE_SIZE:
                pieces.append(chr(i))
            elif i > UNICODE_SIZE and i - UNICODE_SIZE - 1 < len(self._strings):
                pieces.append(self._strings[i - UNICODE_SIZE - 1])
        return "".join(pieces)

    def count_tokens(self, text: str) -> int:
        """Tokens of a prompt, estimated (the server's tokenizer is not ours): about four characters each."""
        messages = messages_of(text)
        body = " ".join(m["content"] for m in messages) if messages else text
        return max(1, math.ceil(len(body) / 4))

    def plain(self, text: str) -> str:
        # Roles travel as separate messages, so only our own mark could confuse them.
        return text.replace("\x1e", " ")

    def chat_prompt(self, user: str, system: str | None = None) -> str:
        messages = ([{"role": "system", "content": self.plain(system)}] if system else []) + [
            {"role": "user", "content": self.plain(user)}
        ]
        return CHAT_MARK + json.dumps(messages, ensure_ascii=False)

    def greedy(
        self,
        prompt_ids: list[int],
        max_new_tokens: int,
        min_new_tokens: int = 0,
        processors: list | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> str:
        """`LanguageModel.greedy`'s signature; logits processors cannot run on a server and are refused."""
        if processors:
            raise RemoteModelError("logits processors need the in-process model; unset TRELLIS_LLM_BASE_URL")
        return self.generate(self.decode(prompt_ids), max_new_tokens, on_text)


def messages_of(prompt: str) -> list[dict[str, str]] | None:
    """The messages a `chat_prompt` string carries, or None for plain text."""
    if not prompt.startswith(CHAT_MARK):
        return None
    return json.loads(prompt[len(CHAT_MARK) :])


def flat_text(prompt: str) -> str:
    """A chat prompt as plain text for /completions (the server's chat template is not known here)."""
    messages = messages_of(prompt)
    if messages is None:
        return prompt
    return "\n\n".join(m["content"] for m in messages) + "\nAnswer:"
