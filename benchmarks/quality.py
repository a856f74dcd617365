"""Train one recipe on full MNIST and log its validation curve; test error once, at the end.

Each run writes ``docs/runs/<name>-seed<seed>.log``: the config, then one line per epoch
(training time so far, validation included; validation error and reconstruction loss;
the phases' losses), then the test error of the finished run. The test set is evaluated
once per run and never used to choose anything. Clustering models (``--mode
clustering``) are scored through the cluster -> label map their config names
(``cluster_mapping``), fitted on the validation split.

    python -m benchmarks.quality --data-dir ../shared/data/mnist --preset default \\
        --labels 100 --seeds 1 2 3 --name default
    python -m benchmarks.quality --preset seed --labels 100 --set epochs=20 --name seed-20ep
    python -m benchmarks.quality --mode clustering --set n_classes=30 --name clusters-30
    python -m benchmarks.quality --table docs/runs/x8-*.log
    python -m benchmarks.quality --curves docs/runs/x8-cluster30-best-seed*.log \
        --reference "paper=4.1" --output curves.png
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import statistics
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from aae.checkpoints import publish_model
from aae.data import default_data_dir, splits_for
from aae.device import flush_denormals, tune_cpu_allocator
from aae.errors import AAEError
from aae.presets import build_config, preset_names
from aae.runlog import RunLog, refuse_overwrite
from aae.store import CheckpointStore
from aae.training import Trainer

RUNS = Path(__file__).resolve().parents[1] / "docs" / "runs"


def parse_sets(pairs: list[str]) -> dict:
    """``field=value`` pairs; a value is read as JSON (``false``, ``[20]``), else as a
    Python literal (``False``), else kept as text."""
    out = {}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        try:
            out[key] = json.loads(raw)
        except ValueError:
            try:
                out[key] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                out[key] = raw
    return out


def log_path_of(name: str, seed: int) -> Path:
    return RUNS / f"{name}-seed{seed}.log"


def run(data_dir: Path, preset: str, mode: str, labels: int | None, seed: int, sets: dict,
        name: str, store: Path | None = None, overwrite: bool = False) -> dict:
    cfg = build_config(preset, **{"mode": mode, "n_labels": labels, "seed": seed, **sets})
    splits = splits_for(cfg, data_dir)
    log_path = log_path_of(name, seed)
    log = RunLog(log_path, f"{name} seed {seed}: python -m benchmarks.quality --data-dir "
                 f"{data_dir} --preset {preset} --mode {mode} --labels {labels} "
                 f"--seeds {seed} --name {name} "
                 + " ".join(f"--set {k}={v!r}" for k, v in sets.items()), cfg,
                 overwrite=overwrite)
    trainer = Trainer(cfg, splits, on_progress=log.on_progress, progress_every=10**9)
    result = trainer.fit()
    test_error = result.metrics["test_error"]  # clusters mapped on the validation split
    note = None
    if store is not None:
        version = publish_model(CheckpointStore(store), name, result.model, result.metrics,
                                result.extras)
        note = f"published as {name} version {version} in {store}"
    log.finish(result.metrics, note)
    m = result.metrics
    return {"seed": seed, "test_error": test_error, "validation_error": m["validation_error"],
            "train_seconds": m["train_seconds"], "log": str(log_path)}


def read_log(path: Path) -> tuple[list[list[str]], list[str]]:
    """A run log's epoch lines (split into columns) and its ``# finished`` line, if any;
    no epochs for files that are not run logs."""
    lines = path.read_text().splitlines()
    if RunLog.COLUMNS not in lines:
        return [], []
    epochs = [line.split() for line in lines if line and not line.startswith("#")]
    return epochs, [line for line in lines if line.startswith("# finished")]


def run_curves(runs: dict[str, list[tuple[int, float]]], title: str,
               references: dict[str, float] | None = None) -> bytes:
    """Validation error per epoch of several runs (``{name: [(epoch, error), ...]}``), one
    line each, with dotted horizontal lines at reference errors (``{label: error}``, such
    as a paper's test error) for scale."""
    figure = Figure(figsize=(8, 4.5), dpi=100)
    axes = figure.subplots()
    for n, (name, points) in enumerate(runs.items()):
        axes.plot([e for e, _ in points], [100 * v for _, v in points], marker=".",
                  color=f"C{n % 10}", label=name)
    for n, (name, value) in enumerate((references or {}).items()):
        axes.axhline(100 * value, color=f"{0.2 + 0.25 * (n % 3):.2f}", linestyle=":",
                     label=name)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("validation error (%)")
    if axes.has_data():
        axes.legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return buffer.getvalue()


def curves(paths: list[Path], title: str, references: dict[str, float]) -> bytes:
    """The validation curves of run logs, each named by its file, in one picture."""
    runs = {}
    for path in paths:
        epochs, _ = read_log(path)
        runs[path.stem] = [(int(e[0]), float(e[3])) for e in epochs]
    return run_curves(runs, title, references)


def table(paths: list[Path]) -> str:
    """The ablation table of run logs: one row per log, finished or not (other logs in
    the folder, such as time to accuracy's, are left out)."""
    rows = ["| run | epochs | validation error: final (best, epoch) | test error | "
            "training time |", "|---|---:|---:|---:|---:|"]
    for path in paths:
        epochs, finished = read_log(path)
        if not epochs:
            continue
        best = min(epochs, key=lambda e: float(e[3]))
        test = finished[0].rsplit("test error ", 1)[1] if finished else "not finished"
        test = f"{float(test):.2%}" if finished else test
        rows.append(f"| {path.stem} | {epochs[-1][0]} | {float(epochs[-1][3]):.2%} "
                    f"({float(best[3]):.2%}, {best[0]}) | {test} | {float(epochs[-1][2]):.0f} s |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("AAE_DATA_DIR", default_data_dir())))
    parser.add_argument("--preset", default="default", choices=preset_names())
    parser.add_argument("--mode", default="semi_supervised",
                        choices=["semi_supervised", "clustering"])
    parser.add_argument("--labels", type=int, default=100, help="semi_supervised only")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="a config field, e.g. --set vat_weight=0 (repeatable)")
    parser.add_argument("--name", help="run name (log file prefix)")
    parser.add_argument("--store", type=Path, help="also publish each trained model into "
                        "this checkpoint store, named --name")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace existing run logs of this name (refused otherwise)")
    parser.add_argument("--table", nargs="*", type=Path, metavar="LOG",
                        help="print the table of these run logs (default: docs/runs/*.log)")
    parser.add_argument("--curves", nargs="+", type=Path, metavar="LOG",
                        help="draw the validation curves of these run logs into --output")
    parser.add_argument("--output", type=Path, help="PNG file written by --curves")
    parser.add_argument("--title", default="validation error per epoch", help="of --curves")
    parser.add_argument("--reference", action="append", default=[], metavar="LABEL=PERCENT",
                        help="a dotted line for --curves, e.g. 'paper, 30 clusters=4.1'")
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table or sorted(RUNS.glob("*.log"))))
        return
    if args.curves:
        if args.output is None:
            parser.error("--curves needs --output")
        references = {label: float(value) / 100 for label, _, value in
                      (r.rpartition("=") for r in args.reference)}
        args.output.write_bytes(curves(args.curves, args.title, references))
        return
    tune_cpu_allocator()
    flush_denormals()
    if not args.name:
        parser.error("--name is required to train")
    sets = parse_sets(args.sets)
    labels = args.labels if args.mode == "semi_supervised" else None
    if not args.overwrite:
        try:
            refuse_overwrite([log_path_of(args.name, seed) for seed in args.seeds])
        except AAEError as exc:
            parser.error(str(exc))
    rows = [run(args.data_dir, args.preset, args.mode, labels, seed, sets, args.name,
                args.store, args.overwrite) for seed in args.seeds]
    errors = [r["test_error"] for r in rows]
    spread = statistics.stdev(errors) if len(errors) > 1 else 0.0
    print(f"\n{args.name}: test error {statistics.mean(errors):.2%} ± {spread:.2%} over seeds "
          f"{args.seeds}; training {statistics.mean(r['train_seconds'] for r in rows):.0f} s "
          "per run")


if __name__ == "__main__":
    main()
