"""What flows through the agent graph: one typed state, filled in node by node."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

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


class Turn(TypedDict):
    question: str
    answer: str


class AgentState(TypedDict, total=False):
    question: str
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
    rounds: int
    trace: dict[str, Any]
