"""The docs point at things that exist: every relative link (README.md and docs/*.md) names a
file of the repository and, with a #fragment, a heading of that page; every option written next
to one of the project's commands is an option of that command's parser."""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import REPO_ROOT
from tests.doc_pages import doc_pages

FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# `python -m MODULE` for the project's own modules.
MODULE_COMMAND = re.compile(r"\bpython3? -m ((?:pipeline|stages|benchmarks)(?:\.\w+)*)")
# Where a command's arguments end on its line.
COMMAND_END = re.compile(r"\s(?:\||&&|;|#|2>&1|>)")


def _console_scripts() -> dict[str, str]:
    """The installed commands (pyproject.toml's [project.scripts]) -> their module."""
    text = (REPO_ROOT / "pyproject.toml").read_text()
    section = text.split("[project.scripts]\n", 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^([\w-]+) = "([\w.]+):\w+"$', section, flags=re.M))


SCRIPTS = _console_scripts()
SCRIPT_COMMAND = re.compile(
    r"(?<![\w/-])(?:\.venv/bin/)?(" + "|".join(map(re.escape, SCRIPTS)) + r")(?![\w-])"
)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: link targets and formatting dropped, lower case,
    punctuation other than - and _ removed, each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a markdown page (a repeated heading's gets -1, -2, ...)."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", FENCE.sub("", page.read_text()), re.M):
        slug = github_slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def _links(text: str) -> Iterator[str]:
    """Every relative link outside code."""
    text = re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))
    for match in LINK.finditer(text):
        target = match.group(1)
        if not re.match(r"[a-z]+:", target):  # not a URL
            yield target


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_every_relative_link_names_a_file_and_a_heading_that_exist(page: Path) -> None:
    broken = []
    for target in _links(page.read_text()):
        path, _, fragment = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        if not found.exists():
            broken.append(f"{target}: no such file")
        elif fragment and (found.suffix != ".md" or fragment not in anchors(found)):
            broken.append(f"{target}: no heading #{fragment} in {found.relative_to(REPO_ROOT)}")
    assert not broken, broken


def _command_lines(text: str) -> Iterator[str]:
    """Shell lines of the fenced bash blocks (continuations joined) and inline code spans."""
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        yield from block.replace("\\\n", " ").splitlines()
    yield from re.findall(r"`([^`\n]+)`", FENCE.sub("", text))


def documented_commands() -> Iterator[tuple[str, str, list[str]]]:
    """(page, module, argument words) for every project command the docs write out."""
    for page in doc_pages():
        name = str(page.relative_to(REPO_ROOT))
        for line in _command_lines(page.read_text()):
            found = [(m.group(1), m.end()) for m in MODULE_COMMAND.finditer(line)]
            found += [(SCRIPTS[m.group(1)], m.end()) for m in SCRIPT_COMMAND.finditer(line)]
            for module, end in found:
                rest = line[end:]
                stop = COMMAND_END.search(rest)
                rest = rest[: stop.start()] if stop else rest
                try:
                    words = shlex.split(rest)
                except ValueError:
                    words = rest.split()
                yield name, module, words


class _Parsed(Exception):
    """Raised in place of parsing, carrying the parser a command's main built."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def command_parser(module: str) -> argparse.ArgumentParser:
    """The parser `python -m module` parses its arguments with, as its main builds it."""
    loaded = importlib.import_module(module)
    if not hasattr(loaded, "main"):
        loaded = importlib.import_module(f"{module}.__main__")

    def capture(parser: argparse.ArgumentParser, *args, **kwargs):
        raise _Parsed(parser)

    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", capture),
        pytest.raises(_Parsed) as parsed,
    ):
        loaded.main([])
    return parsed.value.parser


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def unknown_options(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """The options among `words` that `parser` (or the subcommand the words name) lacks."""
    known = set(parser._option_string_actions)
    subcommands = _subcommands(parser)
    missing = []
    for word in words:
        if word in subcommands:
            known |= set(subcommands[word]._option_string_actions)
        elif re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", word):
            option = word.split("=", 1)[0]
            if option not in known:
                missing.append(option)
    return missing


def test_the_docs_name_their_commands_with_options() -> None:
    """The scan itself finds the commands a team copies, with their options."""
    seen = {(module, word) for _, module, words in documented_commands() for word in words}
    assert ("pipeline.cli.profile", "--profile") in seen
    assert ("pipeline.cli.benchmark", "--readme-marker") in seen
    assert ("pipeline.cli.segment", "--model") in seen
    assert ("pipeline.cli.ablation", "--seeds") in seen
    assert ("benchmarks", "--out") in seen


def test_every_option_next_to_a_command_is_one_its_parser_takes() -> None:
    parsers: dict[str, argparse.ArgumentParser] = {}
    wrong = []
    for page, module, words in documented_commands():
        if module not in parsers:
            parsers[module] = command_parser(module)
        for option in unknown_options(parsers[module], words):
            wrong.append(f"{page}: {module} {option}")
    assert not wrong, wrong


def test_unknown_options_and_subcommands_are_told_apart() -> None:
    """The check itself, on a parser with a subcommand: its options count only after it."""
    parser = command_parser("pipeline.cli.ablation")
    assert unknown_options(parser, ["queue", "--seeds"]) == []
    assert unknown_options(parser, ["--seeds"]) == ["--seeds"]
    assert unknown_options(command_parser("benchmarks"), ["gpu", "--out", "DIR", "--no-such"]) == [
        "--no-such"
    ]


def test_github_slugs_match_the_headings_the_docs_link_to() -> None:
    assert github_slug("`cyclegan_st` on the reference's strong augmentation") == (
        "cyclegan_st-on-the-references-strong-augmentation"
    )
    assert github_slug("What happens when...") == "what-happens-when"
    assert github_slug("`python -m benchmarks`") == "python--m-benchmarks"
