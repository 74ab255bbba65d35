# syntax=docker/dockerfile:1
# ftpipe component image, CPU build: Kubeflow pipeline steps and the Ray head.
# Build from the repository root (`make images` does this and tags it with the commit):
#   docker build -f infra/docker/cpu.Dockerfile --build-arg GIT_SHA="$(git rev-parse HEAD)" .
#
# Base: rayproject/ray at the ray version of constraints.txt and Python 3.11. It runs as the
# non-root user `ray` and already holds what the Ray head needs beyond ftpipe's dependencies
# (dashboard and Jobs API: ray[default]). For production, pin its digest:
#   --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu@sha256:<digest>
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu
FROM ${RAY_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# The base image's `ray` user (uid 1000, gid 100): nothing below runs as root.
USER 1000:100
# Created by that user (WORKDIR alone may create it root-owned): runs write outputs/ here.
RUN mkdir -p /home/ray/app
WORKDIR /home/ray/app
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# torch first and on its own, from the CPU index, so nothing later pulls a CUDA build.
RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# Then ftpipe, every dependency pinned by constraints.txt.
COPY --chown=1000:100 constraints.txt pyproject.toml README.md ./
COPY --chown=1000:100 src ./src
# The pipeline's commands (`ftpipe run`, `compile`, ...) ship beside the library: the RayJob
# entrypoint is `ftpipe run --no-kfp`.
COPY --chown=1000:100 components ./components
COPY --chown=1000:100 pipelines ./pipelines
RUN pip install --constraint constraints.txt .
# Fail the build when the base image's ray is not the one constraints.txt pins.
RUN ray_version="$(python -c 'import ray; print(ray.__version__)')" \
    && { grep -qx "ray==${ray_version}" constraints.txt \
         || { echo "ray ${ray_version} in the base image is not the ray of constraints.txt" >&2; exit 1; }; }

# Shipped recipes and the demo data: Ray job entrypoints run from here
# (infra/jobs/rayjob.yaml).
COPY --chown=1000:100 configs ./configs
COPY --chown=1000:100 examples ./examples

# Last, so that a new commit rebuilds no layer above (an ARG is in every later RUN's
# environment, hence in its cache key). The commit goes on the image's label and, for
# the lineage tags of what runs here (there is no .git), into FTPIPE_GIT_SHA.
ARG GIT_SHA
LABEL org.opencontainers.image.title="ftpipe" \
      org.opencontainers.image.description="ftpipe component image (CPU)" \
      org.opencontainers.image.revision="${GIT_SHA}"
ENV FTPIPE_GIT_SHA=${GIT_SHA}
