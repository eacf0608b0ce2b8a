"""Files into LangChain `Document`s: txt, md, html, pdf, json/jsonl records, and directories of them.

Every document carries `doc_id` (stable: a record's own id, else derived from the file's real path),
`source` (the real path: absolute, symbolic links and `..` resolved, so the same file has the same source
from any working directory), `title` and, for PDFs, `page` in its metadata. A file or record that cannot be
read becomes a `LoadProblem` naming the path as given (and line or record), never an exception that stops
the run.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from langchain_core.documents import Document

from ingest.jsontext import JSONProblem, loads
from ingest.provenance import TRIPLES_PREFIX, reserved_document_id

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
_DERIVED_ID = re.compile(r"[A-Za-z0-9-]*-[0-9a-f]{12}(?::[0-9]+)?")
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
    """Stable id of a file's document: a readable stem plus a hash of the real path (both of the file a
    link leads to, so that every way to one file gives one id)."""
    real = source_of(path)
    digest = hashlib.blake2b(real.encode("utf-8"), digest_size=6).hexdigest()
    stem = _SLUG.sub("-", Path(real).stem).strip("-")[:40] or "doc"
    return f"{stem}-{digest}"


def derived_id(doc_id: str) -> bool:
    """Whether `doc_id` has the form of an id derived from a file path (`<stem>-<hash>`, `...:<n>`)."""
    return _DERIVED_ID.fullmatch(doc_id) is not None


def source_of(path: Path) -> str:
    """A file's identity: its real path, absolute with links and `..` resolved (what the manifest stores)."""
    return str(_real(path) or path.absolute())


def _real(path: Path) -> Path | None:
    """`path` with links resolved; None for a link loop (RuntimeError before Python 3.13, OSError after)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def discover(paths: Sequence[Path | str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[Path]:
    """The files `find_files` finds, without the links it refused."""
    return find_files(paths, include, exclude)[0]


def find_files(
    paths: Sequence[Path | str], include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> tuple[list[Path], list[LoadProblem]]:
    """Supported files under `paths` (directories recursively), filtered by glob patterns, sorted; and the
    symbolic links refused.

    Patterns match the file name or its path relative to the directory given (`*.md`, `notes/**`).
    A path given explicitly is kept whatever its suffix, so that an unsupported file is reported, and is
    read even if it is a symbolic link: the user chose it. Inside a directory, a link is followed only to a
    file within that directory (a link out of it, say to /etc/passwd, is reported and skipped), and
    linked directories are not entered. Each real file is listed once, however many ways lead to it.
    """
    found: dict[str, Path] = {}  # real path -> the path it was reached by (a link only if nothing else)
    refused: list[tuple[LoadProblem, str]] = []  # and the real path, in case it is reached another way

    def add(path: Path) -> None:
        real = source_of(path)
        if real not in found or (found[real].is_symlink() and not path.is_symlink()):
            found[real] = path

    for given in map(Path, paths):
        if not given.is_dir():
            add(given)
            continue
        root = given.resolve()
        for path in sorted(given.rglob("*")):
            relative = path.relative_to(given).as_posix()
            if any(part.startswith(".") for part in path.parts[-2:]):
                continue
            wanted = path.suffix.lower() in SUPPORTED and _wanted(relative, path.name, include, exclude)
            if not path.is_symlink():
                if wanted and path.is_file():
                    add(path)
                continue
            target = _real(path)
            if target is None or not target.exists():
                if wanted:
                    refused.append((LoadProblem(path, "broken symbolic link (its target does not exist)"), ""))
            elif not target.is_relative_to(root):
                if wanted or target.is_dir():
                    kind = "directory" if target.is_dir() else "file"
                    reason = f"symbolic link to a {kind} outside {given} ({target}): not followed"
                    refused.append((LoadProblem(path, reason), str(target)))
            elif wanted and target.is_file():
                add(path)  # a link within the tree: its target is read once, under whichever path
    # A link refused in a directory but named on the command line as well was read: no need to report it.
    return list(found.values()), [problem for problem, real in refused if real not in found]


def _wanted(relative: str, name: str, include: Sequence[str], exclude: Sequence[str]) -> bool:
    if include and not any(_matches(relative, name, pattern) for pattern in include):
        return False
    return not any(_matches(relative, name, pattern) for pattern in exclude)


def _matches(relative: str, name: str, pattern: str) -> bool:
    return fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(name, pattern)


def load_file(path: Path, max_bytes: int | None = None) -> LoadedFile:
    """All documents in one file, and what could not be read; a file over `max_bytes` is not read."""
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED:
        return LoadedFile(path, [], [LoadProblem(path, f"unsupported file type '{suffix or path.name}'")])
    try:
        with path.open("rb") as handle:
            # Read one byte past the limit, not the whole file: a file may be far larger than memory.
            raw = handle.read() if max_bytes is None else handle.read(max_bytes + 1)
    except OSError as error:
        return LoadedFile(path, [], [LoadProblem(path, f"cannot read: {error.strerror or error}")])
    if max_bytes is not None and len(raw) > max_bytes:
        limit = f"{max_bytes / 1e6:g} MB"
        return LoadedFile(path, [], [LoadProblem(path, f"too large: over the {limit} limit (TRELLIS_MAX_DOCUMENT_MB)")])
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
    meta = {"doc_id": file_doc_id(path), "source": source_of(path), "title": title.strip() or path.stem}
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

    doc_id, source = file_doc_id(path), source_of(path)
    try:
        reader = PdfReader(io.BytesIO(raw))
        title = (reader.metadata.title if reader.metadata else None) or path.stem
        pages = [(number, clean_text(page.extract_text() or "")) for number, page in enumerate(reader.pages, start=1)]
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as error:
        return LoadedFile(path, [], [LoadProblem(path, f"PDF could not be parsed: {error}")])
    documents = [
        Document(page_content=text, metadata={"doc_id": doc_id, "source": source, "title": str(title), "page": n})
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
            data = loads(text)
        except JSONProblem as error:
            yield error.line or 0, LoadProblem(path, error.reason, error.line)
            return
        items = data if isinstance(data, list) else [data]
        yield from enumerate(items, start=1)
        return
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            try:
                yield number, loads(line)
            except JSONProblem as error:
                yield number, LoadProblem(path, error.reason, number)


def _load_records(path: Path, text: str) -> LoadedFile:
    """Records `{"id"?, "title"?, "text"}`; in a .json list, problems name the record number as `line`."""
    base, source = file_doc_id(path), source_of(path)
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
        if given is not None and reserved_document_id(str(given)):
            problems.append(problem(number, f"'id' may not begin with '{TRIPLES_PREFIX}' (kept for triples sources)"))
            continue
        doc_id = str(given) if given is not None else f"{base}:{number}"
        title = record.get("title") if isinstance(record.get("title"), str) else ""
        meta = {"doc_id": doc_id, "source": source, "title": title, "record": number}
        documents.append(Document(page_content=clean_text(body), metadata=meta))
    if not documents and not problems:
        problems.append(LoadProblem(path, "empty: no records"))
    return LoadedFile(path, documents, problems)
