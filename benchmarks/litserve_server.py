"""The same model served by LitServe: a baseline of benchmarks/compare_revisions.py.

``POST /classify`` with a multipart PNG upload (field ``file``), made into the model's
input as the service makes uploads (``aae.digits``: found, cropped, fitted and centred
MNIST's way), answered as the service answers (label and probabilities), with LitServe's dynamic batching set as the service's
defaults (64 images, 2 ms), one inference worker on the CPU with one torch thread, one
API server process, its default queue (``fast_queue``, ZeroMQ, gave half the requests per
second here: 420 against 884 at concurrency 64). Configured by BENCH_MODEL_DIR and
BENCH_MODEL; ready when ``/health`` answers 200.

    python -m benchmarks.litserve_server --port 8001
"""

from __future__ import annotations

import argparse
import os

import litserve as ls
import torch

from aae.checkpoints import load_model
from aae.digits import normalize, read_image
from aae.store import CheckpointStore


class Classify(ls.LitAPI):
    def setup(self, device: str) -> None:
        torch.set_num_threads(1)
        _, self.model = load_model(CheckpointStore(os.environ["BENCH_MODEL_DIR"]),
                                   os.environ["BENCH_MODEL"])

    # unannotated: LitServe reads the annotations (none: the request's form, parsed)
    def decode_request(self, request):  # noqa: ANN001, ANN201
        upload = request["file"]
        data = upload.file.read() if hasattr(upload, "file") else upload
        return torch.from_numpy(normalize(read_image(data)).reshape(784))

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.classify(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, probabilities):  # noqa: ANN001, ANN201
        return {"label": int(probabilities.argmax()), "probabilities": probabilities.tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    api = Classify(max_batch_size=64, batch_timeout=0.002, api_path="/classify")
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1)
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, log_level="warning",
               generate_client_file=False)


if __name__ == "__main__":
    main()
