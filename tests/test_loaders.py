"""Loaders: every format, and every kind of bad input named with its path and line or record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ingest.loaders import discover, file_doc_id, find_files, load_file


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one line of Helvetica text per page."""
    objects: list[bytes] = [b"<< /Type /Catalog /Pages 2 0 R >>", b""]
    page_ids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode("latin-1")
        content_id = len(objects) + 1
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(len(objects) + 1)
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 << /Type /Font /Subtype /Type1 /BaseFont /Helvetica >> >> >> >>" % content_id
        )
    kids = " ".join(f"{i} 0 R" for i in page_ids).encode()
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(page_ids))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def test_text_markdown_and_html(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("First line.  \n\n\n\nSecond   paragraph.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# The Title\n\nBody text.", encoding="utf-8")
    (tmp_path / "c.html").write_text(
        "<html><head><title>Page</title><style>p{color:red}</style><script>steal()</script></head>"
        "<body><p>Hello <b>bold</b> world</p><script>alert(1)</script><div>Next block</div></body></html>",
        encoding="utf-8",
    )
    [txt] = load_file(tmp_path / "a.txt").documents
    assert txt.page_content == "First line.\n\nSecond paragraph."
    assert txt.metadata == {"doc_id": file_doc_id(tmp_path / "a.txt"), "source": str(tmp_path / "a.txt"), "title": "a"}
    [md] = load_file(tmp_path / "b.md").documents
    assert md.metadata["title"] == "The Title"
    [html] = load_file(tmp_path / "c.html").documents
    assert html.metadata["title"] == "Page"
    assert html.page_content == "Hello bold world\nNext block"


def test_pdf_keeps_page_numbers(tmp_path: Path) -> None:
    (tmp_path / "paper.pdf").write_bytes(make_pdf(["Ada Lovelace wrote notes.", "", "Babbage built engines."]))
    loaded = load_file(tmp_path / "paper.pdf")
    assert loaded.problems == []
    assert [(d.metadata["page"], d.page_content) for d in loaded.documents] == [
        (1, "Ada Lovelace wrote notes."),
        (3, "Babbage built engines."),
    ]
    assert len({d.metadata["doc_id"] for d in loaded.documents}) == 1


def test_records_with_and_without_ids(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text(
        '{"id": "q1", "title": "One", "text": "alpha"}\n\n{"text": "beta"}\n', encoding="utf-8"
    )
    docs = load_file(tmp_path / "r.jsonl").documents
    assert [(d.metadata["doc_id"], d.metadata["title"], d.page_content) for d in docs] == [
        ("q1", "One", "alpha"),
        (f"{file_doc_id(tmp_path / 'r.jsonl')}:3", "", "beta"),
    ]
    (tmp_path / "list.json").write_text(json.dumps([{"title": "T", "text": "gamma"}]), encoding="utf-8")
    [doc] = load_file(tmp_path / "list.json").documents
    assert doc.metadata["doc_id"] == f"{file_doc_id(tmp_path / 'list.json')}:1"


def test_bad_inputs_are_named_with_path_and_line(tmp_path: Path) -> None:
    cases = {
        "binary.txt": b"\x00\x01\x02ELF",
        "empty.md": b"   \n\n",
        "latin1.txt": "ok\nna\xefve\n".encode("latin-1"),
        "broken.pdf": b"%PDF-1.4 this is not a pdf",
        "records.jsonl": b'{"text": "fine"}\n{"title": "no text"}\n{bad json\n["not", "an", "object"]\n'
        b'{"id": "tab\\there", "text": "x"}\n',
        "list.json": json.dumps([{"text": "fine"}, {"text": ""}]).encode(),
        "notes.docx": b"PK\x03\x04",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    problems = {name: [str(p) for p in load_file(tmp_path / name).problems] for name in cases}
    assert "binary file" in problems["binary.txt"][0]
    assert "empty" in problems["empty.md"][0]
    assert problems["latin1.txt"][0].startswith(f"{tmp_path / 'latin1.txt'}:2: not valid UTF-8")
    assert "PDF could not be parsed" in problems["broken.pdf"][0] or "no extractable text" in problems["broken.pdf"][0]
    assert [p.split(": ", 1)[0] for p in problems["records.jsonl"]] == [
        f"{tmp_path / 'records.jsonl'}:{n}" for n in (2, 3, 4, 5)
    ]
    assert problems["list.json"] == [f"{tmp_path / 'list.json'} (record 2): 'text' is empty or not a string"]
    assert "unsupported file type" in problems["notes.docx"][0]
    assert [d.page_content for d in load_file(tmp_path / "records.jsonl").documents] == ["fine"]


def test_discover_recurses_and_filters(tmp_path: Path) -> None:
    for name in ("a.md", "sub/b.txt", "sub/deep/c.html", "sub/skip.bin", ".hidden/d.md", "sub/e.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x", encoding="utf-8")
    names = lambda paths: sorted(p.relative_to(tmp_path).as_posix() for p in paths)  # noqa: E731
    assert names(discover([tmp_path])) == ["a.md", "sub/b.txt", "sub/deep/c.html", "sub/e.md"]
    assert names(discover([tmp_path], include=["*.md"])) == ["a.md", "sub/e.md"]
    assert names(discover([tmp_path], exclude=["sub/**"])) == ["a.md"]


def test_json_too_deep_or_with_huge_numbers_is_a_bad_file_not_a_crash(tmp_path: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    huge = "1" * 5_000
    (tmp_path / "deep.json").write_text(deep, encoding="utf-8")
    (tmp_path / "huge.json").write_text(f'[{{"text": "fine"}}, {{"text": "n", "n": {huge}}}]', encoding="utf-8")
    (tmp_path / "mixed.jsonl").write_text(f'{{"text": "fine"}}\n{deep}\n{{"text": "x", "id": {huge}}}\n')
    assert [str(p) for p in load_file(tmp_path / "deep.json").problems] == [
        f"{tmp_path / 'deep.json'}: not usable JSON: nested too deeply"
    ]
    huge_file = load_file(tmp_path / "huge.json")
    assert (huge_file.documents, [str(p) for p in huge_file.problems]) == (
        [],
        [f"{tmp_path / 'huge.json'}: not usable JSON: a number has too many digits"],
    )
    mixed = load_file(tmp_path / "mixed.jsonl")
    assert [d.page_content for d in mixed.documents] == ["fine"]
    assert [str(p) for p in mixed.problems] == [
        f"{tmp_path / 'mixed.jsonl'}:2: not usable JSON: nested too deeply",
        f"{tmp_path / 'mixed.jsonl'}:3: not usable JSON: a number has too many digits",
    ]


def test_a_file_over_the_size_limit_is_reported_not_read(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("word " * 400, encoding="utf-8")
    [problem] = load_file(tmp_path / "big.txt", max_bytes=1_000).problems
    assert str(problem) == f"{tmp_path / 'big.txt'}: too large: over the 0.001 MB limit (TRELLIS_MAX_DOCUMENT_MB)"
    assert load_file(tmp_path / "big.txt", max_bytes=2_000).problems == []


def test_record_ids_in_the_triples_namespace_are_refused(tmp_path: Path) -> None:
    (tmp_path / "r.jsonl").write_text('{"id": "triples:kb.tsv", "text": "x"}\n{"id": "kb.tsv", "text": "y"}\n')
    loaded = load_file(tmp_path / "r.jsonl")
    assert [d.metadata["doc_id"] for d in loaded.documents] == ["kb.tsv"]
    assert [str(p) for p in loaded.problems] == [
        f"{tmp_path / 'r.jsonl'}:1: 'id' may not begin with 'triples:' (kept for triples sources)"
    ]


def test_a_file_is_known_by_its_real_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("x", encoding="utf-8")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a" / "notes.txt")
    monkeypatch.chdir(tmp_path / "a")
    ways = [Path("notes.txt"), tmp_path / "a" / "notes.txt", Path("../a/notes.txt"), tmp_path / "link.txt"]
    assert {load_file(p).documents[0].metadata["source"] for p in ways} == {str(tmp_path / "a" / "notes.txt")}
    assert {file_doc_id(p) for p in ways} == {file_doc_id(tmp_path / "a" / "notes.txt")}


def test_links_out_of_a_directory_are_refused_and_each_file_is_found_once(tmp_path: Path) -> None:
    tree, outside = tmp_path / "tree", tmp_path / "outside"
    (tree / "sub").mkdir(parents=True)
    outside.mkdir()
    (tree / "sub" / "a.txt").write_text("a", encoding="utf-8")
    (outside / "secret.txt").write_text("secret", encoding="utf-8")
    (tree / "in.txt").symlink_to(tree / "sub" / "a.txt")  # sorts before sub/a.txt
    (tree / "out.txt").symlink_to(outside / "secret.txt")
    (tree / "outdir").symlink_to(outside, target_is_directory=True)
    (tree / "subdir").symlink_to(tree / "sub", target_is_directory=True)
    (tree / "broken.md").symlink_to(tree / "missing.md")
    files, refused = find_files([tree])
    assert files == [tree / "sub" / "a.txt"]
    assert [str(p) for p in refused] == [
        f"{tree / 'broken.md'}: broken symbolic link (its target does not exist)",
        f"{tree / 'out.txt'}: symbolic link to a file outside {tree} ({outside / 'secret.txt'}): not followed",
        f"{tree / 'outdir'}: symbolic link to a directory outside {tree} ({outside}): not followed",
    ]
    # A link named on the command line is the user's choice; one file reached twice is still one file.
    files, refused = find_files([tree / "out.txt", tree / "in.txt", tree])
    assert files == [tree / "out.txt", tree / "sub" / "a.txt"]
    assert [p.path.name for p in refused] == ["broken.md", "outdir"]
