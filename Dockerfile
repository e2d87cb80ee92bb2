# mixerd's container image. It installs mixerd the way `make install` does (a venv, the console
# UI's browser libraries from scripts/fetch_ui_vendor.py, pip install), without the dev extra:
#   docker build -t mixerd:0.1.0 .     (MIXERD_NPM_REGISTRY=<mirror> as a build arg if needed)
# tests/unit/test_deploy_docker.py checks this file; the image is not built in the test suite.

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY scripts/fetch_ui_vendor.py ./scripts/fetch_ui_vendor.py
ARG MIXERD_NPM_REGISTRY=""
# The browser libraries are package data: fetched (and checked against vendor.lock.json) before
# pip builds the package so that they are in it. The postgres extra brings the PostgreSQL console
# store's driver.
RUN python -m venv /opt/mixerd \
    && /opt/mixerd/bin/python -m pip install --no-cache-dir --upgrade pip \
    && MIXERD_NPM_REGISTRY="$MIXERD_NPM_REGISTRY" /opt/mixerd/bin/python scripts/fetch_ui_vendor.py \
    && /opt/mixerd/bin/python -m pip install --no-cache-dir '.[postgres]'

FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 mixerd \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/mixerd --no-create-home \
       --shell /usr/sbin/nologin mixerd \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/mixerd
COPY --from=build /opt/mixerd /opt/mixerd
# The console's SQLite store goes under $XDG_STATE_HOME/mixerd unless --console-store says otherwise.
ENV PATH=/opt/mixerd/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    XDG_STATE_HOME=/var/lib/mixerd
USER 10001:10001
WORKDIR /var/lib/mixerd
# gRPC (Mixer API, ext_authz, rate limit, access log), monitoring, the prometheus adapter, HTTP authorization
EXPOSE 9091 15014 42422 9192
# SIGTERM drains: stop taking calls, finish in-flight ones, flush reports, close handlers.
STOPSIGNAL SIGTERM
ENTRYPOINT ["mixerd", "serve"]
