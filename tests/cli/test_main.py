import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def aae(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=300,
                          env={**os.environ, **(env or {})})


def test_train_publishes_a_version_and_models_lists_it(fixture_data_dir, tmp_path):
    env = {"AAE_DATA_DIR": str(fixture_data_dir), "AAE_MODEL_DIR": str(tmp_path)}
    args = ["train", "--mode", "semi_supervised", "--labels", "100", "--epochs", "1",
            "--validation-size", "300", "--name", "digits", "--no-download"]
    first = aae(*args, env=env)
    assert first.returncode == 0, first.stderr
    assert "published digits version 1" in first.stdout
    assert "epoch 1/1" in first.stderr and "val err" in first.stderr  # the progress line
    assert "subnormals flushed" in first.stderr  # aae.device.flush_denormals
    # a 2-D style code, whatever the preset's: the manifold is drawn for those only
    second = aae(*args, "--z-dim", "2", "--alias", "production", env=env)
    assert "published digits version 2" in second.stdout

    listing = aae("models", env=env)
    assert listing.returncode == 0
    assert "digits" in listing.stdout and "v2 [latest, production]" in listing.stdout
    assert "samples as asked" in listing.stdout  # by the version's own classifier
    data = json.loads(aae("models", "--json", env=env).stdout)
    assert data["digits"]["aliases"] == {"latest": 2, "production": 2}
    metrics = data["digits"]["versions"]["1"]
    assert metrics["n_labels"] == 100 and 0 <= metrics["test_error"] < 0.9
    assert (tmp_path / "digits" / "1" / "weights.safetensors").is_file()

    for kind in ("manifold", "styles", "interpolate", "latent", "curves"):
        out = tmp_path / f"{kind}.png"
        drawn = aae("figure", kind, "--model", "digits", "--version", "2", "-o", str(out),
                    "--n", "4", "--rows", "2", env=env)
        assert drawn.returncode == 0, drawn.stderr
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    assert Image.open(tmp_path / "manifold.png").size == (4 * 56, 4 * 56)  # scale 2
    assert Image.open(tmp_path / "styles.png").size == (10 * 56, 2 * 56)
    assert Image.open(tmp_path / "interpolate.png").size == (10 * 56, 56)


@pytest.mark.parametrize("args, message", [
    (["train", "--mode", "semi_supervised", "--labels", "105"], "multiple of 10"),
    (["train", "--no-download", "--data-dir", "/nonexistent"], "missing"),
    (["train", "--name", "../escape", "--epochs", "1"], "invalid model name"),
])
def test_errors_are_one_clear_line(args, message, tmp_path, fixture_data_dir):
    env = {"AAE_MODEL_DIR": str(tmp_path), "AAE_DATA_DIR": str(fixture_data_dir)}
    result = aae(*args, "--validation-size", "300", env=env)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_models_are_named_by_their_dataset_and_listed_with_it(fixture_data_dir, tmp_path):
    """Another dataset's directory never publishes as the MNIST model (as the job API
    names models <dataset>-<mode>), and `aae models` says which data each version saw."""
    fashion = tmp_path / "fashion-digits"
    fashion.mkdir()
    for f in fixture_data_dir.glob("*-ubyte.gz"):
        (fashion / f.name).symlink_to(f)
    env = {"AAE_MODEL_DIR": str(tmp_path / "models"), "AAE_DATA_DIR": str(fixture_data_dir)}
    result = aae("train", "--data-dir", str(fashion), "--mode", "unsupervised", "--epochs", "1",
                 "--validation-size", "300", "--hidden", "32", env=env)
    assert result.returncode == 0, result.stderr
    assert "published fashion-digits-unsupervised version 1" in result.stdout
    assert "on fashion-digits" in aae("models", env=env).stdout
    metrics = json.loads(aae("models", "--json", env=env).stdout)[
        "fashion-digits-unsupervised"]["versions"]["1"]
    assert metrics["dataset"] == "fashion-digits" and metrics["data_dir"] == str(fashion)


