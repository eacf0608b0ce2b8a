"""Documents into chunks measured in the embedding model's tokens (LangChain's recursive splitter)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from graph.model import Chunk

RUN_CHARS_PER_TOKEN = 4  # a run without spaces longer than this many characters per chunk token is cut by hand


class Chunker:
    """Splits on paragraphs, then lines, sentences and words, so each chunk fits `chunk_tokens`.

    Chunk ids are `<doc_id>#<ordinal>`: the same text always splits the same way, so ids are stable for
    unchanged documents.

    Every separator the splitter knows holds a space or a newline. Given a long run with neither (a base64
    blob, a 400k-character line), it falls back to single characters and measures each one with the
    tokenizer: minutes for a few hundred kilobytes. Such runs are cut here instead, into pieces that fit
    the chunk size, with a few tokenizer calls per piece; text around them goes to the splitter as before.
    """

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int = 200, overlap_tokens: int = 32) -> None:
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(f"overlap ({overlap_tokens}) must be smaller than the chunk size ({chunk_tokens})")
        self._count, self._chunk_tokens, self._overlap_tokens = count_tokens, chunk_tokens, overlap_tokens
        self._run_chars = RUN_CHARS_PER_TOKEN * chunk_tokens
        self._long_run = re.compile(f"[^ \n]{{{self._run_chars + 1},}}")
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
            for text in self._pieces(part.page_content):
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

    def _pieces(self, text: str) -> Iterator[str]:
        """The splitter's chunks of `text`, with over-long runs without spaces cut by `_cut_run`."""
        runs = list(self._long_run.finditer(text))
        if not runs:
            yield from self._splitter.split_text(text)  # the usual case: exactly what the splitter alone does
            return
        start = 0
        for run in runs:
            if text[start : run.start()].strip():
                yield from self._splitter.split_text(text[start : run.start()])
            yield from self._cut_run(run.group())
            start = run.end()
        if text[start:].strip():
            yield from self._splitter.split_text(text[start:])

    def _cut_run(self, run: str) -> Iterator[str]:
        """Consecutive pieces of `run` that fit the chunk size, overlapping in proportion as chunks do.

        A piece is halved until it fits: a few tokenizer calls on bounded text per piece, so linear in the run.
        """
        start, size = 0, self._run_chars
        while start < len(run):
            end = min(len(run), start + size)
            while end - start > 1 and self._count(run[start:end]) > self._chunk_tokens:
                end = start + (end - start) // 2
            yield run[start:end]
            if end == len(run):
                return
            # The next piece first tries twice what fitted: about two tokenizer calls a piece.
            size = min(self._run_chars, 2 * (end - start))
            shared = (end - start) * self._overlap_tokens // self._chunk_tokens
            start = max(start + 1, end - shared)
