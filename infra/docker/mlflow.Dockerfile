# syntax=docker/dockerfile:1
# MLflow tracking server image (infra/base/mlflow/deployment.yaml): mlflow at the version of
# constraints.txt, with the basic-auth app, the Postgres driver and the S3 client.
# Build from the repository root (`make images` does this and tags it with the commit):
#   docker build -f infra/docker/mlflow.Dockerfile --build-arg GIT_SHA="$(git rev-parse HEAD)" .
# For production, pin the base image digest:
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
FROM ${PYTHON_IMAGE}

ARG GIT_SHA
LABEL org.opencontainers.image.title="ftpipe-mlflow" \
      org.opencontainers.image.description="MLflow tracking server for ftpipe" \
      org.opencontainers.image.revision="${GIT_SHA}"

# Root only to create the user the server runs as.
RUN groupadd --gid 1000 mlflow \
    && useradd --uid 1000 --gid 1000 --create-home --shell /usr/sbin/nologin mlflow
USER 1000:1000
WORKDIR /home/mlflow
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/home/mlflow/venv/bin:$PATH

COPY --chown=1000:1000 constraints.txt infra/docker/mlflow-requirements.txt ./
RUN python -m venv venv \
    && pip install --constraint constraints.txt --requirement mlflow-requirements.txt

EXPOSE 5000
CMD ["mlflow", "server", "--app-name", "basic-auth", "--host", "0.0.0.0", "--port", "5000"]