def test_a_mistyped_data_dir_is_an_error_not_a_download(tmp_path, fixture_data_dir):
    typo = tmp_path / "mnsit"
    env = {"AAE_MODEL_DIR": str(tmp_path / "models"), "AAE_DATA_DIR": str(fixture_data_dir)}
    result = aae("train", "--data-dir", str(typo), "--epochs", "1", env=env)
    assert result.returncode == 2, result.stdout
    assert "--data-dir" in result.stderr and "AAE_DATA_DIR" in result.stderr
    assert "download disabled" in result.stderr and not typo.exists()


def test_sweep_run_trains_each_point_here_prints_the_table_logs_and_promotes(
        fixture_data_dir, tmp_path):
    env = {"AAE_DATA_DIR": str(fixture_data_dir), "AAE_MODEL_DIR": str(tmp_path / "models")}
    run = aae("sweep", "run", "--mode", "semi_supervised", "--labels", "100", "--epochs", "1",
              "--hidden", "64", "--validation-size", "300", "--precision", "fp32",
              "--grid", "seed=1,2", "--grid", "encoder_batch_norm=false,true",
              "--name", "swept", "--promote", "production", "--log-dir", str(tmp_path / "logs"),
              "--no-download", env=env)
    assert run.returncode == 0, run.stderr
    assert "point 4/4: seed=2 encoder_batch_norm=true" in run.stderr
    assert "subnormals flushed" in run.stderr
    rows = [line for line in run.stdout.splitlines() if line.startswith("| ") and "seed=" in line]
    groups = [line for line in run.stdout.splitlines()
              if line.startswith("| encoder_batch_norm=")]
    assert len(rows) == 4 and len(groups) == 2  # the points, then the seed groups
    assert all("| 1,2 | 2 |" in g for g in groups)
    errors = [float(r.split("|")[4].strip().rstrip("%")) for r in rows[:4]]
    assert errors == sorted(errors)
    data = json.loads(aae("models", "--json", env=env).stdout)["swept"]
    assert sorted(data["versions"]) == ["1", "2", "3", "4"]
    best = int(rows[0].split("|")[8])
    assert data["aliases"]["production"] == best
    assert f"production of swept: version {best} (was unset)" in run.stdout
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert logs == ["swept-seed1-encoder_batch_normfalse.log",
                    "swept-seed1-encoder_batch_normtrue.log",
                    "swept-seed2-encoder_batch_normfalse.log",
                    "swept-seed2-encoder_batch_normtrue.log"]
    text = (tmp_path / "logs" / logs[0]).read_text()
    assert text.count("\n1 17 ") == 1 and "# finished: 17 steps" in text
    again = aae("sweep", "run", "--mode", "semi_supervised", "--labels", "100", "--epochs", "1",
                "--hidden", "64", "--validation-size", "300", "--grid", "seed=3,1",
                "--grid", "encoder_batch_norm=false", "--name", "swept", "--log-dir", str(tmp_path / "logs"), "--no-download", env=env)
    assert again.returncode == 2, again.stderr
    assert "already exist" in again.stderr and "--overwrite" in again.stderr
    assert "swept-seed1-encoder_batch_normfalse.log" in again.stderr
    assert "swept-seed3" not in again.stderr
    assert "point 1/2" not in again.stderr  # refused before the first point trains
    assert (tmp_path / "logs" / logs[0]).read_text() == text


def test_sweep_refuses_a_grid_it_cannot_read(tmp_path):
    bad = aae("sweep", "run", "--grid", "seed", "--model-dir", str(tmp_path))
    assert bad.returncode == 2 and "--grid 'seed': write field=value1,value2" in bad.stderr
    both = aae("sweep", "submit", "--grid", "seed=1", "--points", "[{}]")
    assert both.returncode == 2 and "one of them" in both.stderr
    values = ",".join(map(str, range(100)))
    huge = aae("sweep", "run", "--model-dir", str(tmp_path),
               *[f"--grid={f}={values}" for f in ("seed", "z_dim", "hidden", "epochs")])
    assert huge.returncode == 2 and "more than 1000 points" in huge.stderr


