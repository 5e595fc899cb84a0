#!/bin/sh
# Builds the local base image $1 (default localhost/debian-python:bookworm) from Debian packages with
# mmdebstrap: Debian 12, Python 3.11 (+ venv, pip), no registry needed. make base-image; docs/containers.md.
#
# LOCAL ONLY: package traffic here passes a TLS-intercepting proxy whose CA is in the host's trust store
# (/usr/local/share/ca-certificates), so this image carries the host's extra CA certificates and points
# SSL_CERT_FILE / REQUESTS_CA_BUNDLE / PIP_CERT at the system bundle. Never push it or build release
# images on it: release images use python:3.11-slim-bookworm (the Dockerfiles' BASE_IMAGE default).
set -eu
image=${1:-localhost/debian-python:bookworm}
sources=/etc/apt/sources.list.d/debian.sources
[ -f "$sources" ] || sources=/etc/apt/sources.list
bundle=/etc/ssl/certs/ca-certificates.crt
mmdebstrap --quiet --variant=minbase --mode=root --format=tar \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --include=python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
    --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
    --customize-hook='copy-in /usr/local/share/ca-certificates/. /usr/local/share/ca-certificates' \
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null' \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/doc/* "$1"/usr/share/man/*' \
    bookworm - "$sources" |
    podman import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV PIP_BREAK_SYSTEM_PACKAGES=1' \
        --change "ENV SSL_CERT_FILE=$bundle" \
        --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
        --change "ENV PIP_CERT=$bundle" \
        --change 'LABEL org.opencontainers.image.description="LOCAL ONLY: Debian 12 + Python 3.11 with this host'"'"'s CA certificates"' \
        --change 'CMD ["python3"]' \
        - "$image" >/dev/null
podman image inspect --format '{{.Id}} {{.Size}}' "$image"
