"""A test that needs a system package skips with a reason naming it where the package is
missing, and CI, which installs every such package, forbids skips."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
                           *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})


def test_without_chromium_the_browser_tests_skip_naming_the_packages(monkeypatch):
    from tests.service import live

    monkeypatch.setattr(live.shutil, "which", lambda name: None)  # a machine without them
    with pytest.raises(pytest.skip.Exception,
                       match="needs Debian's chromium and chromium-driver packages"):
        live.chromium()


def test_where_skips_are_forbidden_a_skip_fails_with_its_reason(tmp_path):
    test = tmp_path / "test_needs_something.py"
    test.write_text("import pytest\n\ndef test_it():\n    pytest.skip('needs a thing')\n")
    forbidden = pytest_run("-p", "tests.conftest", str(test), AAE_TESTS_FORBID_SKIPS="1")
    assert forbidden.returncode == 1
    assert "skips are forbidden (AAE_TESTS_FORBID_SKIPS=1): Skipped: needs a thing" in \
        forbidden.stdout
    allowed = pytest_run("-p", "tests.conftest", str(test), AAE_TESTS_FORBID_SKIPS="0")
    assert allowed.returncode == 0 and "1 skipped" in allowed.stdout