def test_keep_best_publishes_the_best_validated_epoch_and_says_so(fixture_data_dir, tmp_path):
    """On this seed the fixture's validation error is lowest at epoch 3 of 4
    (tests/aae/test_recipes.py has the trainer's side)."""
    env = {"AAE_DATA_DIR": str(fixture_data_dir), "AAE_MODEL_DIR": str(tmp_path)}
    result = aae("train", "--preset", "seed", "--mode", "semi_supervised", "--labels", "100",
                 "--epochs", "4", "--hidden", "64", "--validation-size", "300", "--precision",
                 "fp32", "--seed", "10", "--keep-best", "--name", "best", "--no-download",
                 env=env)
    assert result.returncode == 0, result.stderr
    assert "(epoch 3's weights, the best on validation)" in result.stdout
    metrics = json.loads(aae("models", "--json", env=env).stdout)["best"]["versions"]["1"]
    errors = [h["validation_error"] for h in metrics["history"]]
    assert (metrics["selected_epoch"], metrics["epochs"]) == (3, 4)
    assert metrics["validation_error"] == min(errors) < errors[-1]


def test_every_config_flag_parses_its_fields_type():
    """The flags are derived from the field types: an optional float is a float flag."""
    import argparse

    from aae.config import field_types
    from cli.training import add_config_arguments, config_from_args

    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    kinds = field_types()
    for action in parser._actions:
        kind = kinds.get(action.dest)
        if kind is None or kind.base is bool or action.choices:
            continue
        assert action.type is kind.base, action.dest
    args = parser.parse_args(["--mode", "semi_supervised", "--labels", "100",
                              "--sample-class-weight", "0.5", "--lr-milestones", "3", "5",
                              "--no-vat-dropout"])
    cfg = config_from_args(args)
    assert (cfg.sample_class_weight, cfg.lr_milestones, cfg.vat_dropout) == (0.5, (3, 5), False)


