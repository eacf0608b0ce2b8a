"""The agent: a LangGraph StateGraph of intake -> route -> retrieve -> arbitrate -> generate -> answer.

Nodes are plain functions of the state returning a partial state; the shared store and models reach them
through `Resources`, bound when the graph is built. An unsupported document answer loops back to retrieve
with more chunks, for at most `MAX_ROUNDS` rounds.

The graph takes a `question`, or LangGraph's chat convention: a `messages` list whose last human message is
the question. Either way it returns the result's keys (`answer`, `answers`, `used_paths`, `citations`, ...)
and appends an AI message to `messages` whose `response_metadata["trellis"]` holds the result.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, RemoveMessage
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph

from agents.documents import answer_from_evidence, evidence_trace, gather_evidence, span_confidence
from agents.evidence import numbered
from agents.generation import (
    closed_book_answer,
    closed_book_entropy,
    graph_answer,
    probability,
    take_approximations,
)
from agents.resources import Resources
from agents.retrieval import constraint_path, graph_candidates, link_entities, path_record
from agents.state import AgentInput, AgentState, Turn

MAX_ROUNDS = 2
KEPT_TURNS = 20  # turns of a thread kept in its state (conversation and messages alike)
MAX_ANSWERS = 200  # answers listed for a chain that reaches many entities
PRONOUNS = re.compile(r"\b(it|its|he|him|his|she|her|they|them|their|that|this|there)\b", re.IGNORECASE)
DOCUMENTS_ONLY = re.compile(r"\b(use|using|from|according to) (only )?(the )?(documents?|passages?|sources?)\b", re.I)
NO_DOCUMENTS = re.compile(r"\b(ignore|without|don'?t use|do not use) (the )?(documents?|passages?|sources?)\b", re.I)
GRAPH_ONLY = re.compile(r"\b(only|just) (the |from the )?(knowledge )?graph\b", re.I)
# Chains that contradict the question's cues (score below this) are not trusted to answer it; where
# documents exist too, the graph answers only with a chain that matches every cue and the asked answer type.
MIN_PATTERN_SCORE = -1.5
STRONG_PATTERN_SCORE = 0.8


def instruction_of(question: str) -> str | None:
    """A user instruction about sources (instruction > context > parameters)."""
    if NO_DOCUMENTS.search(question):
        return "no_documents"
    if GRAPH_ONLY.search(question):
        return "graph_only"
    if DOCUMENTS_ONLY.search(question):
        return "documents_only"
    return None


def _text(message: AnyMessage) -> str:
    return str(message.text)  # text content blocks joined; images and other blocks dropped


def paired_turns(exchanges: Iterable[tuple[bool, str]]) -> list[Turn]:
    """The last KEPT_TURNS turns of a chat given as (is it a question?, text) in order, in one pass: a question
    is answered by the reply that follows it before the next question (an unanswered one keeps an empty
    answer); a reply to no question is ignored."""
    turns: deque[Turn] = deque(maxlen=KEPT_TURNS)
    awaiting_reply = False
    for is_question, text in exchanges:
        if is_question:
            turns.append({"question": text, "answer": ""})
            awaiting_reply = True
        elif awaiting_reply:
            turns[-1]["answer"] = text
            awaiting_reply = False
    return list(turns)


def turns_of(messages: list[AnyMessage]) -> list[Turn]:
    """Human/AI pairs as agent turns, oldest first (`paired_turns`); other roles are skipped."""
    chat = (m for m in messages if isinstance(m, HumanMessage | AIMessage))
    return paired_turns((isinstance(m, HumanMessage), _text(m)) for m in chat)


def intake(resources: Resources, state: AgentState) -> dict[str, Any]:
    """This turn's question: a new human message (one after the last AI message, not taken up by an earlier
    run of the thread), else `question`.

    A question from `messages` brings the conversation with it (the earlier human/AI pairs); a question given
    as `question` keeps the conversation handed in or checkpointed, and enters `messages` as a human message
    so that a thread's messages stay in pairs whichever way its turns came in.
    """
    messages = state.get("messages") or []
    for at in range(len(messages) - 1, -1, -1):
        message = messages[at]
        if isinstance(message, AIMessage):
            break
        if isinstance(message, HumanMessage):
            if message.id is not None and message.id == state.get("_asked"):  # type: ignore[typeddict-item]
                break  # a run of this thread took it up and died before answering: not this turn's question
            return {"question": _text(message), "conversation": turns_of(messages[:at]), "_asked": message.id}
    question = state.get("question")
    if not isinstance(question, str):
        raise ValueError("no question: pass `question`, or `messages` ending with a human message")
    asked = HumanMessage(question, id=uuid.uuid4().hex)
    return {"messages": [asked], "_asked": asked.id}


def route(resources: Resources, state: AgentState) -> dict[str, Any]:
    started = time.perf_counter()
    question = state["question"]
    instruction = instruction_of(question)
    entities = link_entities(resources, question)
    conversation = state.get("conversation") or []
    if not entities and conversation and PRONOUNS.search(question):
        # A follow-up ("who directed it?"): link against the previous turn and carry its entities.
        last = conversation[-1]
        entities = link_entities(resources, f"{last['question']} {last['answer']}")
    graph = None
    if entities and instruction != "documents_only":
        graph = graph_candidates(resources, question, entities)
    trace: dict[str, Any] = {"instruction": instruction}
    has_documents = instruction != "no_documents" and resources.chunk_index is not None and len(resources.chunk_index)
    best = graph.score if graph is not None else float("-inf")
    if best >= STRONG_PATTERN_SCORE or (best >= MIN_PATTERN_SCORE and not has_documents):
        decided = "graph"
    elif has_documents:
        decided = "documents"
        if instruction is None and not entities:
            entropy = closed_book_entropy(resources, question)
            trace["closed_book_entropy_bits"] = round(entropy, 3)
            if entropy < resources.settings.closed_book_entropy:
                decided = "parametric"
    else:
        decided = "parametric"
    trace["route_s"] = round(time.perf_counter() - started, 4)
    update: dict[str, Any] = {
        "route": decided,
        "instruction": instruction,
        "entities": entities,
        "rounds": 0,
        "trace": trace,
        "paths": [],
        "patterns": [],
        "chunks": [],
        "context": "",
        "free_text": False,  # a thread's earlier document answer says nothing of this one
        "conflict": None,
    }
    if decided == "graph" and graph is not None:
        update["patterns"] = [
            {"pattern": [list(step) for step in p.pattern], "score": round(p.score, 4), "reach": len(p.reach)}
            for p in graph.patterns[:5]
        ]
        if graph.constraint is not None:
            other, chain = graph.constraint
            trace["constrained_by"] = {"entity": other["name"], "pattern": [list(step) for step in chain.pattern]}
        update["_graph"] = graph
    return update


def retrieve(resources: Resources, state: AgentState) -> dict[str, Any]:
    started = time.perf_counter()
    trace = dict(state.get("trace") or {})
    if state["route"] == "graph":
        graph = state["_graph"]  # type: ignore[typeddict-item]
        paths = [path_record(p, graph.patterns[0].score) for p in graph.paths]
        update: dict[str, Any] = {"paths": paths}
    elif state["route"] == "documents":
        # a free-text answer found unsupported comes back here: the next try reads more chunks
        k = resources.settings.retrieve_k * (1 + state.get("rounds", 0))
        gathered = gather_evidence(resources, state["question"], state.get("entities", []), k)
        chunks = list({s.citation["chunk_id"]: s.citation for s in gathered.sentences}.values())
        update = {"chunks": chunks, "context": numbered(gathered.sentences), "_evidence": gathered}
        trace["retrieval"] = evidence_trace(resources, gathered)
    else:
        update = {}
    trace["retrieve_s"] = round(time.perf_counter() - started, 4)
    update["trace"] = trace
    return update


def arbitrate(resources: Resources, state: AgentState) -> dict[str, Any]:
    """Choose how to weigh context against the model's own knowledge for this question."""
    instruction = state.get("instruction")
    if state["route"] == "graph":
        decision = {"method": "kg-trie", "reason": "graph paths constrain the answer; no parametric fallback"}
    elif state["route"] == "documents":
        if instruction == "documents_only":
            decision = {"method": "ckplug", "reliance": 0.0, "reason": "the user asked for the documents only"}
        else:
            decision = {"method": "adacad", "reason": "weigh context against memory by their divergence per token"}
    else:
        decision = {"method": "closed-book", "reason": "no retrieval needed or allowed"}
    return {"arbitration": decision}


