"""``aae sweep``: one noun, four verbs.

- ``run``: train the points here, one after the other, with the progress bar, publishing
  a version of one model per point, then print the table (and promote, if asked);
- ``submit``: send the sweep to the API (``POST /sweeps``), which queues a job per point
  on the workers; ``--wait`` follows it and prints the table at the end;
- ``list`` and ``show ID``: the API's sweeps, and one sweep's table.

The grid is given as ``--grid field=v1,v2,...`` (repeatable: the product), each value read
as JSON when it parses (``2``, ``0.5``, ``true``, ``[10,20]``), else as a string; or as
``--points`` with a JSON list of override objects. The table is ``aae.sweeps.table``,
the same for a local run and the API's sweep.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aae.checkpoints import publish_model
from aae.device import flush_denormals, tune_cpu_allocator
from aae.presets import build_config
from aae.errors import AAEError
from aae.selection import Metric, MetricWorse, promote
from aae.store import CheckpointStore, validate_name
from aae.sweeps import PointResult, expand, label, point_from_metrics, table
from aae.runlog import RunLog, refuse_overwrite
from aae.training import Progress, Trainer
from cli.progress import ProgressBar
from cli.training import dataset_name, open_splits
from cli.settings import get_settings


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# points one command may declare, counted before any is made (the API's own limit is
# AAE_MAX_SWEEP_POINTS): a few long lists would otherwise multiply past any memory
MAX_POINTS = 1000


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["seed=1,2,3", "lr_milestones=[[10],[20]]"]`` -> ``{"seed": [1, 2, 3], ...}``."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        field, sep, values = item.partition("=")
        if not sep or not field or not values:
            raise ValueError(f"--grid {item!r}: write field=value1,value2,...")
        if values.lstrip().startswith("["):
            parsed = _value(values)
            if not isinstance(parsed, list):
                raise ValueError(f"--grid {item!r}: not a JSON list")
            grid[field] = parsed
        else:
            grid[field] = [_value(v) for v in values.split(",")]
    return grid


def _overrides(args: argparse.Namespace) -> list[dict[str, Any]]:
    if bool(args.grid) == bool(args.points):
        raise ValueError("give --grid (repeatable) or --points, one of them")
    if args.points:
        points = json.loads(args.points)
        if not isinstance(points, list) or not all(isinstance(p, dict) for p in points):
            raise ValueError("--points: a JSON list of objects")
        return expand(points=points, limit=MAX_POINTS)
    return expand(grid=parse_grid(args.grid), limit=MAX_POINTS)


# -- run: here, one point after the other --------------------------------------------------

def _slug(point: dict[str, Any]) -> str:
    """``{"seed": 1, "z_dim": 10}`` -> ``seed1-z_dim10`` (a file name)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "", label(point).replace("=", "").replace(" ", "-"))


def _both(bar: ProgressBar, log: RunLog | None) -> Callable[[Progress], None]:
    def on_progress(p: Progress) -> None:
        bar(p)
        if log is not None:
            log.on_progress(p)
    return on_progress


def cmd_run(args: argparse.Namespace, base: dict[str, Any]) -> int:
    tune_cpu_allocator()
    flush_denormals()
    settings = get_settings()
    data_dir = Path(args.data_dir or settings.data_dir)
    store = CheckpointStore(args.model_dir or settings.model_dir)
    overrides = _overrides(args)
    configs = [build_config(args.preset, **{**base, **o}) for o in overrides]  # all first
    modes = {c.mode for c in configs}
    if len(modes) > 1:
        raise ValueError("a sweep publishes one model: its points must share their mode")
    name = validate_name(args.name or f"{dataset_name(data_dir)}-"
                         f"{configs[0].mode.value.replace('_', '-')}")
    log_paths = [args.log_dir / f"{name}-{_slug(point)}.log" for point in overrides] \
        if args.log_dir else []
    if not args.overwrite:
        refuse_overwrite(log_paths)
    results: list[PointResult] = []
    for index, (point, cfg) in enumerate(zip(overrides, configs, strict=True)):
        print(f"point {index + 1}/{len(configs)}: {label(point)}", file=sys.stderr)
        splits = open_splits(args, data_dir, cfg)
        progress, log = ProgressBar(), None
        if args.log_dir:
            log = RunLog(log_paths[index], f"{name} point {index}, {label(point)}: aae "
                         + " ".join(shlex.quote(a) for a in sys.argv[1:]), cfg, echo=False,
                         overwrite=args.overwrite)
        result = Trainer(cfg, splits, device=args.device,
                         on_progress=_both(progress, log)).fit()
        version = publish_model(store, name, result.model, result.metrics, result.extras)
        if log is not None:
            log.finish(result.metrics, f"published as {name} version {version} in "
                       f"{store.root}")
        results.append(point_from_metrics(index, point, result.metrics, version))
    print(f"sweep of {name} in {store.root}: {len(results)} points\n")
    print(table(results, args.rank_by))
    if args.promote:
        best = min((r for r in results if r.metric(args.rank_by) is not None),
                   key=lambda r: r.metric(args.rank_by) or 0.0, default=None)
        if best is None or best.version is None:
            print(f"\nnot promoted: no point has a {args.rank_by}")
            return 0
        try:
            done = promote(store, name, args.promote, best.version, args.rank_by)
        except MetricWorse as exc:
            print(f"\nnot promoted: {exc}")
            return 0
        print(f"\n{args.promote} of {name}: version {done.version}"
              f" (was {done.previous if done.previous is not None else 'unset'})")
    return 0


# -- the API's sweeps -------------------------------------------------------------------