def test_the_store_is_one_per_user_wherever_the_command_runs(tmp_path, fixture_data_dir):
    """Without AAE_MODEL_DIR the store is ~/.local/share/aae/models (or under
    XDG_DATA_HOME), not a folder of the current directory."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k not in ("AAE_MODEL_DIR", "XDG_DATA_HOME")}
    env["HOME"] = str(home)
    store = home / ".local" / "share" / "aae" / "models"

    def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
        cwd.mkdir(exist_ok=True)
        return subprocess.run([sys.executable, "-m", "cli.main", *args], cwd=cwd, env=env,
                              text=True, capture_output=True, timeout=300)

    empty = run(tmp_path / "a", "models")
    assert empty.returncode == 0 and f"no models in {store}" in empty.stdout
    trained = run(tmp_path / "b", "train", "--mode", "unsupervised", "--hidden", "16",
                  "--max-steps", "2", "--validation-size", "300", "--name", "findable",
                  "--data-dir", str(fixture_data_dir))
    assert trained.returncode == 0, trained.stderr
    assert f"to {store}" in trained.stdout
    listed = run(tmp_path / "a", "models")
    assert "findable" in listed.stdout
    assert not (tmp_path / "a" / "models").exists() and not (tmp_path / "b" / "models").exists()
    env["XDG_DATA_HOME"] = str(tmp_path / "data")
    assert f"no models in {tmp_path / 'data' / 'aae' / 'models'}" in run(tmp_path / "a",
                                                                      "models").stdout


def test_store_verify_checks_every_version_and_fails_on_damage(tmp_path):
    import torch

    from aae.store import CheckpointStore

    store = CheckpointStore(tmp_path / "models")
    for seed in range(3):
        store.publish("digits", {"w": torch.randn(64, 64, generator=torch.Generator()
                                                  .manual_seed(seed))}, {}, {})
    clean = aae("store", "verify", "--model-dir", str(store.root))
    assert clean.returncode == 0, clean.stderr
    assert "3 verified, 0 damaged, 0 without a manifest" in clean.stdout
    (store.root / "digits" / "1" / "manifest.json").unlink()  # as published before manifests
    weights = store.root / "digits" / "3" / "weights.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    damaged = aae("store", "verify", "--model-dir", str(store.root))
    assert damaged.returncode == 1, damaged.stderr
    lines = damaged.stdout.splitlines()
    assert "digits v1: no manifest (published before manifests: unverified)" in lines
    assert "digits v2: ok" in lines
    assert "digits v3: damaged" in lines
    assert "  weights.safetensors: its sha256 differs from its manifest's" in lines
    assert "1 verified, 1 damaged, 1 without a manifest" in lines[-1]
    assert not (store.root / "digits" / "1" / "manifest.json").exists()  # none written


@pytest.mark.parametrize(("host", "key", "warns"), [("0.0.0.0", None, True),
                                                     ("0.0.0.0", "k3y", False),
                                                     ("127.0.0.1", None, False)])
def test_serve_beyond_loopback_without_a_key_says_so_at_start(tmp_path, host, key, warns):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "AAE_API_KEY"}
    env.update(AAE_MODEL_DIR=str(tmp_path / "models"), **({"AAE_API_KEY": key} if key else {}))
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--host", host,
                               "--port", str(port)], cwd=ROOT, env=env, text=True,
                              stderr=subprocess.PIPE)
    try:
        lines = []
        for line in server.stderr:  # up to uvicorn's own line: the warning comes before it
            lines.append(line)
            if "Uvicorn running" in line or "startup complete" in line:
                break
        said = "".join(lines)
        assert "checkpoint store:" in said, said
        warning = [line for line in lines if "warning" in line.lower()]
        if warns:
            assert warning == [f"aae serve: warning: listening on {host}, beyond this "
                               "machine, without AAE_API_KEY: only loopback clients may "
                               "submit or cancel jobs and sweeps, move aliases or delete "
                               "versions; others get 403 (inference stays open). To let "
                               "them: set AAE_API_KEY on the server and send "
                               "Authorization: Bearer <key> "
                               "(docs/operations.md#who-may-change-things)\n"], said
        else:
            assert warning == [], said
    finally:
        server.terminate()
        server.wait(30)


def test_classify_reads_image_files_as_the_api_does(fixture_data_dir, tmp_path):
    """A model trained here classifies real test digits written as a dark-on-light JPEG
    in a larger frame (made MNIST's way) far better than with --normalize none; a blank
    file is an error line and exit 1."""
    import numpy as np
    from PIL import Image

    from aae.data import load_digits

    env = {"AAE_DATA_DIR": str(fixture_data_dir), "AAE_MODEL_DIR": str(tmp_path / "models")}
    trained = aae("train", "--mode", "semi_supervised", "--labels", "1000", "--epochs", "3",
                  "--hidden", "256",
                  "--validation-size", "300", "--name", "reader", "--no-download", env=env)
    assert trained.returncode == 0, trained.stderr
    test = load_digits(fixture_data_dir, download=False)[1]
    files = []
    for i in range(30):
        page = np.full((90, 120), 235, np.uint8)  # paper
        ink = (test.images[i].reshape(28, 28).numpy() * 200).astype(np.uint8)
        page[40:68, 70:98] -= ink  # dark ink, off-centre
        files.append(tmp_path / f"{i}.jpg")
        Image.fromarray(page).save(files[-1], quality=85)
    labels = test.labels[:30].tolist()

    def right(*flags: str) -> int:
        out = aae("classify", *map(str, files), "--model", "reader", *flags, env=env)
        assert out.returncode == 0, out.stderr
        read = [int(line.split(": ")[1].split()[0]) for line in out.stdout.splitlines()[:-1]]
        assert out.stdout.splitlines()[-1] == "(read by reader version 1)"
        return sum(r == t for r, t in zip(read, labels, strict=True))

    normalised, raw = right(), right("--normalize", "none")
    # measured 17 and 5 of 30 (a small model of 3 epochs; chance reads 3)
    assert normalised >= 14 and normalised >= raw + 8, (normalised, raw)
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 200).save(blank)
    out = aae("classify", str(blank), str(files[0]), "--model", "reader", "--show-input",
              env=env)
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0] == f"{blank}: no digit found: the image is blank (no ink against the " \
                       "background)"
    assert lines[1].startswith(f"{files[0]}: ") and len(lines) == 1 + 1 + 28 + 1
