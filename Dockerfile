# One image for the API and the training workers (docker-compose.yml runs both;
# deploy/kubernetes too). Two flavours, chosen by the FLAVOUR build argument:
#   docker build --build-arg FLAVOUR=cpu  -t aae-serving:cpu .    # torch's CPU-only wheel
#   docker build --build-arg FLAVOUR=cuda -t aae-serving:cuda .   # the default
# The CUDA flavour is PyPI's torch, whose Linux wheels carry the CUDA runtime (the
# nvidia-* packages): a worker uses the GPU it is given (the host's driver, through the
# NVIDIA Container Toolkit) and the CPU otherwise, so it needs no CUDA base image.
# BASE_IMAGE picks another base for both stages (it must have Python 3.11+ at the same
# path in both, as the virtual environment is copied between them).
#
# Two stages: the build stage installs the package and its dependencies into a virtual
# environment; the image is the base plus that environment, without pip's build
# leftovers or the sources. Its size was not measured: there is no Docker engine where
# this was written (docs/deploy.md#images).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG FLAVOUR=cuda
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aae ./aae
COPY aae_jobs ./aae_jobs
COPY cli ./cli
COPY service ./service
COPY worker ./worker
RUN case "$FLAVOUR" in \
      cpu) index=https://download.pytorch.org/whl/cpu ;; \
      cuda) index= ;; \
      *) echo "FLAVOUR is cpu or cuda, not '$FLAVOUR'" >&2; exit 1 ;; \
    esac \
    && pip install ${index:+--extra-index-url "$index"} .

FROM ${BASE_IMAGE}
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    AAE_MODEL_DIR=/models \
    AAE_DATA_DIR=/data/mnist
COPY --from=build /opt/venv /opt/venv
RUN groupadd --gid 10001 aae \
    && useradd --create-home --uid 10001 --gid 10001 aae \
    && mkdir -p /models /data/mnist \
    && chown aae:aae /models /data/mnist
# by number, so that Kubernetes' runAsNonRoot can check it
USER 10001:10001
WORKDIR /home/aae

EXPOSE 8000
# the API's liveness; a worker serves no HTTP (docker-compose.yml turns this off for it)
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# the API; the workers run `python -m worker` (see docker-compose.yml)
CMD ["uvicorn", "service.app:create_app", "--factory", "--host", "0.0.0.0", "--port", "8000", "--http", "service.core.connections:LimitedHTTP"]
