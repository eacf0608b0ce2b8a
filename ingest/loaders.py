"""Files into LangChain `Document`s: txt, md, html, pdf, json/jsonl records, and directories of them.

Every document carries `doc_id` (stable: a record's own id, else derived from the file path), `source`,
`title` and, for PDFs, `page` in its metadata. A file or record that cannot be read becomes a `LoadProblem`
naming the path (and line or record), never an exception that stops the run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

TEXT_SUFFIXES = {".txt", ".text"}
MARKDOWN_SUFFIXES = {".md", ".markdown"}
HTML_SUFFIXES = {".html", ".htm"}
PDF_SUFFIXES = {".pdf"}
RECORD_SUFFIXES = {".jsonl", ".ndjson", ".json"}
SUPPORTED = TEXT_SUFFIXES | MARKDOWN_SUFFIXES | HTML_SUFFIXES | PDF_SUFFIXES | RECORD_SUFFIXES

_HTML_BLOCKS = [
    "p",
    "div",
    "br",
    "li",
    "tr",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "section",
    "article",
    "pre",
    "blockquote",
    "table",
    "ul",
    "ol",
    "dd",
    "dt",
]
_VALID_ID = re.compile(r"[^\x00-\x1f\x7f]{1,512}")
_SLUG = re.compile(r"[^A-Za-z0-9]+")
_BLANK_LINES = re.compile(r"\n\s*\n\s*")
_SPACES = re.compile(r"[ \t\f\v]+")


@dataclass(frozen=True, slots=True)
class LoadProblem:
    path: Path
    reason: str
    line: int | None = None
    record: int | None = None  # position in a JSON list, where lines mean little

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}: {self.reason}"
        if self.record:
            return f"{self.path} (record {self.record}): {self.reason}"
        return f"{self.path}: {self.reason}"


@dataclass(slots=True)
class LoadedFile:
    path: Path
    documents: list[Document]
    problems: list[LoadProblem]

    @property
    def complete(self) -> bool:
        """Whether every part of the file loaded (so documents it no longer holds may be dropped)."""
        return not self.problems


def file_doc_id(path: Path) -> str:
    """Stable id of a file's document: a readable stem plus a hash of the absolute path."""
    digest = hashlib.blake2b(str(path.resolve()).encode("utf-8"), digest_size=6).hexdigest()
    stem = _SLUG.sub("-", path.stem).strip("-")[:40] or "doc"
    return f"{stem}-{digest}"


