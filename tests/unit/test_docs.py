"""The project's documents stand on their own: no outside document cited, no dead link."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# Built, not written out, so that this file does not name them itself.
OUTSIDE = ("DESIGN" + ".md", "CONFIG" + "-FORMAT.md")
SKIP = {".venv", ".git", ".run", "build", "dist", "node_modules"}
LINK = re.compile(r"\]\(([^)\s]+)\)")


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
