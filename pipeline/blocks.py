"""Generated blocks in Markdown pages: the one writer of the sections a command owns.

A block sits between two marker lines and names the command that writes it:

    <!-- NAME:start -->
    <!-- written by `COMMAND`; do not edit -->
    body
    <!-- NAME:end -->

`replace_block` rewrites one block's body in any page (README.md, docs/*.md) and leaves the rest
of the page as it was; `page_blocks` lists a page's blocks, so a test can rerun each command and
compare.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from pipeline.io import write_text

_START = re.compile(r"<!-- (?P<name>[\w.-]+):start -->")
_WRITTEN_BY = re.compile(r"<!-- written by `(?P<command>[^`]+)`(?P<note>[^;]*); do not edit -->")


class BlockError(ValueError):
    """A page's markers do not delimit exactly one block of the name asked for."""


@dataclasses.dataclass(frozen=True)
class Block:
    name: str
    command: str  # what the written-by line names; "" when the block has none
    note: str  # the written-by line's words after the command (" from the demo data")
    body: str  # the lines between the written-by line and the end marker


def markers(name: str) -> tuple[str, str]:
    """The comment lines around the block called `name`."""
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def written_by(command: str, note: str = "") -> str:
    """The block's second line: which command writes it (`note` follows the command)."""
    return f"<!-- written by `{command}`{note}; do not edit -->"


def render(name: str, command: str, body: str, note: str = "") -> str:
    """The block's text, marker lines included, without a final newline."""
    start, end = markers(name)
    return "\n".join([start, written_by(command, note), *([body] if body else []), end])


def page_path(path: Path) -> str:
    """How a written-by line names the page `path`: relative to the current folder when it
    lies inside it (the repository root, where the commands run), else by its file name."""
    relative = os.path.relpath(os.path.abspath(path))
    return Path(path).name if relative.startswith("..") else Path(relative).as_posix()


def _lines_equal_to(lines: list[str], marker: str) -> list[int]:
    return [i for i, line in enumerate(lines) if line.strip() == marker]


def replace_block(path: Path, name: str, body: str, command: str, note: str = "") -> None:
    """Rewrite block `name` of page `path` with `body`, its written-by line naming `command`;
    the rest of the page is kept byte for byte and the page is replaced in one rename. A page
    without both markers, with either twice, or with the end before the start is refused
    untouched (BlockError, naming the page and the block)."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    start, end = markers(name)
    starts, ends = _lines_equal_to(lines, start), _lines_equal_to(lines, end)
    if not starts or not ends:
        raise BlockError(f"{path}: no {start} ... {end} section to update")
    if len(starts) > 1 or len(ends) > 1:
        raise BlockError(
            f"{path}: block {name} is marked {len(starts)} x {start} and {len(ends)} x {end}; "
            "a page holds each block once"
        )
    first, last = starts[0], ends[0]
    if last < first:
        raise BlockError(f"{path}: block {name} has {end} before {start}")
    newline = "\n" if lines[last].endswith("\n") else ""
    block = render(name, command, body, note) + newline
    write_text(path, "".join([*lines[:first], block, *lines[last + 1 :]]))


def page_blocks(path: Path) -> list[Block]:
    """Every generated block of page `path`, in page order; a start marker without its end,
    or a block inside another, is a BlockError naming the page and the block."""
    path = Path(path)
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        match = _START.fullmatch(lines[i].strip())
        if match is None:
            i += 1
            continue
        name = match["name"]
        end = markers(name)[1]
        stop = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == end), None)
        if stop is None:
            raise BlockError(f"{path}: block {name} has no {end}")
        inner = lines[i + 1 : stop]
        if any(_START.fullmatch(line.strip()) for line in inner):
            raise BlockError(f"{path}: block {name} holds another block's start marker")
        written = _WRITTEN_BY.fullmatch(inner[0].strip()) if inner else None
        if written is not None:
            inner = inner[1:]
        blocks.append(
            Block(
                name,
                written["command"] if written else "",
                written["note"] if written else "",
                "\n".join(inner),
            )
        )
        i = stop + 1
    return blocks
