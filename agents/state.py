"""What flows through the agent graph: one typed state, filled in node by node.

The TypedDicts come from typing_extensions: pydantic (which LangGraph uses to describe a graph's input and
output as JSON schema, for LangGraph Studio and Server) refuses typing.TypedDict before Python 3.12.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

Route = Literal["graph", "documents", "parametric"]
Source = Literal["graph", "context", "parameters", "none"]


class LinkedEntity(TypedDict):
    id: str
    name: str
    mention: str  # the question text it was linked from
    how: str  # exact | normalised | fuzzy | vector
    score: float


class PathRecord(TypedDict):
    path: list[str]  # entity, arrowed relation, entity, ... as in graph.paths.Path.as_list
    text: str
    score: float
    triples: list[list[str]]  # (head, relation, tail) in the graph's own direction


class Citation(TypedDict):
    doc_id: str
    chunk_id: str
    title: str
    page: int
    score: float
    # a document answer cites evidence sentences: where each stands in its chunk, and where the answer is
    sentence: NotRequired[str]
    sentence_start: NotRequired[int]
    sentence_end: NotRequired[int]
    evidence: NotRequired[int]  # its number in the evidence the model read
    answer_here: NotRequired[bool]
    answer_start: NotRequired[int]
    answer_end: NotRequired[int]


class Turn(TypedDict):
    question: str
    answer: str


class AgentInput(TypedDict, total=False):
    """What a caller hands in: a `question`, or a `messages` list whose last human message is the question
    (LangChain messages or {"role", "content"} dicts; earlier human/AI pairs are the conversation)."""

    question: str
    messages: Annotated[list[AnyMessage], add_messages]
    conversation: list[Turn]  # earlier turns, for callers that keep the history themselves


class AgentState(TypedDict, total=False):
    question: str
    # the thread as chat messages: each turn's human message, then an AI message carrying the result
    messages: Annotated[list[AnyMessage], add_messages]
    conversation: list[Turn]  # earlier turns of this thread, oldest first
    instruction: Literal["documents_only", "no_documents", "graph_only"] | None
    route: Route
    entities: list[LinkedEntity]
    patterns: list[dict[str, Any]]  # ranked relation chains: {"pattern", "score", "reach"}
    paths: list[PathRecord]  # candidate paths offered to the constraint
    chunks: list[Citation]  # retrieved chunks, best first
    context: str  # the chunk text given to the model
    arbitration: dict[str, Any]  # {"method", "reason", ...}
    answer: str
    answers: list[str]
    used_paths: list[PathRecord]
    citations: list[Citation]
    source: Source
    confidence: float
    supported: bool
    free_text: bool  # a document answer written freely (an explanation question), not a span of the evidence
    conflict: dict[str, Any] | None  # the context's answer against the model's own, where they were compared
    rounds: int
    trace: dict[str, Any]
