"""Documents into chunks measured in the embedding model's tokens (LangChain's recursive splitter)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from graph.model import Chunk


class Chunker:
    """Splits on paragraphs, then lines, sentences and words, so each chunk fits `chunk_tokens`.

    Chunk ids are `<doc_id>#<ordinal>`: the same text always splits the same way, so ids are stable for
    unchanged documents.
    """

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int = 200, overlap_tokens: int = 32) -> None:
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(f"overlap ({overlap_tokens}) must be smaller than the chunk size ({chunk_tokens})")
        self._splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=overlap_tokens,
            length_function=count_tokens,
            separators=["\n\n", "\n", ". ", "? ", "! ", "; ", ", ", " ", ""],
            keep_separator="end",
        )

    def split(self, parts: Sequence[Document]) -> list[Chunk]:
        """Chunks of one document, given as its parts (one per page for a PDF, else one)."""
        chunks: list[Chunk] = []
        for part in parts:
            for text in self._splitter.split_text(part.page_content):
                doc_id = part.metadata["doc_id"]
                chunks.append(
                    Chunk(
                        id=f"{doc_id}#{len(chunks)}",
                        doc_id=doc_id,
                        ordinal=len(chunks),
                        text=text.strip(),
                        page=part.metadata.get("page", 0),
                    )
                )
        return [c for c in chunks if c.text]
