"""Open Inference Protocol inference with binary FP32 tensors against /classify with a PNG,
under real HTTP load on loopback (wrk), one server, same run, images per second.

The V2 requests are what ``tritonclient.http`` sends by default: a JSON header
(``Inference-Header-Content-Length``), the images' raw float32 bytes after it, and every
output asked for in binary. Batches of 1 and 16 digits per request; /classify gets one
PNG per request (multipart), as in benchmarks/serve_load.py. Needs ``wrk``.

    python -m benchmarks.v2_load
    python -m benchmarks.v2_load --duration 8 --concurrency 1 64 --batch 1 16
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from aae.data import load_splits
from benchmarks.serve_load import FIXTURE, MODEL, Server, prepare, wrk

ROOT = Path(__file__).resolve().parents[1]

LUA = """
wrk.method = "POST"
local f = io.open("{body}", "rb")
wrk.body = f:read("*all")
f:close()
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = "{header_length}"
"""


def v2_request(workdir: Path, batch: int) -> Path:
    """A wrk script posting ``batch`` real test digits as one binary FP32 tensor."""
    splits = load_splits(FIXTURE, n_labels=None, validation_size=0, seed=0, download=False)
    x = np.ascontiguousarray(splits.test.images[:batch].numpy(), dtype="<f4")
    header = json.dumps({"inputs": [{"name": "images", "shape": [batch, 784],
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "parameters": {"binary_data_output": True}}).encode()
    body = workdir / f"v2-{batch}.bin"
    body.write_bytes(header + x.tobytes())
    lua = workdir / f"v2-{batch}.lua"
    lua.write_text(LUA.format(body=body, header_length=len(header)))
    return lua


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8, help="seconds per measurement")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    work = Path(tempfile.mkdtemp(prefix="aae-bench-v2-"))
    model_dir, classify_lua = prepare(work)
    server = Server("service.app:create_app", {"AAE_MODEL_DIR": str(model_dir),
                                               "AAE_DEFAULT_MODEL": MODEL}, 1, True)
    cases = [("POST /classify, one PNG", server.url + "/classify", classify_lua, 1)]
    cases += [(f"POST /v2/.../infer, binary FP32 batch of {b}",
               f"{server.url}/v2/models/{MODEL}/infer", v2_request(work, b), b)
              for b in args.batch]
    rows = []
    try:
        server.wait_ready("/readyz")
        for name, url, lua, batch in cases:
            wrk(url, 8, 2, lua)  # warm-up
            for c in args.concurrency:
                r = wrk(url, c, args.duration, lua)
                rows.append((name, c, r, batch))
                print(f"{name:45} c={c:<3} {r['rps']:8.0f} req/s {r['rps'] * batch:8.0f} "
                      f"images/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms", flush=True)
    finally:
        server.stop()
    base = {c: r["rps"] for name, c, r, _ in rows if name.startswith("POST /classify")}
    print("\n| request | concurrency | req/s | images/s | p50 / p99 ms | images/s vs "
          "/classify |\n|---|---:|---:|---:|---:|---:|")
    for name, c, r, batch in rows:
        print(f"| {name} | {c} | {r['rps']:.0f} | {r['rps'] * batch:.0f} | "
              f"{r['p50']:.1f} / {r['p99']:.1f} | {r['rps'] * batch / base[c]:.2f}x |")


if __name__ == "__main__":
    main()
