# bayes-beats-postgres: PostgreSQL from Debian's package, for the LOCAL compose stack only
# (docker/compose.local.yaml; no registry here). The release stack keeps docker.io/library/postgres:16
# (compose.yaml) and production uses Cloud SQL. Same contract as the official image for what compose.yaml
# uses: POSTGRES_DB / POSTGRES_USER / POSTGRES_PASSWORD on first start, PGPORT, data in
# /var/lib/postgresql/data. Debian 12 ships PostgreSQL 15 (the MLflow schema works on both).
#   --build-arg BASE_IMAGE=localhost/debian-python:bookworm (any Debian 12)
# checkov:skip=CKV_DOCKER_7: the base is a build argument whose default is pinned (debian:bookworm-slim); checkov cannot see through ${BASE_IMAGE}
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# the server's user first, with the fixed non-root uid, so the package's maintainer scripts reuse it;
# then the server only (no cluster: the entrypoint runs initdb into the volume on first start)
# DL3008: Debian's stable postgresql-15 gets security updates under new version strings; bookworm pins the major
# hadolint ignore=DL3008
RUN groupadd --gid 10001 postgres \
    && useradd --uid 10001 --gid 10001 --home-dir /var/lib/postgresql --shell /bin/sh postgres \
    && mkdir -p /etc/postgresql-common/createcluster.d \
    && echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main.conf \
    && apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -q -y --no-install-recommends postgresql-15 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /var/lib/postgresql/data /var/run/postgresql \
    && chown -R 10001:10001 /var/lib/postgresql /var/run/postgresql \
    && chmod 0700 /var/lib/postgresql/data

COPY --chmod=0755 postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint

ENV PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data \
    PGPORT=5432
ARG VERSION=0.1.0
ARG SOURCE=https://github.com/bayes-beats/bayes-beats
LABEL org.opencontainers.image.title="bayes-beats-postgres" \
      org.opencontainers.image.description="PostgreSQL 15 from Debian for the local MLflow stack" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}"

USER 10001:10001
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=5s --timeout=5s --retries=20 CMD ["sh", "-c", "pg_isready -h 127.0.0.1 -p \"$PGPORT\""]
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
