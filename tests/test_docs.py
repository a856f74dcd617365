"""The README and the pages under docs/ against the code they describe.

- Every relative link resolves: to a file or folder of the repository, and for
  ``page.md#anchor`` to a heading of that page (GitHub's slugs).
- Every ``aae ...`` command in a code block or a code span uses only flags that its
  subcommand's ``--help`` lists (``aae --help`` names the subcommands).
- Every ``python -m benchmarks.X`` / ``python -m scripts.X`` names a module that exists
  and uses only flags that its ``--help`` lists; no command runs one by its path.
- The README stays a front door: at most 350 lines.

Each check is one test per page and link or command, so a failure names both.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 350
HELP_TIMEOUT_S = 120  # one --help; a benchmark imports torch before parsing its arguments

FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})")
BACKTICKS = re.compile(r"`+")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^()\s<>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r" {0,3}#{1,6}[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
ENV_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=\S*$")
COMMAND_SEPARATOR = re.compile(r"&&|\|\||;| \| ")
FLAG = re.compile(r"--[A-Za-z0-9][A-Za-z0-9_-]*")
MODULE_COMMAND = re.compile(r"python3? -m ((?:benchmarks|scripts)\.[\w.]+)(.*)")
BY_PATH = re.compile(r"python3?\s+((?:benchmarks|scripts)/\w+\.py)")


def read(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def name(page: Path) -> str:
    return page.relative_to(ROOT).as_posix()


def split_fences(text: str) -> tuple[str, list[str]]:
    """The page's prose (fenced blocks blanked, line numbers kept) and its fenced blocks."""
    prose: list[str] = []
    blocks: list[str] = []
    block: list[str] = []
    fence = None
    for line in text.splitlines():
        if fence is None:
            opened = FENCE_OPEN.match(line)
            if opened:
                fence, block = opened.group(1), []
                prose.append("")
            else:
                prose.append(line)
            continue
        if re.fullmatch(rf" {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*", line):
            blocks.append("\n".join(block))
            fence = None
        else:
            block.append(line)
        prose.append("")
    return "\n".join(prose), blocks


def code_spans(prose: str) -> tuple[str, list[str]]:
    """The prose without its code spans, and the spans (CommonMark: a run of n backticks
    closed by the next run of exactly n in the same paragraph; line ends become spaces)."""
    rest: list[str] = []
    spans: list[str] = []
    pos = 0
    while (opening := BACKTICKS.search(prose, pos)) is not None:
        closing = re.compile(rf"(?<!`){opening.group()}(?!`)").search(prose, opening.end())
        if closing is None or "\n\n" in prose[opening.end():closing.start()]:
            rest.append(prose[pos:opening.end()])  # literal backticks
            pos = opening.end()
            continue
        rest.append(prose[pos:opening.start()] + " ")
        spans.append(" ".join(prose[opening.end():closing.start()].split()))
        pos = closing.end()
    rest.append(prose[pos:])
    return "".join(rest), spans


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: its text lower-cased, every character but
    letters, digits, ``_``, ``-`` and spaces dropped, spaces made hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


@functools.cache
def anchors(page: Path) -> frozenset[str]:
    """Every heading's anchor; a repeated one gets -1, -2, ... as on GitHub."""
    prose, _ = split_fences(read(page))
    seen: dict[str, int] = {}
    found = set()
    for line in prose.splitlines():
        heading = HEADING.fullmatch(line)
        if heading is None:
            continue
        slug = github_slug(heading.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return frozenset(found)


def links(page: Path) -> list[str]:
    """The targets of the page's links and images that are not URLs."""
    prose, _ = split_fences(read(page))
    text, _ = code_spans(prose)
    targets = INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text)
    return list(dict.fromkeys(t for t in targets if not SCHEME.match(t)))


def commands(page: Path) -> list[str]:
    """Every command of the page, from its fenced blocks (a line, with its ``\\``
    continuations) and its code spans: split at ``&&``, ``||``, ``;`` and pipes, without
    shell comments and leading ``VAR=value`` words."""
    prose, blocks = split_fences(read(page))
    _, spans = code_spans(prose)
    pieces = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    found = []
    for piece in pieces + spans:
        piece = re.sub(r"(^|\s)#.*", "", piece)
        for part in COMMAND_SEPARATOR.split(piece):
            words = part.split()
            while words and ENV_ASSIGNMENT.match(words[0]):
                words.pop(0)
            if words:
                found.append(" ".join(words))
    return list(dict.fromkeys(found))


