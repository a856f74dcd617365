"""Settings: one base (``aae_jobs.settings``), one class per process. A setting that
means something different to the API and to the workers carries the process in its
name; the old shared names still work, with a logged DeprecationWarning."""

from __future__ import annotations

import logging
import warnings

import pytest

from cli.settings import CLISettings
from service.settings import ServiceSettings
from worker.settings import WorkerSettings

RENAMED = ("AAE_DEVICE", "AAE_TORCH_THREADS", "AAE_API_DEVICE", "AAE_API_TORCH_THREADS",
           "AAE_WORKER_DEVICE", "AAE_WORKER_TORCH_THREADS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in (*RENAMED, "AAE_REDIS_URL", "REDIS_URL", "AAE_MODEL_DIR"):
        monkeypatch.delenv(name, raising=False)


def test_each_process_reads_its_own_device_and_threads(monkeypatch):
    monkeypatch.setenv("AAE_API_DEVICE", "cuda:1")
    monkeypatch.setenv("AAE_API_TORCH_THREADS", "2")
    monkeypatch.setenv("AAE_WORKER_TORCH_THREADS", "8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names warn about nothing
        api, worker = ServiceSettings(), WorkerSettings()
    assert (api.device, api.torch_threads) == ("cuda:1", 2)
    assert (worker.device, worker.torch_threads) == (None, 8)  # None: CUDA when present


def test_defaults_differ_by_process():
    api, worker = ServiceSettings(), WorkerSettings()
    assert (api.device, api.torch_threads) == ("cpu", 1)
    assert (worker.device, worker.torch_threads) == (None, None)


@pytest.mark.parametrize("settings", [ServiceSettings, WorkerSettings])
def test_the_old_names_still_work_with_a_logged_deprecation_warning(settings, monkeypatch,
                                                                    caplog):
    monkeypatch.setenv("AAE_DEVICE", "cpu")
    monkeypatch.setenv("AAE_TORCH_THREADS", "3")
    prefix = "AAE_API_" if settings is ServiceSettings else "AAE_WORKER_"
    with caplog.at_level(logging.WARNING, logger="aae_jobs.settings"), \
            pytest.warns(DeprecationWarning) as caught:
        read = settings()
    assert (read.device, read.torch_threads) == ("cpu", 3)
    messages = sorted(str(w.message) for w in caught)
    assert messages == [f"AAE_DEVICE is deprecated and will be removed: set {prefix}DEVICE "
                        "instead", "AAE_TORCH_THREADS is deprecated and will be removed: "
                        f"set {prefix}TORCH_THREADS instead"]
    assert sorted(r.getMessage() for r in caplog.records) == messages


def test_a_new_name_wins_over_the_old_one_without_a_warning(monkeypatch):
    monkeypatch.setenv("AAE_TORCH_THREADS", "3")
    monkeypatch.setenv("AAE_WORKER_TORCH_THREADS", "5")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert WorkerSettings().torch_threads == 5


def test_shared_settings_are_declared_once_and_read_alike(monkeypatch, tmp_path):
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/1")
    monkeypatch.setenv("AAE_MODEL_DIR", str(tmp_path))
    for settings in (ServiceSettings, WorkerSettings, CLISettings):
        read = settings()
        assert (read.redis_url, read.model_dir) == ("redis://elsewhere:6379/1", tmp_path)
        assert not {"redis_url", "model_dir"} & set(settings.__annotations__)  # the base's
    assert CLISettings().redis_configured


def test_aae_up_starts_its_own_redis_only_when_none_is_configured():
    assert not CLISettings().redis_configured
