# One image for the API and the training workers (docker-compose.yml runs both).
#
# PyTorch comes from PyPI by default: its Linux wheels carry CUDA, so a worker uses the
# GPU it is given and the CPU otherwise. For a much smaller CPU-only image:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu -t aae-serving .
FROM python:3.11-slim

ARG TORCH_INDEX=""
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AAE_MODEL_DIR=/models \
    AAE_DATA_DIR=/data/mnist

WORKDIR /app
COPY pyproject.toml README.md ./
COPY aae ./aae
COPY aae_jobs ./aae_jobs
COPY cli ./cli
COPY service ./service
COPY worker ./worker
RUN pip install ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} . \
    && useradd --create-home --uid 10001 aae \
    && mkdir -p /models /data/mnist \
    && chown aae:aae /models /data/mnist
USER aae

EXPOSE 8000
# the API; the workers run `python -m worker` (see docker-compose.yml)
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--http", "service.core.connections:LimitedHTTP"]