def generate(resources: Resources, state: AgentState) -> dict[str, Any]:
    """Write the answer; with stream_mode="custom", text goes out as it is decoded ({"token": ...} events)."""
    started = time.perf_counter()
    trace = dict(state.get("trace") or {})
    update: dict[str, Any] = {}
    write = get_stream_writer()
    if state.get("rounds", 0):
        write({"retract": True})  # the previous round's answer was unsupported; a new one follows

    def on_text(text: str) -> None:
        write({"token": text})

    if state["route"] == "graph":
        graph = state["_graph"]  # type: ignore[typeddict-item]
        chosen = graph_answer(resources, state["question"], graph.paths)
        if chosen is not None:
            # the chosen path's end first, then the other answers by posterior mass over the best chains
            mass = graph.answer_scores
            ranked = sorted((i for i in mass if i != chosen.path.end_id), key=lambda i: -mass[i])[:MAX_ANSWERS]
            names = {e.id: e.name for e in resources.store.get_entities(ranked)}
            others = [names[i] for i in sorted(ranked, key=lambda i: (-mass[i], names.get(i, ""))) if i in names]
            records = [path_record(chosen.path, chosen.log_prob)]
            second = constraint_path(resources, graph, chosen.path.end_id)
            if second is not None:  # a constraint question: the answer meets both entities; cite both paths
                records.append(path_record(second, 0.0))
            on_text(chosen.path.end_name)  # the path is decoded whole under the trie; its end is the answer
            update = {
                "answer": chosen.path.end_name,
                "answers": [chosen.path.end_name, *others],
                "used_paths": records,
                "source": "graph",
                "confidence": probability(chosen.log_prob),
                "supported": True,
            }
            trace["constraint"] = {
                "paths_offered": chosen.offered,
                "model_choices": chosen.choices,
                "forward_passes": chosen.forward_passes,
                "path_log_prob": round(chosen.log_prob, 4),
            }
    elif state["route"] == "documents":
        gathered = state.get("_evidence")  # type: ignore[typeddict-item]
        decision = state.get("arbitration") or {}
        drawn = answer_from_evidence(
            resources,
            state["question"],
            gathered.sentences if gathered is not None else [],
            decision.get("method", "adacad"),
            decision.get("reliance", 0.0),
            state.get("instruction"),
            on_text=on_text,
            bridges=gathered.bridges if gathered is not None else (),
        )
        if drawn.get("answer"):
            span = drawn["span"]
            steps = drawn["arbitration_steps"]
            weights = [s.weight for s in steps]
            update = {
                "answer": drawn["answer"],
                "answers": [drawn["answer"]],
                "citations": drawn["citations"],
                "source": "context",
                "free_text": drawn["free_text"],
                "conflict": drawn["conflict"],
                # a span's share of the candidates' softmax; free text: how little AdaCAD leaned on memory
                "confidence": span_confidence(span)
                if span is not None
                else round(1.0 - (sum(weights) / len(weights) if weights else 0.0), 4),
                # a span is in its cited sentence by construction; free text is checked against the evidence
                "supported": span is not None or _supported(drawn["answer"], state.get("context", "")),
            }
            if span is not None:
                trace["answer_candidates"] = [
                    {"text": c.text, "score": round(c.score, 3), "model": round(c.model, 3), "label": c.label}
                    for c in span.candidates[:5]
                ]
            trace["arbitration"] = [
                {
                    "token": resources.model.decode([s.token]),
                    "weight": round(s.weight, 4),
                    "confidence_gain": round(s.confidence_gain, 4),
                    "conflict": s.conflict,
                }
                for s in steps
            ]
    if "answer" not in update:
        text = closed_book_answer(resources, state["question"], on_text=on_text).text
        update = {
            "answer": text,
            "answers": [text] if text else [],
            "source": "parameters",
            "confidence": 0.0,
            "supported": True,
        }
    trace.update(take_approximations(state["question"]))  # what a model server could only approximate
    trace["generate_s"] = round(time.perf_counter() - started, 4)
    update["trace"] = trace
    update["rounds"] = state.get("rounds", 0) + 1
    return update


