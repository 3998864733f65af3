"""Every `behaviorlm …` command shown in the README and docs/*.md parses against the real CLI.

A command is taken from fenced code blocks (continuation lines joined, comments and anything after a
pipe, `&&`, `;` or a redirection dropped, leading `VAR=value` assignments skipped) when its program is
`behaviorlm` or `.venv/bin/behaviorlm`. Its subcommands are resolved and its options and arguments parsed
by click, without running it: a renamed flag, a removed command or a missing argument in the docs fails
here instead of on a newcomer's terminal.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer

from behaviorlm.cli.main import app

# Typer 0.29 carries its own copy of click (typer._click), so the parser's classes are taken from
# typer's public names, not from a separately installed click (whose classes they are not).
UsageError = typer.BadParameter.__mro__[1]
assert UsageError.__name__ == "UsageError"

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PROGRAMS = {"behaviorlm", ".venv/bin/behaviorlm"}
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_STOP = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "&"}


def documented_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after the program) for every documented behaviorlm command."""
    found = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for block in _FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                try:
                    words = shlex.split(line, comments=True)
                except ValueError:
                    continue  # not shell (a Python or JSON line with an odd quote)
                while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                    words = words[1:]
                if not words or words[0] not in PROGRAMS:
                    continue
                argv = []
                for word in words[1:]:
                    if word in _STOP or word.startswith((">", "2>")):
                        break
                    argv.append(word)
                found.append((f"{doc.relative_to(ROOT)}: {line.strip()[:100]}", argv))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands() -> None:
    # The quickstart alone shows a dozen; finding none would mean the extraction broke.
    assert len(COMMANDS) >= 20


@pytest.mark.parametrize(("where", "argv"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where: str, argv: list[str]) -> None:
    check_parses(where, argv)


def check_parses(where: str, argv: list[str]) -> None:
    command = typer.main.get_command(app)
    name, args = "behaviorlm", list(argv)
    while hasattr(command, "commands") and args and not args[0].startswith("-"):
        sub = command.commands.get(args[0])
        if sub is None:
            pytest.fail(f"{where}: no command {args[0]!r} under {name!r}")
        command, name, args = sub, f"{name} {args[0]}", args[1:]
    if hasattr(command, "commands") and not args:
        return  # a group on its own prints its help
    try:
        command.make_context(name, args)
    except UsageError as exc:
        pytest.fail(f"{where}: {exc.format_message()}")
    except Exception as exc:
        if type(exc).__name__ != "Exit":  # --help ends parsing with Exit
            raise


@pytest.mark.parametrize(
    "argv", [["train", "--nope"], ["trian"], ["evaluate"], ["graph", "train", "--task"]], ids=str
)
def test_the_check_catches_a_broken_command(argv: list[str]) -> None:
    with pytest.raises(pytest.fail.Exception):
        check_parses("planted", argv)
