"""The generated-block writer: one block's body replaced, the rest of the page kept byte for
byte, markers missing or doubled refused with the page untouched."""

from __future__ import annotations

import os

import pytest

from pipeline import blocks

PAGE = (
    "# Results\n\nintro\n"
    "<!-- scores:start -->\n<!-- written by `old command`; do not edit -->\nold body\n"
    "<!-- scores:end -->\n"
    "between\n"
    "<!-- other:start -->\n<!-- written by `other`, by hand; do not edit -->\nkept\n"
    "<!-- other:end -->\noutro"
)


def test_one_block_is_replaced_and_the_page_kept_around_it(tmp_path):
    page = tmp_path / "docs" / "results.md"
    page.parent.mkdir()
    page.write_text(PAGE)
    blocks.replace_block(page, "scores", "| a |\n|---|", "python -m tool --readme docs/results.md")
    text = page.read_text()
    assert text == PAGE.replace(
        "<!-- written by `old command`; do not edit -->\nold body\n",
        "<!-- written by `python -m tool --readme docs/results.md`; do not edit -->\n"
        "| a |\n|---|\n",
    )
    found = blocks.page_blocks(page)
    assert [(b.name, b.command, b.note, b.body) for b in found] == [
        ("scores", "python -m tool --readme docs/results.md", "", "| a |\n|---|"),
        ("other", "other", ", by hand", "kept"),
    ]
    assert not [name for name in os.listdir(page.parent) if name != "results.md"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("no markers\n", r"page\.md: no <!-- scores:start --> \.\.\. <!-- scores:end --> section"),
        (PAGE + "\n<!-- scores:start -->\n", r"page\.md: block scores is marked 2 x"),
        (
            "<!-- scores:end -->\n<!-- scores:start -->\n",
            r"page\.md: block scores has <!-- scores:end --> before <!-- scores:start -->",
        ),
    ],
)
def test_bad_markers_are_refused_naming_page_and_block(tmp_path, text, error):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(blocks.BlockError, match=error):
        blocks.replace_block(page, "scores", "new", "cmd")
    assert page.read_text() == text


def test_a_marker_quoted_inside_prose_is_no_marker(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("Between `<!-- scores:start -->` and its end.\n")
    with pytest.raises(blocks.BlockError, match="no <!-- scores:start -->"):
        blocks.replace_block(page, "scores", "new", "cmd")


def test_an_unclosed_block_is_named(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("<!-- scores:start -->\nbody\n")
    with pytest.raises(blocks.BlockError, match=r"page\.md: block scores has no <!-- scores:end"):
        blocks.page_blocks(page)


def test_pages_are_named_from_the_repository_root(tmp_path, monkeypatch):
    (tmp_path / "docs").mkdir()
    monkeypatch.chdir(tmp_path)
    assert blocks.page_path(tmp_path / "docs" / "results.md") == "docs/results.md"
    assert blocks.page_path("README.md") == "README.md"
    assert blocks.page_path(tmp_path.parent / "elsewhere" / "README.md") == "README.md"
