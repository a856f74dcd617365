"""docker-compose.yml, its CPU override, the Dockerfile and prometheus.yml agree with the
code. There is no Docker engine here, so the files are parsed and checked: commands and
entry points exist, ports line up, every environment variable is a setting of the
process it is given to, and the checkpoint store is the same volume at the same path."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from cli.main import build_parser
from service.settings import ServiceSettings
from worker.settings import WorkerSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, type[BaseSettings]] = {"api": ServiceSettings, "worker": WorkerSettings}


class ComposeLoader(yaml.SafeLoader):
    """YAML with compose's ``!reset`` and ``!override`` tags."""


for _tag in ("!reset", "!override"):
    ComposeLoader.add_constructor(_tag, lambda loader, node: {"tag": node.tag, "value": (
        loader.construct_mapping(node) if isinstance(node, yaml.MappingNode)
        else loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode)
        else loader.construct_scalar(node))})


def load(name: str) -> dict[str, Any]:
    return yaml.load((ROOT / name).read_text(encoding="utf-8"), Loader=ComposeLoader)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load("docker-compose.yml")


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def env_fields(settings: type[BaseSettings]) -> dict[str, str]:
    """The environment variables a settings class reads, and the field of each (the
    deprecated names it still reads are left out: the files must not use them)."""
    prefix = settings.model_config.get("env_prefix", "")
    names = {}
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.update({str(choice): name for choice in alias.choices})
        elif isinstance(alias, str):
            names[alias] = name
        else:
            names[f"{prefix}{name}".upper()] = name
    return names


def env_names(settings: type[BaseSettings]) -> set[str]:
    return set(env_fields(settings))


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_the_services_are_there(compose):
    assert set(compose["services"]) == {"redis", "api", "worker", "prometheus"}


def test_the_api_command_is_the_app_factory_on_the_published_port(compose, dockerfile):
    api = compose["services"]["api"]
    command = api["command"]
    assert command[0] == "uvicorn" and "--factory" in command
    module, attribute = command[1].split(":")
    assert callable(getattr(importlib.import_module(module), attribute))
    port = option(command, "--port")
    assert option(command, "--host") == "0.0.0.0"
    assert f"{port}:{port}" in api["ports"]
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd and yaml.safe_load(cmd.group(1)) == command  # the image's default is the API


def test_the_worker_command_runs_the_worker(compose):
    command = compose["services"]["worker"]["command"]
    if command[:2] == ["python", "-m"]:
        assert command[2:] == ["worker"]
        assert importlib.util.find_spec("worker.__main__") is not None
    else:  # the console script
        assert command[:2] == ["aae", "worker"]
        build_parser().parse_args(command[1:])


def test_aae_console_script_is_the_cli():
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    entry = re.search(r'^aae = "([\w.]+):(\w+)"$', pyproject, re.M)
    assert entry is not None
    assert callable(getattr(importlib.import_module(entry.group(1)), entry.group(2)))
    for command in ("up", "worker", "serve"):
        build_parser().parse_args([command])


@pytest.mark.parametrize("service", ["api", "worker"])
def test_environment_variables_are_settings_of_that_process(compose, service):
    environment = compose["services"][service]["environment"]
    unknown = set(environment) - env_names(SETTINGS[service])
    assert not unknown, f"{service} is given variables its settings do not read: {unknown}"
    for name, value in environment.items():  # and the values are valid
        if not str(value).startswith("${"):
            SETTINGS[service](**{env_fields(SETTINGS[service])[name]: value})


def test_no_file_uses_a_renamed_setting(compose, dockerfile):
    """AAE_DEVICE and AAE_TORCH_THREADS meant one thing to the API and another to the
    workers; they are AAE_API_* and AAE_WORKER_* now."""
    renamed = set(ServiceSettings.renamed) | set(WorkerSettings.renamed)
    assert renamed == {"AAE_DEVICE", "AAE_TORCH_THREADS"}
    for spec in compose["services"].values():
        assert not renamed & set(spec.get("environment", {}))
    texts = {"Dockerfile": dockerfile, "cli/up.py": (ROOT / "cli" / "up.py").read_text()}
    for name, text in texts.items():
        assert not {v for v in renamed if re.search(rf"\b{v}\b", text)}, name


def test_api_and_worker_share_the_checkpoint_store_volume(compose):
    mounts = {}
    for service in ("api", "worker"):
        spec = compose["services"][service]
        volumes = dict(v.split(":")[:2][::-1] for v in spec["volumes"])  # path -> volume
        model_dir = spec["environment"]["AAE_MODEL_DIR"]
        assert model_dir in volumes, f"{service}'s AAE_MODEL_DIR is not a mounted volume"
        mounts[service] = (volumes[model_dir], model_dir)
        for path in volumes:
            assert path.startswith("/")
    assert mounts["api"] == mounts["worker"]
    volume = mounts["api"][0]
    assert volume in compose["volumes"]  # a named volume, not a host directory
    worker = compose["services"]["worker"]
    data_dir = worker["environment"]["AAE_DATA_DIR"]
    assert any(v.split(":")[1] == data_dir for v in worker["volumes"])
    for spec in compose["services"].values():
        for mount in spec.get("volumes", []):
            source = mount.split(":")[0]
            assert source in compose["volumes"] or (ROOT / source).exists(), mount


def test_the_image_has_the_code_and_the_store_paths(compose, dockerfile):
    copied = {m.group(1) for m in re.finditer(r"^COPY (\w+) ", dockerfile, re.M)}
    assert {"aae", "aae_jobs", "cli", "service", "worker"} <= copied
    assert all((ROOT / package / "__init__.py").is_file() for package in copied)
    env = dict(re.findall(r"(AAE_\w+)=(\S+)", dockerfile))
    assert env["AAE_MODEL_DIR"] == compose["services"]["api"]["environment"]["AAE_MODEL_DIR"]
    for name in env:
        assert name in env_names(ServiceSettings) | env_names(WorkerSettings)
    chown = re.search(r"chown aae:aae (.+)$", dockerfile, re.M)
    assert chown and env["AAE_MODEL_DIR"] in chown.group(1).split()  # writable by the user


def test_the_worker_reserves_gpus_and_the_cpu_override_removes_that(compose):
    devices = compose["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    override = load("docker-compose.cpu.yml")
    assert override == {"services": {"worker": {"deploy": {"tag": "!reset", "value": {}}}}}


def test_prometheus_scrapes_the_api(compose):
    prometheus = compose["services"]["prometheus"]
    config_mount = next(v for v in prometheus["volumes"] if v.startswith("./"))
    source, target = config_mount.split(":")[:2]
    assert f"--config.file={target}" in prometheus["command"]
    config = yaml.safe_load((ROOT / source).read_text(encoding="utf-8"))
    api_port = option(compose["services"]["api"]["command"], "--port")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["aae-api"]["metrics_path"] == "/metrics"
    assert jobs["aae-api"]["static_configs"] == [{"targets": [f"api:{api_port}"]}]


def test_the_compose_examples_name_real_routes(compose):
    from service.app import create_app

    paths = set(create_app().openapi()["paths"])
    text = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    urls = re.findall(r"localhost:8000(/[\w/]+)", text)
    assert urls and all(url in paths for url in urls), urls
