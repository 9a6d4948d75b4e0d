"""The README's commands are real: each `lookahead-ray` command names a subcommand and flags that
`lookahead-ray --help` knows, each `make` target exists, and the README stays a front door."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

from lookahead_ray.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def commands(text: str, program: str) -> list[list[str]]:
    """Every `program ...` command in fenced blocks and in inline code spans, as argv lists."""
    found = []
    for block in re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S):
        found += [line.split("#")[0].strip() for line in block.splitlines()]
    found += re.findall(r"`([^`\n]+)`", text)
    return [shlex.split(c) for c in found if c.startswith(program + " ")]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_lookahead_ray_command_of_the_readme_parses():
    parser, table = build_parser(), subparsers(build_parser())
    found = commands(README, "lookahead-ray")
    assert len(found) >= 8
    for argv in found:
        if argv[1:] == ["--help"]:
            continue
        if argv[1] == "submit":  # `submit STAGE ARGS`: the stage's own command line, checked as such
            argv = [argv[0], *[w for w in argv[2:] if not w.startswith("--run")]]
        assert argv[1] in table, f"README: `{' '.join(argv)}`: no subcommand {argv[1]!r}"
        known = {option for action in table[argv[1]]._actions for option in action.option_strings}
        for word in argv[2:]:
            if word.startswith("--"):
                assert word.split("=")[0] in known, f"README: `{' '.join(argv)}`: {argv[1]} has no flag {word}"
        if len(argv) > 2:  # a bare `lookahead-ray tune` is a mention; a command with arguments must parse
            parser.parse_args(argv[1:])  # exits (a failing test) on a missing required flag or bad value


def test_every_make_target_of_the_readme_exists():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    used = {argv[1] for argv in commands(README, "make") if len(argv) > 1}
    assert used and used <= targets, f"README names make targets {sorted(used - targets)} the Makefile lacks"


def test_the_readme_is_a_front_door_and_its_links_resolve():
    assert len(README.splitlines()) <= 250
    for link in re.findall(r"\]\(([^)#:]+)\)", README):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"
