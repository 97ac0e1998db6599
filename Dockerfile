# syntax=docker/dockerfile:1
#
# SAEMI images: one Dockerfile, three targets (not built on the development machine:
# it has no Docker daemon; tests/test_deploy.py checks the key facts of this file).
#
#   docker build --target backend  -t saemi-backend  .   # REST API, model on CUDA
#   docker build --target frontend -t saemi-frontend .   # Dash page, calls $SAEMI_BACKEND_URL
#   docker build --target web      -t saemi-web      .   # everything in one process, CPU, no torch (Heroku)
#
# The backend image can also serve everything in one process:
#   docker run --gpus all -p 8050:8050 -e PORT=8050 saemi-backend gunicorn -c gunicorn.conf.py app:server
#
# docker-compose.yml wires the two together on a GPU host.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# backend: the model on the GPU. The CUDA runtime base brings the NVIDIA container settings and
# driver libraries; PyPI's torch wheels bring their own CUDA/cuDNN (nvidia-* packages).
FROM ${CUDA_IMAGE} AS backend

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# tesseract-ocr: optional reader of the scale-bar label (saemi/scalebar.py works without it)
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv tesseract-ocr \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && useradd --create-home --uid 1000 saemi

WORKDIR /app
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY gunicorn.conf.py app.py pyproject.toml ./
# the package without its weights, then the weights (the front end copies the same lines less the last)
COPY saemi/*.py saemi/
COPY saemi/api/ saemi/api/
COPY saemi/ui/ saemi/ui/
COPY saemi/graphs/ saemi/graphs/
COPY saemi/model_weights/ saemi/model_weights/

USER saemi
ENV PORT=8000 \
    HOST=0.0.0.0 \
    WEB_CONCURRENCY=1 \
    SAEMI_THREADS=4 \
    SAEMI_DEVICE=auto \
    SAEMI_LOAD=eager \
    MALLOC_ARENA_MAX=2
EXPOSE 8000
# /ready is 200 only once the worker's model is in memory
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/ready' % os.environ.get('PORT', '8000'), timeout=4)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "saemi.api:create_app()"]

# ---------------------------------------------------------------------------------------------
# frontend: the Dash page only. No GPU and no torch: the page never imports it, so it gets the
# package's core requirements less torch/torchvision/fastai plus the web and ocr extras
# (deploy/frontend_requirements.py reads them from pyproject.toml), pinned by requirements.txt.
FROM ${PYTHON_IMAGE} AS frontend

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 saemi

WORKDIR /app
COPY requirements.txt pyproject.toml deploy/frontend_requirements.py ./
RUN python frontend_requirements.py pyproject.toml > frontend-requirements.txt \
    && pip install -c requirements.txt -r frontend-requirements.txt

COPY gunicorn.conf.py app.py ./
COPY saemi/*.py saemi/
COPY saemi/api/ saemi/api/
COPY saemi/ui/ saemi/ui/

USER saemi
ENV PORT=8050 \
    HOST=0.0.0.0 \
    WEB_CONCURRENCY=2 \
    SAEMI_THREADS=8 \
    SAEMI_BACKEND_URL=http://backend:8000
EXPOSE 8050
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ.get('PORT', '8050'), timeout=4)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:server"]

# ---------------------------------------------------------------------------------------------
# web: the one-process layout on CPU (page + backend + model in each worker). For the Heroku
# container stack (heroku.yml) or any VM without a GPU. Heroku sets $PORT at run time.
FROM frontend AS web

USER root
# the network on the CPU engine, no torch (saemi/engine.py): the serving set, pinned as in the lock;
# the ONNX export of the weights is built here, at install, into a folder the app reads at start
COPY requirements-serve.txt .
RUN pip install -r requirements-serve.txt
COPY saemi/graphs/ saemi/graphs/
COPY saemi/model_weights/ saemi/model_weights/
ENV SAEMI_ENGINE_DIR=/opt/saemi-engine
RUN python -m saemi.engine --build saemi/model_weights/saemi_unet_resnet18.pt && chmod -R a+rX /opt/saemi-engine
ENV SAEMI_BACKEND_URL="" \
    WEB_CONCURRENCY=1 \
    SAEMI_THREADS=4 \
    SAEMI_DEVICE=cpu \
    MALLOC_ARENA_MAX=2
USER saemi
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/ready' % os.environ.get('PORT', '8050'), timeout=4)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "app:server"]
