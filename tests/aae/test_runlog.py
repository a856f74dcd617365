"""Run logs (docs/runs/): never replaced by accident."""

import pytest

from aae.config import AAEConfig
from aae.errors import AAEError
from aae.runlog import RunLog, refuse_overwrite


def test_a_run_log_refuses_to_replace_an_existing_one_unless_asked(tmp_path):
    path = tmp_path / "runs" / "x-seed1.log"
    RunLog(path, "first", AAEConfig(), echo=False).file.close()
    first = path.read_text()
    assert first.startswith("# first\n# config {")
    with pytest.raises(AAEError, match="already exist.*x-seed1.log.*--overwrite"):
        RunLog(path, "second", AAEConfig(), echo=False)
    assert path.read_text() == first
    RunLog(path, "second", AAEConfig(), echo=False, overwrite=True).file.close()
    assert path.read_text().startswith("# second\n")


def test_refuse_overwrite_names_every_taken_log_and_passes_new_ones(tmp_path):
    taken = [tmp_path / "a.log", tmp_path / "b.log"]
    for p in taken:
        p.write_text("")
    refuse_overwrite([tmp_path / "c.log"])
    with pytest.raises(AAEError) as info:
        refuse_overwrite([*taken, tmp_path / "c.log"])
    assert "a.log" in str(info.value) and "b.log" in str(info.value)
    assert "c.log" not in str(info.value)