def _supported(answer: str, context: str) -> bool:
    """Some content word of the answer appears in the context."""
    words = [w for w in re.findall(r"\w+", answer.lower()) if len(w) > 2]
    return bool(words) and any(w in context.lower() for w in words)


def after_generate(state: AgentState) -> str:
    if state["route"] == "documents" and not state.get("supported") and state.get("rounds", 0) < MAX_ROUNDS:
        return "retrieve"
    return "answer"


def answer(resources: Resources, state: AgentState) -> dict[str, Any]:
    conversation = list(state.get("conversation") or [])
    conversation.append({"question": state["question"], "answer": state.get("answer", "")})
    update: dict[str, Any] = {
        "conversation": conversation[-KEPT_TURNS:],
        "citations": state.get("citations", []) if state["route"] == "documents" else [],
        "used_paths": state.get("used_paths", []) if state["route"] == "graph" else [],
        "_graph": None,  # this turn's working data stays out of the conversation's checkpoints
        "_evidence": None,
    }
    # The result rides in the AI message for chat front ends; the trace stays in the state's `trace` (a
    # thread's checkpoints would otherwise keep one per turn).
    result = {key: value for key, value in result_of({**state, **update}).items() if key != "trace"}
    reply = AIMessage(result["answer"], response_metadata={"trellis": result}, id=uuid.uuid4().hex)
    # A thread keeps its last KEPT_TURNS turns of messages, as it does of the conversation.
    old = (state.get("messages") or [])[: -(2 * KEPT_TURNS - 1)]
    update["messages"] = [*(RemoveMessage(m.id) for m in old if m.id is not None), reply]
    return update


