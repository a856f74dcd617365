"""The FastAPI server a user would write first: one forward pass per request.

The baseline of benchmarks/serve_load.py. It serves the same model as the real
service, from the same checkpoint store, with no batching and FastAPI's
``UploadFile`` for uploads, each made into the model's input as the service makes it
(``aae.digits``: found, cropped, fitted and centred MNIST's way). Configured by
BENCH_MODEL_DIR and BENCH_MODEL.
"""

from __future__ import annotations

import io
import os

import torch
from fastapi import FastAPI, Response, UploadFile
from PIL import Image

from aae.checkpoints import load_model
from aae.digits import normalize, read_image
from aae.store import CheckpointStore

_, model = load_model(CheckpointStore(os.environ["BENCH_MODEL_DIR"]), os.environ["BENCH_MODEL"])
app = FastAPI()


@app.post("/classify")
async def classify(file: UploadFile) -> dict:
    x = torch.from_numpy(normalize(read_image(await file.read())).reshape(1, 784))
    probabilities = model.classify(x)[0]
    return {"label": int(probabilities.argmax()), "probabilities": probabilities.tolist()}


@app.get("/sample")
async def sample(label: int = 7) -> Response:
    image = model.sample(1, labels=label)[0].reshape(28, 28)
    out = io.BytesIO()
    Image.fromarray((image * 255).to(torch.uint8).numpy(), mode="L").save(out, format="PNG")
    return Response(out.getvalue(), media_type="image/png")