def params(kind: str) -> list:
    out = []
    for page in PAGES:
        if kind == "link":
            items = links(page)
        elif kind == "aae":
            items = [c for c in commands(page) if c.split()[0] == "aae" and len(c.split()) > 1]
        else:
            items = [c for c in commands(page) if MODULE_COMMAND.match(c)]
        out += [pytest.param(page, item, id=f"{name(page)}: {item}") for item in items]
    return out


def shown(argv: list[str]) -> str:
    """A command as the docs write it: ``python -m ...``, ``aae ...``."""
    return " ".join([Path(argv[0]).name.replace(Path(sys.executable).name, "python"), *argv[1:]])


def run_help(argv: list[str]) -> str:
    """The ``--help`` output of ``argv``; fails the test, naming why, if it has none."""
    try:
        done = subprocess.run([*argv, "--help"], cwd=ROOT, capture_output=True, text=True,
                              timeout=HELP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{shown(argv)} --help` took over {HELP_TIMEOUT_S} s")
    if done.returncode != 0 or "usage:" not in done.stdout:
        pytest.fail(f"`{shown(argv)} --help` gave no usage (exit {done.returncode}):\n"
                    f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
    return done.stdout


@functools.cache
def aae() -> str:
    beside = Path(sys.executable).with_name("aae")  # the one installed with this Python
    found = str(beside) if beside.exists() else shutil.which("aae")
    if found is None:
        pytest.fail("the `aae` entry point is not installed: pip install -e .")
    return found


@functools.cache
def aae_help(path: tuple[str, ...]) -> str:
    return run_help([aae(), *path])


def aae_flags(path: tuple[str, ...]) -> frozenset[str]:
    return frozenset(FLAG.findall(aae_help(path)))


def aae_subcommands(path: tuple[str, ...]) -> frozenset[str]:
    """Subcommands from the usage line: argparse writes them ``{a,b,c} ...``."""
    usage = aae_help(path).split("\n\n")[0]
    listed = re.search(r"\{([\w,-]+)\}\s+\.\.\.", usage)  # the line may wrap before ...
    return frozenset(listed.group(1).split(",")) if listed else frozenset()


@functools.cache
def module_help(module: str) -> str:
    return run_help([sys.executable, "-m", module])


def test_readme_is_a_front_door():
    lines = len(read(ROOT / "README.md").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines (at most {README_MAX_LINES}): move the detail to a "
        f"page under docs/ and link it")


@pytest.mark.parametrize("page, target", params("link"))
def test_link_resolves(page: Path, target: str):
    path, _, anchor = target.partition("#")
    resolved = (page.parent / unquote(path)).resolve() if path else page
    assert resolved.is_relative_to(ROOT), f"{name(page)}: {target} leaves the repository"
    assert resolved.exists(), f"{name(page)}: {target}: no such file or folder"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved), (
            f"{name(page)}: {target}: {name(resolved)} has no heading #{anchor} (it has: "
            f"{', '.join(sorted(anchors(resolved)))})")


@pytest.mark.parametrize("page, command", params("aae"))
def test_aae_command_uses_real_flags(page: Path, command: str):
    words = command.split()[1:]
    path: tuple[str, ...] = ()
    unknown = []
    for word in words:
        flag = FLAG.match(word)
        if flag:
            if flag.group() not in aae_flags(path):
                unknown.append(f"{flag.group()} (not in `{' '.join(('aae', *path))} --help`)")
        elif not word.startswith("-") and word in aae_subcommands(path):
            path += (word,)
        elif not path and not word.startswith("-"):
            unknown.append(f"{word}: no such subcommand (`aae --help` lists "
                           f"{', '.join(sorted(aae_subcommands(())))})")
    assert not unknown, f"{name(page)}: `{command}`: " + "; ".join(unknown)


@pytest.mark.parametrize("page, command", params("module"))
def test_module_command_uses_real_flags(page: Path, command: str):
    module, rest = MODULE_COMMAND.match(command).groups()
    file = ROOT / Path(*module.split("."))
    assert file.with_suffix(".py").is_file() or (file / "__main__.py").is_file(), (
        f"{name(page)}: `{command}`: no module {module}")
    known = set(FLAG.findall(module_help(module)))
    unknown = [flag for flag in FLAG.findall(rest) if flag not in known]
    assert not unknown, (f"{name(page)}: `{command}`: {', '.join(unknown)} not in "
                         f"`python -m {module} --help`")


@pytest.mark.parametrize("page", PAGES, ids=name)
def test_no_command_runs_a_script_by_path(page: Path):
    prose, blocks = split_fences(read(page))
    _, spans = code_spans(prose)
    by_path = sorted({m.group(1) for text in blocks + spans for m in BY_PATH.finditer(text)})
    assert not by_path, (f"{name(page)} runs {', '.join(by_path)} by path: write "
                         f"`python -m benchmarks.<name>` (or scripts.<name>)")
