"""The repository imports normally: no file reaches into ``sys.path`` (benchmarks and
scripts run as modules from the root, ``python -m benchmarks.quality``), and the
packages the tests import by name are packages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# an edit of the import path: insert, append, extend, assignment or augmented assignment
EDIT = re.compile(r"\bsys\.path\s*(\.\s*(insert|append|extend)\s*\(|(\[[^\]]*\])?\s*\+?=(?!=))")


def python_files() -> list[Path]:
    """Every .py file of the repository but this one (whose examples are edits)."""
    return [path for path in ROOT.rglob("*.py")
            if path != Path(__file__).resolve()
            and not any(part.startswith(".") or part.endswith(".egg-info")
                        for part in path.relative_to(ROOT).parts)]


def test_the_pattern_finds_edits_of_the_path():
    for text in ("sys.path.insert(0, str(ROOT))", "sys.path.append(x)", "sys.path += [x]",
                 "sys.path[:0] = [x]", "sys.path = [x]"):
        assert EDIT.search(text), text
    assert not EDIT.search("if sys.path == before:")


def test_no_file_inserts_into_sys_path():
    files = python_files()
    assert len(files) > 50 and ROOT / "benchmarks" / "quality.py" in files
    offenders = [f"{path.relative_to(ROOT)}:{n}"
                 for path in files
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if EDIT.search(line)]
    assert not offenders, f"edit sys.path (import normally, run with python -m): {offenders}"


def test_benchmarks_and_scripts_are_packages():
    assert (ROOT / "benchmarks" / "__init__.py").is_file()
    assert (ROOT / "scripts" / "__init__.py").is_file()
