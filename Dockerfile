# The project image for distributed runs: Kubeflow Pipelines / Vertex (KFP_IMAGE=...) and the
# Beam workers of Flink, Spark or Dataflow (--environment_config / --sdk_container_image).
# It installs exactly requirements.lock, as `make install` does, so every worker runs the
# same versions as the machine that compiled the pipeline. Not built in CI (no Docker
# engine there); build with
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) -t registry.example/captioner:latest .
# (the commit is what MLflow's runs name as their source: the image has no .git).
FROM python:3.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2
WORKDIR /app

# Dependencies first (a layer cached until the lock changes).
COPY requirements.lock ./
RUN pip install --no-cache-dir "uv==$(grep -E '^uv==' requirements.lock | cut -d= -f3)" \
 && uv pip sync --system --no-cache requirements.lock

# Then the project itself (configs, components, models, pipelines, ...).
ARG GIT_COMMIT=""
ENV CAPTIONER_GIT_COMMIT=$GIT_COMMIT
COPY . .
RUN uv pip install --system --no-cache --no-deps -e .

# Beam's SDK harness boot program, as in Beam's own worker images: the entry point portable
# runners (Flink, Spark) and Dataflow start. Kubeflow/Vertex give the TFX launcher as the
# container command in the compiled spec, which replaces this entry point.
COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
