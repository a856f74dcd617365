"""The committed openapi.yaml is the schema the app generates (clients and the fuzz test
read the file, so it must not drift from the code)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from service.app import create_app

ROOT = Path(__file__).resolve().parents[2]
OPENAPI_YAML = ROOT / "openapi.yaml"
FIX = "openapi.yaml is out of date: run `python -m scripts.export_openapi` and commit it"


def differences(committed: object, generated: object, path: str = "") -> list[str]:
    """Where two parsed documents differ, as JSON-pointer-like paths (the first few)."""
    if isinstance(committed, dict) and isinstance(generated, dict):
        out = []
        for key in list(committed) + [k for k in generated if k not in committed]:
            here = f"{path}/{key}"
            if key not in generated:
                out.append(f"{here}: only in openapi.yaml")
            elif key not in committed:
                out.append(f"{here}: only in the app")
            else:
                out += differences(committed[key], generated[key], here)
        return out
    if committed != generated:
        return [f"{path or '/'}: differs"]
    return []


def test_committed_openapi_matches_the_app():
    committed = yaml.safe_load(OPENAPI_YAML.read_text(encoding="utf-8"))
    generated = create_app().openapi()
    diff = differences(committed, generated)
    assert not diff, FIX + "\n" + "\n".join(diff[:20])


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scripts.export_openapi", *args], cwd=ROOT,
                          capture_output=True, text=True)


def test_export_script_writes_the_apps_schema_and_checks_it(tmp_path):
    target = tmp_path / "openapi.yaml"
    written = run_script("--output", str(target))
    assert written.returncode == 0, written.stderr
    assert yaml.safe_load(target.read_text(encoding="utf-8")) == create_app().openapi()
    target.write_text(target.read_text().replace("AAE serving", "something else"))
    check = run_script("--output", str(target), "--check")
    assert check.returncode == 1 and "run python -m scripts.export_openapi" in check.stderr


def test_committed_openapi_is_a_valid_document_whose_refs_all_resolve():
    """openapi-spec-validator: the document, every $ref (ImagesPublic was missing)."""
    from openapi_spec_validator import validate

    validate(yaml.safe_load(OPENAPI_YAML.read_text(encoding="utf-8")))


def test_name_patterns_accept_exactly_what_the_store_accepts():
    """Every string of up to 5 characters over a small alphabet: the OpenAPI patterns and
    aae.store.validate_name agree."""
    import itertools
    import re

    from aae.errors import InvalidName
    from aae.store import validate_name
    from service.core.schemas import ALIAS_PATTERN, NAME_PATTERN

    def valid(text: str, what: str) -> bool:
        try:
            validate_name(text, what)
            return True
        except InvalidName:
            return False

    for n in range(1, 6):
        for chars in itertools.product("a1._-", repeat=n):
            text = "".join(chars)
            assert bool(re.search(NAME_PATTERN, text)) == valid(text, "model name"), text
            assert bool(re.search(ALIAS_PATTERN, text)) == valid(text, "alias"), text


def test_every_inference_operation_documents_the_503_shed():
    document = yaml.safe_load(OPENAPI_YAML.read_text(encoding="utf-8"))
    for path in ("/encode", "/classify", "/reconstruct", "/decode"):
        assert "503" in {str(s) for s in document["paths"][path]["post"]["responses"]}
    assert "503" in {str(s) for s in document["paths"]["/sample"]["get"]["responses"]}