def _request(method: str, path: str, body: Any = None) -> Any:
    settings = get_settings()
    url = settings.api_url.rstrip("/") + path
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json",
                                              "Accept": "application/json"})
    if settings.api_key is not None:
        request.add_header("Authorization", f"Bearer {settings.api_key.get_secret_value()}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            detail = json.loads(exc.read()).get("detail", exc.reason)
        except ValueError:
            detail = exc.reason
        raise AAEError(f"{method} {path}: {exc.code} {detail}") from None
    except urllib.error.URLError as exc:
        raise AAEError(f"cannot reach the API at {settings.api_url} ({exc.reason}); set "
                       "AAE_API_URL") from None


def _results(sweep: dict[str, Any]) -> list[PointResult]:
    return [PointResult(index=p["index"], overrides=p["overrides"], status=p["status"],
                        version=p.get("version"), validation_error=p.get("validation_error"),
                        validation_loss=p.get("validation_loss"),
                        test_error=p.get("test_error"), seconds=p.get("seconds"),
                        epoch=p.get("epoch"), epochs=p.get("epochs"), error=p.get("error"))
            for p in sweep["points"]]


def _show(sweep: dict[str, Any]) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(sweep["counts"].items()))
    print(f"sweep {sweep['id']} of {sweep['model']} on {sweep['dataset']}: "
          f"{sweep['status']} ({counts})\n")
    print(table(_results(sweep), sweep["rank_by"]))
    promotion = sweep.get("promotion")
    if sweep.get("promote"):
        said = "pending" if promotion is None else promotion["state"]
        if promotion and promotion.get("version") is not None:
            said += f" (version {promotion['version']})"
        if promotion and promotion.get("reason"):
            said += f": {promotion['reason']}"
        print(f"\npromotion to {sweep['promote']}: {said}")


def cmd_submit(args: argparse.Namespace, base: dict[str, Any]) -> int:
    body: dict[str, Any] = {"base": {**base, "preset": args.preset}, "rank_by": args.rank_by}
    if args.name:
        body["base"]["name"] = args.name
    if args.dataset:
        body["base"]["dataset"] = args.dataset
    if args.points:
        body["points"] = _overrides(args)
    else:
        body["grid"] = parse_grid(args.grid)
    if args.promote:
        body["promote"] = args.promote
    sweep = _request("POST", "/sweeps", body)
    print(f"queued sweep {sweep['id']}: {len(sweep['points'])} points of {sweep['model']}")
    if not args.wait:
        return 0
    while sweep["status"] != "ended" or not sweep["settled"]:
        time.sleep(2.0)
        sweep = _request("GET", f"/sweeps/{sweep['id']}")
    print()
    _show(sweep)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    sweeps = _request("GET", f"/sweeps?limit={args.limit}")
    for s in sweeps:
        counts = ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items()))
        print(f"{s['id']}  {s['created_at'][:19]}  {s['model']}  {s['status']} ({counts})")
    if not sweeps:
        print("no sweeps")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    sweep = _request("GET", f"/sweeps/{args.id}")
    if args.json:
        print(json.dumps(sweep, indent=2))
    else:
        _show(sweep)
    return 0


def add_parser(commands: argparse._SubParsersAction, add_config_arguments: Any) -> None:
    sweep = commands.add_parser("sweep", help="many trainings from one base: run here, or "
                                "submit to the API, list and show")
    verbs = sweep.add_subparsers(dest="verb", required=True)

    def points_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--grid", action="append", default=[], metavar="FIELD=V1,V2",
                            help="a field's values (repeatable: every combination)")
        parser.add_argument("--points", help="instead of --grid: a JSON list of override "
                            "objects")
        parser.add_argument("--rank-by", default=Metric.VALIDATION_ERROR.value,
                            choices=[m.value for m in Metric], help="validation metric "
                            "to rank by (default validation_error)")
        parser.add_argument("--promote", metavar="ALIAS", help="move this alias to the "
                            "best point unless it is worse than the alias' version")
        parser.add_argument("--name", help="model name (default <dataset>-<mode>)")

    run = verbs.add_parser("run", help="train every point here, one after the other")
    points_arguments(run)
    run.add_argument("--data-dir", type=Path, help="MNIST-format data (default $AAE_DATA_DIR)")
    run.add_argument("--model-dir", type=Path, help="checkpoint store (default $AAE_MODEL_DIR)")
    run.add_argument("--no-download", action="store_true", help="fail if data files are missing")
    run.add_argument("--download", action="store_true", help="fetch MNIST into --data-dir "
                     "if its files are missing")
    run.add_argument("--device", help="cpu, cuda, ... (default: cuda when present)")
    run.add_argument("--log-dir", type=Path, help="also write each point's per-epoch log "
                     "here (<name>-<point>.log, the format of docs/runs/)")
    run.add_argument("--overwrite", action="store_true", help="replace existing logs of "
                     "this sweep in --log-dir (refused otherwise, before any training)")
    add_config_arguments(run)
    run.set_defaults(func=cmd_run, takes_base=True)

    submit = verbs.add_parser("submit", help="queue the sweep on the API's workers "
                              "($AAE_API_URL, $AAE_API_KEY)")
    points_arguments(submit)
    submit.add_argument("--dataset", help="a dataset the workers have (default mnist)")
    submit.add_argument("--wait", action="store_true", help="follow it and print the table "
                        "when every point has ended")
    add_config_arguments(submit)
    submit.set_defaults(func=cmd_submit, takes_base=True)

    listing = verbs.add_parser("list", help="the API's sweeps, newest first")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_list)

    show = verbs.add_parser("show", help="one sweep's table")
    show.add_argument("id")
    show.add_argument("--json", action="store_true", help="the API's JSON")
    show.set_defaults(func=cmd_show)
