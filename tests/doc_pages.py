"""The user docs as one text: README.md, the front door, then every page of docs/. Tests that
check what the docs say (commands run as written, diagrams, settings) read them all, so a
command keeps its test wherever its page is."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO_ROOT


def doc_pages() -> list[Path]:
    """README.md first, then docs/*.md by name."""
    return [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def docs_text() -> str:
    """Every page's text, in `doc_pages` order."""
    return "\n".join(page.read_text() for page in doc_pages())
