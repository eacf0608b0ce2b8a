"""Trellis's chunk retrieval as a LangChain retriever, for chains and agents built on LangChain.

It is the retrieval the agent's document route starts from (`agents.retrieval.retrieve_chunks`): the
question's entities are linked, the FAISS neighbours of the question are fused with the graph spread from
those entities (`agents.spread`), and the best `k` chunks come back as `Document`s. Only the store and the
embedder are used: no language model is loaded.
"""

from __future__ import annotations

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field

from agents.resources import Resources
from agents.retrieval import link_entities, retrieve_chunks


class TrellisRetriever(BaseRetriever):
    """Chunks for a query, best first, as `Document`s whose metadata holds `chunk_id`, `doc_id`, `title`,
    `page` (0 where the source has no pages), `score` (the chunk's cosine to the query) and `entities` (the
    names the query was linked to, which seeded the graph spread).

    `hybrid=False` ranks by the vector index alone. Over a data directory with no documents it returns [].
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    resources: Resources
    k: int = Field(default=4, ge=1, description="Chunks returned per query.")
    hybrid: bool = Field(default=True, description="Fuse the vector ranking with the graph spread.")

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        entities = link_entities(self.resources, query)
        found = retrieve_chunks(self.resources, query, entities, self.k, hybrid=self.hybrid)
        names = [entity["name"] for entity in entities]
        return [
            Document(page_content=text, id=citation["chunk_id"], metadata={**citation, "entities": names})
            for citation, text in found
        ]
