"""Opens the graph-store backend that the settings name: the one module that imports every backend."""

from __future__ import annotations

from config import Settings
from graph.store import GraphStore


def open_store(settings: Settings, read_only: bool = False) -> GraphStore:
    """Open the backend that `settings.graph_uri` names."""
    if settings.backend == "embedded":
        from graph.embedded import EmbeddedGraphStore

        return EmbeddedGraphStore(settings.graph_path, read_only=read_only)
    from graph.neo4j_store import Neo4jGraphStore

    return Neo4jGraphStore(
        settings.graph_uri,
        user=settings.neo4j_user,
        password=settings.neo4j_password.get_secret_value(),
        database=settings.neo4j_database,
        read_only=read_only,
    )
