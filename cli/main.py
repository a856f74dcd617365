"""``aae``: train locally, list the checkpoint store, run the service.

    aae train --mode semi_supervised --labels 100 --epochs 10
    aae models
    aae store verify   # every version's files against its manifest
    aae figure manifold --model digits -o manifold.png
    aae classify photo.jpg drawing.png --model digits   # made MNIST's way, as the API does
    aae sweep run --labels 100 --grid seed=1,2,3   # or: submit, list, show
    aae up          # Redis (embedded unless REDIS_URL is set), a worker and the API
    aae worker      # one training worker on the job queue
    aae serve       # the API only
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from aae.checkpoints import publish_model
from aae.config import Mode
from aae.device import flush_denormals, tune_cpu_allocator
from aae.errors import AAEError
from aae.presets import DEFAULT_PRESET, PRESETS, preset_values
from aae.store import CheckpointStore, validate_name
from aae.training import Trainer
from aae_jobs import logs
from aae_jobs.settings import store_line
from cli import sweep
from cli.progress import ProgressBar, duration
from cli.settings import get_settings
from cli.training import (add_config_arguments, config_from_args, dataset_name,
                          explicit_fields, open_splits)

logger = logging.getLogger("aae")

def cmd_train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    settings = get_settings()
    data_dir = Path(args.data_dir or settings.data_dir)
    store = CheckpointStore(args.model_dir or settings.model_dir)
    dataset = dataset_name(data_dir)
    name = validate_name(args.name or f"{dataset}-{cfg.mode.value.replace('_', '-')}")
    if args.alias:
        validate_name(args.alias, "alias")
    tune_cpu_allocator()
    flush_denormals()
    splits = open_splits(args, data_dir, cfg)
    trainer = Trainer(cfg, splits, device=args.device, on_progress=ProgressBar())
    result = trainer.fit()
    version = publish_model(store, name, result.model, result.metrics, result.extras)
    if args.alias:
        store.set_alias(name, args.alias, version)
    m = result.metrics
    error = "" if m["test_error"] is None else f", test error {m['test_error']:.2%}"
    if m["selected_epoch"] != m["epochs"]:
        error += f" (epoch {m['selected_epoch']}'s weights, the best on validation)"
    print(f"published {name} version {version} to {store.root}: {m['steps']} steps in "
          f"{duration(m['train_seconds'])} on {m['device']}{error}, "
          f"test reconstruction loss {m['test_reconstruction_loss']:.4f}")
    return 0


def _summary(metrics: dict[str, Any]) -> str:
    parts = [metrics.get("mode", "?")]
    if metrics.get("dataset"):
        parts.append(f"on {Path(str(metrics['dataset'])).name}")
    if metrics.get("test_error") is not None:
        parts.append(f"test error {metrics['test_error']:.2%}")
    if (metrics.get("sample_fidelity") or {}).get("mean") is not None:
        parts.append(f"samples as asked {metrics['sample_fidelity']['mean']:.0%}")
    if metrics.get("test_reconstruction_loss") is not None:
        parts.append(f"rec {metrics['test_reconstruction_loss']:.4f}")
    if metrics.get("n_labels"):
        parts.append(f"{metrics['n_labels']} labels")
    parts.append(f"{metrics.get('steps', '?')} steps")
    return ", ".join(parts)


def cmd_models(args: argparse.Namespace) -> int:
    store = CheckpointStore(args.model_dir or get_settings().model_dir)
    names = [args.name] if args.name else store.models()
    if args.json:
        out = {}
        for name in names:
            out[name] = {"aliases": store.aliases(name), "versions": {
                v: store.info(name, v).metrics for v in store.versions(name)}}
        print(json.dumps(out, indent=2, default=str))
        return 0
    if not names:
        print(f"no models in {store.root}")
    for name in names:
        aliases = store.aliases(name)
        print(f"{name}  ({', '.join(f'{a} -> {v}' for a, v in sorted(aliases.items()))})")
        for version in store.versions(name):
            info = store.info(name, version)
            tags = f" [{', '.join(info.aliases)}]" if info.aliases else ""
            print(f"  v{version}{tags}  {info.created_at}  {_summary(info.metrics)}")
    return 0


def cmd_store_verify(args: argparse.Namespace) -> int:
    """Check every version (of ``args.name``, else of every model) against its manifest:
    1 if any is damaged, else 0. Versions without a manifest are listed, unverified."""
    store = CheckpointStore(args.model_dir or get_settings().model_dir)
    names = [args.name] if args.name else store.models()
    counts = {"ok": 0, "no manifest": 0, "damaged": 0}
    for name in names:
        for version in store.versions(name):
            check = store.verify(name, version)
            state = ("damaged" if check.damage else "ok" if check.verified
                     else "no manifest")
            counts[state] += 1
            print(f"{name} v{version}: {state}"
                  + ("" if state != "no manifest" else " (published before manifests: "
                     "unverified)"))
            for damage in check.damage:
                print(f"  {damage.file}: {damage.reason}")
    print(f"{store.root}: {counts['ok']} verified, {counts['damaged']} damaged, "
          f"{counts['no manifest']} without a manifest")
    return 1 if counts["damaged"] else 0


def cmd_figure(args: argparse.Namespace) -> int:
    """The figure routes' pictures, from the store directly (no server needed)."""
    import torch

    from aae import figures
    from aae.checkpoints import load_model
    from aae.images import png
    from service.figures.plots import latent_scatter, training_curves

    store = CheckpointStore(args.model_dir or get_settings().model_dir)
    info, model = load_model(store, args.model, args.version)
    title = f"{info.name} version {info.version}"
    if args.kind == "manifold":
        codes = figures.manifold_codes(model, args.n, args.extent, args.label)
        data = png(figures.render(model, codes), args.scale, columns=args.n)
    elif args.kind == "styles":
        codes = figures.style_codes(model, args.rows, torch.Generator().manual_seed(args.seed))
        data = png(figures.render(model, codes), args.scale, columns=model.cfg.n_classes)
    elif args.kind == "interpolate":  # between two codes drawn from the prior
        ends, _ = model.sample_codes(2, generator=torch.Generator().manual_seed(args.seed))
        codes = figures.interpolation_codes(model, ends[0], ends[1], args.steps,
                                            args.spherical, args.label)
        data = png(figures.render(model, codes), args.scale, columns=args.steps)
    elif args.kind == "latent":
        sample = store.extra(info.name, info.version, "latent")
        if not sample or not sample.get("z"):
            raise AAEError(f"{title} was published without a sample of encoded test digits")
        data = latent_scatter(sample["z"], sample["labels"], f"{title}: test digits")
    else:
        history = info.metrics.get("history")
        if not history:
            raise AAEError(f"{title} has no per-epoch history in its metrics")
        data = training_curves(history, title, info.metrics.get("selected_epoch"))
    args.output.write_bytes(data)
    print(f"wrote the {args.kind} of {title} to {args.output}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Image files classified by a published version, from the store directly, each made
    into a model input as the API makes uploads (``aae.digits``); ``--normalize none``
    takes the pixels as they are. ``--show-input`` prints the 28x28 input as text."""
    import numpy as np
    import torch

    from aae import digits
    from aae.checkpoints import load_model

    store = CheckpointStore(args.model_dir or get_settings().model_dir)
    info, model = load_model(store, args.model, args.version)
    if not model.cfg.has_categorical:
        raise AAEError(f"{info.name} version {info.version} is a {model.cfg.mode.value} "
                       "model and has no categorical code to classify with")
    failed = 0
    for path in args.files:
        try:
            grey = digits.read_image(path.read_bytes())
            x = digits.normalize(grey) if args.normalize == "mnist" else digits.resized(grey)
        except (OSError, AAEError) as exc:
            print(f"{path}: {exc}")
            failed += 1
            continue
        with torch.no_grad():
            probabilities = model.classify(torch.from_numpy(x.reshape(1, -1)))[0]
        label = int(probabilities.argmax())
        print(f"{path}: {label} ({100 * float(probabilities[label]):.1f}%)")
        if args.show_input:
            shades = np.array(list(" .:-=+*#%@"))
            for row in np.minimum((x * 10).astype(int), 9):
                print("  " + "".join(shades[row]))
    print(f"(read by {info.name} version {info.version})")
    return 1 if failed else 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name in PRESETS:
        marker = " (default)" if name == DEFAULT_PRESET else ""
        print(f"{name}{marker}")
        for mode in Mode:
            values = preset_values(name, mode)
            shown = ", ".join(f"{k}={v}" for k, v in values.items()) or "the field defaults"
            print(f"  {mode.value}: {shown}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from worker.runner import run
    from worker.settings import get_settings as worker_settings

    run(worker_settings(), burst=args.burst)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import tempfile

    import uvicorn

    with ExitStack() as stack:
        if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # several processes: their metrics meet in files, summed at each scrape (set
            # before prometheus-client is imported: it picks its mode then)
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = stack.enter_context(
                tempfile.TemporaryDirectory(prefix="aae-metrics-"))
        from service.core.connections import PROTOCOL
        from service.core.metrics import prepare_multiprocess_dir

        prepare_multiprocess_dir()  # no stale values of an earlier run
        print(f"aae serve: {store_line(get_settings().model_dir)}", file=sys.stderr, flush=True)
        if warning := open_door_warning(args.host):
            print(f"aae serve: warning: {warning}", file=sys.stderr, flush=True)
        uvicorn.run("service.app:create_app", factory=True, host=args.host, port=args.port,
                    workers=args.workers, http=PROTOCOL)  # the connection limits
    return 0


def open_door_warning(host: str) -> str | None:
    """What to say when the API listens beyond this machine without an API key."""
    from service.core.auth import SET_A_KEY, is_loopback
    from service.settings import get_settings as service_settings

    if is_loopback(host) or service_settings().api_key is not None:
        return None
    return (f"listening on {host}, beyond this machine, without AAE_API_KEY: only "
            "loopback clients may submit or cancel jobs and sweeps, move aliases or delete "
            f"versions; others get 403 (inference stays open). To let them: {SET_A_KEY}")


def cmd_up(args: argparse.Namespace) -> int:
    from cli.up import up

    if warning := open_door_warning(args.host):
        print(f"aae up: warning: {warning}", file=sys.stderr, flush=True)
    return up(get_settings(), host=args.host, port=args.port, workers=args.workers)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aae", description="Adversarial Autoencoders: train, "
                                     "store and serve.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model locally and publish a version")
    train.add_argument("--name", help="model name in the store (default <dataset>-<mode>, "
                       "the dataset named by its directory, e.g. mnist-semi-supervised)")
    train.add_argument("--alias", help="also point this alias (e.g. production) at the version")
    train.add_argument("--data-dir", type=Path, help="MNIST-format data (default $AAE_DATA_DIR)")
    train.add_argument("--model-dir", type=Path, help="checkpoint store (default $AAE_MODEL_DIR)")
    train.add_argument("--no-download", action="store_true", help="fail if data files are missing")
    train.add_argument("--download", action="store_true", help="fetch MNIST into --data-dir "
                       "if its files are missing (done unasked only for $AAE_DATA_DIR)")
    train.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when present)")
    add_config_arguments(train)
    train.set_defaults(func=cmd_train)

    models = commands.add_parser("models", help="list models, versions, aliases and metrics")
    models.add_argument("name", nargs="?", help="only this model")
    models.add_argument("--model-dir", type=Path, help="checkpoint store (default $AAE_MODEL_DIR)")
    models.add_argument("--json", action="store_true", help="machine-readable output")
    models.set_defaults(func=cmd_models)

    up = commands.add_parser("up", help="run Redis (embedded unless REDIS_URL is set), "
                             "training workers and the API on this machine")
    up.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
    up.add_argument("--workers", type=int, default=1, help="training workers (default 1)")
    up.set_defaults(func=cmd_up)

    figure = commands.add_parser("figure", help="draw a figure of a published version as PNG")
    figure.add_argument("kind", choices=["manifold", "styles", "interpolate", "latent",
                                         "curves"])
    figure.add_argument("--model", required=True, help="model name")
    figure.add_argument("--version", help="number or alias (default: production, else latest)")
    figure.add_argument("-o", "--output", type=Path, required=True, help="the PNG to write")
    figure.add_argument("--model-dir", type=Path, help="checkpoint store (default $AAE_MODEL_DIR)")
    figure.add_argument("--n", type=int, default=20, help="manifold: grid size (default 20)")
    figure.add_argument("--extent", type=float, help="manifold: half-width of the grid "
                        "(default: two prior standard deviations)")
    figure.add_argument("--label", type=int, help="manifold, interpolate: decode with this "
                        "class")
    figure.add_argument("--steps", type=int, default=10, help="interpolate: images (default 10)")
    figure.add_argument("--spherical", action="store_true",
                        help="interpolate along the great circle")
    figure.add_argument("--rows", type=int, default=10, help="styles: style codes (default 10)")
    figure.add_argument("--seed", type=int, default=0,
                        help="styles, interpolate: draws the codes")
    figure.add_argument("--scale", type=int, default=2, help="enlarge each pixel (default 2)")
    figure.set_defaults(func=cmd_figure)

    classify = commands.add_parser("classify", help="classify image files with a published "
                                   "version (made MNIST's way, as the API makes uploads)")
    classify.add_argument("files", nargs="+", type=Path, help="PNG, JPEG, ... of one digit each")
    classify.add_argument("--model", required=True, help="model name")
    classify.add_argument("--version", help="number or alias (default: production, else "
                          "latest)")
    classify.add_argument("--normalize", choices=["mnist", "none"], default="mnist",
                          help="mnist (default): find, crop, fit and centre the digit; none: "
                          "the pixels as they are, resized to 28x28")
    classify.add_argument("--show-input", action="store_true",
                          help="print the 28x28 input the model saw")
    classify.add_argument("--model-dir", type=Path, help="checkpoint store (default "
                          "$AAE_MODEL_DIR)")
    classify.set_defaults(func=cmd_classify)

    sweep.add_parser(commands, add_config_arguments)

    store = commands.add_parser("store", help="check the checkpoint store")
    store_commands = store.add_subparsers(dest="store_command", required=True)
    verify = store_commands.add_parser(
        "verify", help="check every version's files against its manifest (exit 1 on damage)")
    verify.add_argument("name", nargs="?", help="only this model")
    verify.add_argument("--model-dir", type=Path, help="checkpoint store (default "
                        "$AAE_MODEL_DIR)")
    verify.set_defaults(func=cmd_store_verify)

    presets = commands.add_parser("presets", help="the named recipes and their values")
    presets.set_defaults(func=cmd_presets)

    worker = commands.add_parser("worker", help="run a training worker on the job queue "
                                 "(settings: AAE_REDIS_URL, AAE_QUEUE, AAE_MODEL_DIR, ...)")
    worker.add_argument("--burst", action="store_true", help="quit when the queue is empty")
    worker.set_defaults(func=cmd_worker)

    serve = commands.add_parser("serve", help="run the API (settings: AAE_* variables)")
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--workers", type=int, default=1, help="API processes (default 1; "
                       "with more, metrics are shared through $PROMETHEUS_MULTIPROC_DIR, "
                       "a temporary directory unless set)")
    serve.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        logs.configure(get_settings().log_format,
                       logging.DEBUG if args.verbose else logging.INFO)
        if getattr(args, "takes_base", False):
            return args.func(args, explicit_fields(args))
        return args.func(args)
    except (AAEError, ValueError) as exc:
        print(f"aae: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\naae: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