class _State(AgentState, total=False):
    _graph: Any  # GraphCandidates of this turn (not checkpointed beyond the run)
    _evidence: Any  # agents.documents.Evidence of this turn
    _asked: str | None  # id of the human message this turn answers (a failed run's is not asked again)


def build_graph(resources: Resources, checkpointer: Any = None) -> Any:
    """The compiled agent graph bound to `resources` (and a checkpointer for multi-turn memory)."""
    nodes: dict[str, Callable[..., dict[str, Any]]] = {
        "intake": intake,
        "route": route,
        "retrieve": retrieve,
        "arbitrate": arbitrate,
        "generate": generate,
        "answer": answer,
    }
    # input and output schemas name what callers see (LangGraph Studio's forms): not the turn's working data
    builder = StateGraph(_State, input_schema=AgentInput, output_schema=AgentState)
    for name, node in nodes.items():
        builder.add_node(name, partial(node, resources))
    builder.add_edge(START, "intake")
    builder.add_edge("intake", "route")
    builder.add_edge("route", "retrieve")
    builder.add_edge("retrieve", "arbitrate")
    builder.add_edge("arbitrate", "generate")
    builder.add_conditional_edges("generate", after_generate, {"retrieve": "retrieve", "answer": "answer"})
    builder.add_edge("answer", END)
    return builder.compile(checkpointer=checkpointer)


def result_of(state: dict[str, Any]) -> dict[str, Any]:
    """The public answer: what `trellis ask --json` prints and the HTTP API returns."""
    return {
        "question": state["question"],
        "answer": state.get("answer", ""),
        "answers": state.get("answers", []),
        "paths": [p["path"] for p in state.get("used_paths", [])],
        "path_details": state.get("used_paths", []),
        "citations": state.get("citations", []),
        "source": state.get("source", "none"),
        "free_text": state.get("free_text", False),
        "conflict": state.get("conflict"),
        "confidence": state.get("confidence", 0.0),
        "route": state.get("route"),
        "entities": state.get("entities", []),
        "trace": {**(state.get("trace") or {}), "arbitration_decision": state.get("arbitration")},
    }


def ask(
    graph: Any,
    question: str,
    thread_id: str | None = None,
    conversation: list[Turn] | None = None,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run one question through the compiled graph; returns `result_of` its final state.

    `thread_id` continues a checkpointed conversation; `conversation` hands in earlier turns directly (for
    callers that keep the history themselves). `on_event` receives the generate node's {"token": text} and
    {"retract": True} events as they happen.
    """
    config = {"configurable": {"thread_id": thread_id}} if thread_id else None
    inputs: dict[str, Any] = {"question": question}
    if conversation is not None:
        inputs["conversation"] = conversation
    started = time.perf_counter()
    if on_event is None:
        state = graph.invoke(inputs, config=config)
    else:
        state = {}
        for mode, chunk in graph.stream(inputs, config=config, stream_mode=["custom", "values"]):
            if mode == "custom":
                on_event(chunk)
            else:
                state = chunk
    result = result_of(state)
    result["trace"]["total_s"] = round(time.perf_counter() - started, 4)
    return result


_SERVED: dict[str, Any] = {}  # make_graph's graph and the resources under it, for this process
_SERVED_LOCK = threading.Lock()


def make_graph() -> Any:
    """Factory for LangGraph tooling (`langgraph.json`): the agent over the store that TRELLIS_* settings name.

    LangGraph Server calls a factory for every run and schema request, so the graph is built once per process
    (its store opened read-only, serialised across the server's threads). A data directory with nothing in it
    yet gets an empty embedded store, so that a fresh checkout's `langgraph dev` starts and answers from the
    model alone until something is ingested (then restart it to read the new data).
    """
    from config import load_settings
    from graph.backends import open_store
    from graph.store import SerialisedStore

    with _SERVED_LOCK:
        if "graph" not in _SERVED:
            settings = load_settings()
            if settings.backend == "embedded" and not settings.graph_path.exists():
                settings.data_dir.mkdir(parents=True, exist_ok=True)
                open_store(settings).close()  # creates the empty store
            store = SerialisedStore(open_store(settings, read_only=True))
            _SERVED["resources"] = Resources.open(settings, store)  # type: ignore[arg-type]
            _SERVED["graph"] = build_graph(_SERVED["resources"])
        return _SERVED["graph"]


async def make_graph_async() -> Any:
    """`make_graph` for LangGraph Server (`langgraph.json`), whose event loop must not block: the store and
    indexes open in a worker thread (the graph's own nodes already run in one)."""
    return await asyncio.to_thread(make_graph)
