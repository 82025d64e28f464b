# dpalbum in one image: the stack scripts/setup.sh installs (same requirement files, same order,
# torch first at its pin; tests/test_container.py holds the two to each other), the code and
# conf/base. The albums, data/, conf/local and the MLflow store are mounted, never built in
# (.dockerignore keeps them out of the build context). One `docker run` runs one pipeline:
#
#   docker build -t dpalbum .                                          # torch as PyPI serves it
#   docker build -t dpalbum --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .
#   docker run --rm -v "$PWD/data:/app/data" -v dpalbum-mlflow:/app/mlruns dpalbum demo_world
#
# README "Containers" has the rest (your albums, conf/local, the MLflow UI on the volume).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

# Empty: torch from the configured index (on PyPI, torch==2.13.0 is the CUDA build with GBs of
# nvidia-* wheels). A CPU machine: https://download.pytorch.org/whl/cpu (the CPU build, ~200 MB).
ARG TORCH_INDEX_URL=""

WORKDIR /app
# Offline and quiet as setup.sh leaves it; GIT_PYTHON_REFRESH: the image has no git (nor .git),
# so MLflow records no commit instead of warning about it at every run.
ENV KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    GIT_PYTHON_REFRESH=quiet \
    VIRTUAL_ENV=/app/.venv PATH=/app/.venv/bin:$PATH

# The dependency layer first, so a code change does not reinstall the stack. Same steps, same
# order as scripts/setup.sh (which also floats pip itself: hence DL3013).
COPY requirements.txt requirements-dev.txt requirements.lock ./
# hadolint ignore=DL3013
RUN python3 -m venv .venv \
 && .venv/bin/pip install --upgrade pip \
 && .venv/bin/pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} \
        "$(grep '^torch==' requirements.txt)" \
 && .venv/bin/pip install -c requirements.lock -r requirements.txt -r requirements-dev.txt

COPY pyproject.toml README.md .telemetry ./
COPY src ./src
RUN .venv/bin/pip install --no-deps -e .

# conf/local arrives empty (its .gitkeep): mount yours read-only to override parameters.
COPY conf ./conf
COPY scripts ./scripts
COPY tests ./tests
# The MLflow store lives on the volume mounted at /app/mlruns: kedro-mlflow's sqlite:///mlflow.db
# (relative to the project root, /app) is a link into it, so runs and artifacts outlive --rm.
RUN mkdir -p mlruns data/01_raw data/02_intermediate data/03_primary data/04_feature \
        data/05_model_input data/06_models data/07_model_output data/08_reporting \
 && ln -s mlruns/mlflow.db mlflow.db

ENTRYPOINT ["sh", "-c", "exec kedro run --pipelines \"$0\" \"$@\""]
CMD ["__default__"]
