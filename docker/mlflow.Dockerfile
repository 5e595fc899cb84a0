# bayes-beats-mlflow: the MLflow tracking server + model registry (backend: PostgreSQL; artifacts proxied to
# a volume or a gs:// bucket). Every `mlflow server` option is read from the environment (MLFLOW_HOST,
# MLFLOW_PORT, MLFLOW_BACKEND_STORE_URI, MLFLOW_ARTIFACTS_DESTINATION, MLFLOW_SERVER_ALLOWED_HOSTS) or given
# as arguments. Any Debian with python3.11 + venv works as the base:
#   --build-arg BASE_IMAGE=localhost/debian-python:bookworm
# checkov:skip=CKV_DOCKER_7: the base is a build argument whose default is pinned (python:3.11-slim-bookworm); checkov cannot see through ${BASE_IMAGE}
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000

# a venv: Debian's python3 is externally managed (PEP 668); the same mlflow and PostgreSQL driver as the
# product (pyproject): SQLAlchemy 2.1 maps postgresql:// to psycopg 3, not psycopg2
RUN python3 -m venv "$VIRTUAL_ENV" \
    && pip install --no-cache-dir mlflow==3.17.2 "psycopg[binary]==3.3.9" google-cloud-storage==3.17.1

# /mlartifacts exists in the image and belongs to the server's user, so a fresh named volume mounted
# there inherits that owner (proxied artifact store: --artifacts-destination /mlartifacts)
RUN groupadd --gid 10001 mlflow \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/mlflow --shell /usr/sbin/nologin mlflow \
    && mkdir /mlartifacts && chown 10001:10001 /mlartifacts

ARG VERSION=0.1.0
ARG SOURCE=https://github.com/bayes-beats/bayes-beats
LABEL org.opencontainers.image.title="bayes-beats-mlflow" \
      org.opencontainers.image.description="MLflow tracking server and model registry for Bayes' Beats" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}"

USER 10001:10001
WORKDIR /home/mlflow
EXPOSE 5000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=4)"]
ENTRYPOINT ["mlflow", "server"]