def discover(paths: Sequence[Path | str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """Supported files under `paths` (directories recursively), filtered by glob patterns, sorted.

    Patterns match the file name or its path relative to the directory given (`*.md`, `notes/**`).
    A path given explicitly is kept whatever its suffix, so that an unsupported file is reported.
    """
    found: list[Path] = []
    for given in map(Path, paths):
        if not given.is_dir():
            found.append(given)
            continue
        for path in sorted(p for p in given.rglob("*") if p.is_file()):
            relative = path.relative_to(given).as_posix()
            if path.suffix.lower() not in SUPPORTED or any(part.startswith(".") for part in path.parts[-2:]):
                continue
            if include and not any(_matches(relative, path.name, pattern) for pattern in include):
                continue
            if any(_matches(relative, path.name, pattern) for pattern in exclude):
                continue
            found.append(path)
    return list(dict.fromkeys(found))


def _matches(relative: str, name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern)


def load_file(path: Path) -> LoadedFile:
    """All documents in one file, and what could not be read."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        return LoadedFile(path, [], [LoadProblem(path, f"unsupported file type '{suffix or path.name}'")])
    try:
        raw = path.read_bytes()
    except OSError as error:
        return LoadedFile(path, [], [LoadProblem(path, f"cannot read: {error.strerror or error}")])
    if suffix in PDF_SUFFIXES:
        return _load_pdf(path, raw)
    text, problem = _decode(path, raw)
    if problem:
        return LoadedFile(path, [], [problem])
    if suffix in RECORD_SUFFIXES:
        return _load_records(path, text)
    if suffix in HTML_SUFFIXES:
        title, body = _html_text(text)
    elif suffix in MARKDOWN_SUFFIXES:
        title, body = _markdown_title(text) or path.stem, text
    else:
        title, body = path.stem, text
    return _single(path, title, body)


def _decode(path: Path, raw: bytes) -> tuple[str, LoadProblem | None]:
    if b"\x00" in raw[:8192]:
        return "", LoadProblem(path, "binary file (NUL bytes), not text")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff"), None
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        return "", LoadProblem(path, f"not valid UTF-8 (byte {error.start})", line)


def _single(path: Path, title: str, body: str) -> LoadedFile:
    text = clean_text(body)
    if not text:
        return LoadedFile(path, [], [LoadProblem(path, "empty: no text")])
    meta = {"doc_id": file_doc_id(path), "source": str(path), "title": title.strip() or path.stem}
    return LoadedFile(path, [Document(page_content=text, metadata=meta)], [])


def clean_text(text: str) -> str:
    """Trailing spaces and runs of blank lines removed; paragraphs kept."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def _markdown_title(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _html_text(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    for hidden in soup(["head", "script", "style", "noscript", "template"]):
        hidden.decompose()
    for block in soup(_HTML_BLOCKS):
        block.append("\n")
    return title, soup.get_text()


def _load_pdf(path: Path, raw: bytes) -> LoadedFile:
    import io

    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    doc_id = file_doc_id(path)
    try:
        reader = PdfReader(io.BytesIO(raw))
        title = (reader.metadata.title if reader.metadata else None) or path.stem
        pages = [(number, clean_text(page.extract_text() or "")) for number, page in enumerate(reader.pages, start=1)]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        return LoadedFile(path, [], [LoadProblem(path, f"PDF could not be parsed: {error}")])
    documents = [
        Document(page_content=text, metadata={"doc_id": doc_id, "source": str(path), "title": str(title), "page": n})
        for n, text in pages
        if text
    ]
    if not documents:
        return LoadedFile(path, [], [LoadProblem(path, "empty: the PDF has no extractable text")])
    return LoadedFile(path, documents, [])


def _records(path: Path, text: str) -> Iterator[tuple[int, object | LoadProblem]]:
    """(line or record number, parsed record or problem) for JSONL, or for a JSON list (or single object)."""
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            yield error.lineno, LoadProblem(path, f"not valid JSON: {error.msg}", error.lineno)
            return
        items = data if isinstance(data, list) else [data]
        yield from enumerate(items, start=1)
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, LoadProblem(path, f"not valid JSON: {error.msg}", number)


def _load_records(path: Path, text: str) -> LoadedFile:
    """Records `{"id"?, "title"?, "text"}`; in a .json list, problems name the record number as `line`."""
    base = file_doc_id(path)
    documents: list[Document] = []
    problems: list[LoadProblem] = []
    in_list = path.suffix.lower() == ".json"

    def problem(number: int, reason: str) -> LoadProblem:
        return LoadProblem(path, reason, record=number) if in_list else LoadProblem(path, reason, line=number)

    for number, record in _records(path, text):
        if isinstance(record, LoadProblem):
            problems.append(record)
            continue
        if not isinstance(record, dict):
            problems.append(problem(number, "expected an object with 'text'"))
            continue
        body = record.get("text")
        if not isinstance(body, str) or not clean_text(body):
            reason = "missing 'text'" if "text" not in record else "'text' is empty or not a string"
            problems.append(problem(number, reason))
            continue
        given = record.get("id")
        if given is not None and (not isinstance(given, str | int) or not _VALID_ID.fullmatch(str(given))):
            problems.append(problem(number, "'id' must be a non-empty string or number without control characters"))
            continue
        doc_id = str(given) if given is not None else f"{base}:{number}"
        title = record.get("title") if isinstance(record.get("title"), str) else ""
        meta = {"doc_id": doc_id, "source": str(path), "title": title, "record": number}
        documents.append(Document(page_content=clean_text(body), metadata=meta))
    if not documents and not problems:
        problems.append(LoadProblem(path, "empty: no records"))
    return LoadedFile(path, documents, problems)
