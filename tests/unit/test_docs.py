"""The project's documents stand on their own: no outside document cited, no dead link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built, not written out, so that this file does not name them itself.
OUTSIDE = ("DESIGN" + ".md", "CONFIG" + "-FORMAT.md")
SKIP = {".venv", ".git", ".run", "build", "dist", "node_modules"}
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: The documents by reader (STREAMING.md's map): each must exist and be linked from the README.
READERS = ("STREAMING.md", "OPERATING.md", "PYTHON-API.md")
#: A section cited in prose, as the code and the documents do: STREAMING.md, "Exactly once"
#: (also wrapped over lines or comment markers, in parentheses, or without the comma).
CITED = re.compile(r"\b([A-Z][A-Z-]*\.md)(?:,[\s#]*|[\s#]+\(?|\()\"([A-Za-z`][^\"]{0,80})\"")


def project_files(*suffixes: str) -> list[Path]:
    return sorted(
        p
        for p in ROOT.rglob("*")
        if p.suffix in suffixes
        and p.is_file()
        and not any(
            part in SKIP or part.startswith(".") or part.endswith(".egg-info")
            for part in p.relative_to(ROOT).parts[:-1]
        )
    )


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def sections(path: Path) -> list[str]:
    """A document's headings and its paragraphs' bold lead-ins (``**While things change.**``)."""
    text = path.read_text(encoding="utf-8")
    labels = re.findall(r"^(?:#+ |[-*] )?\*\*(.+?)\.?\*\*", text, flags=re.MULTILINE)
    headings = re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)
    return [" ".join(t.replace("`", "").split()).lower() for t in headings + labels]


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return {slug(m) for m in re.findall(r"^#+ (.+)$", text, flags=re.MULTILINE)}


def test_no_file_cites_a_document_outside_the_repository() -> None:
    files = project_files(".md", ".py", ".json", ".toml", ".yml")
    assert len(files) > 100  # the walk found the project
    cited = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()}"
        for p in files
        for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if any(name in line for name in OUTSIDE)
    ]
    assert cited == [], "cite the project's own STREAMING.md or CONFIG.md instead"


def test_links_between_the_documents_resolve() -> None:
    broken = []
    for doc in project_files(".md"):
        for target in LINK.findall(doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # a URL
            file_part, _, anchor = target.partition("#")
            linked = (doc.parent / file_part) if file_part else doc
            if not linked.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_documents_by_reader_exist_and_the_readme_links_each() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    streaming = (ROOT / "STREAMING.md").read_text(encoding="utf-8")
    for name in READERS:
        assert (ROOT / name).is_file(), name
        assert f"]({name})" in readme, f"README.md does not link {name}"
        assert name == "STREAMING.md" or f"]({name})" in streaming, f"no map entry for {name}"


def test_sections_cited_in_prose_exist_in_the_document_named() -> None:
    """A section cited as DOC.md, "Heading" is in that document (a move leaves none stale)."""
    files = project_files(".md", ".py", ".json", ".toml", ".yml")
    missing = []
    cited = 0
    for path in files:
        text = path.read_text(encoding="utf-8")
        for doc, quoted in CITED.findall(text):
            target = ROOT / doc
            if not target.is_file():
                continue  # (the other test names documents outside the repository)
            name = " ".join(re.sub(r"[\s#]+", " ", quoted).replace("`", "").split()).lower()
            cited += 1
            if not any(s.startswith(name) for s in sections(target)):
                missing.append(f"{path.relative_to(ROOT)}: {doc}, {quoted!r}")
    assert cited > 30  # the walk found the citations
    assert missing == []
