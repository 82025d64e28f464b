# dpalbum in a container: the same pinned requirement files as README's setup (scripts/setup.sh).
# Build: docker build -t dpalbum .     Run a stage: docker run --rm -v "$PWD/data:/app/data" dpalbum dp_training
FROM python:3.11-slim
WORKDIR /app
ENV KEDRO_DISABLE_TELEMETRY=true DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
COPY requirements.txt requirements-dev.txt requirements.lock pyproject.toml README.md ./
COPY src ./src
# Same order as scripts/setup.sh: torch by itself (its pin), then the rest under the lock.
RUN pip install "$(grep '^torch==' requirements.txt)" \
 && pip install -c requirements.lock -r requirements.txt \
 && pip install --no-deps -e .
COPY conf ./conf
COPY .telemetry ./
RUN mkdir -p data/01_raw data/02_intermediate data/03_primary data/04_feature \
    data/05_model_input data/06_models data/07_model_output data/08_reporting
ENTRYPOINT ["sh", "-c", "exec kedro run --pipelines \"$0\" \"$@\""]
CMD ["__default__"]
