# exchange-node in a container: `docker build -t exchange-node .` (README.md, "Running in a container").
# BASE must provide python3 3.11+ with venv; any Debian bookworm-based image with python3-venv works.
ARG BASE=python:3.11-slim-bookworm

# --- build: install the package and its dependencies into a self-contained virtualenv ------------
FROM ${BASE} AS build
WORKDIR /src
RUN python3 -m venv /opt/exchange-node
COPY pyproject.toml README.md ./
COPY config ./config
COPY storage ./storage
COPY p2p ./p2p
COPY exchange ./exchange
COPY node ./node
RUN /opt/exchange-node/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/exchange-node/bin/exchange-node --version

# --- run: the virtualenv only, as an unprivileged user ----------------------------------------------
FROM ${BASE}
RUN groupadd --system exchange-node \
 && useradd --system --gid exchange-node --home-dir /var/lib/exchange-node --shell /usr/sbin/nologin exchange-node \
 && install -d -o exchange-node -g exchange-node -m 0700 /var/lib/exchange-node
COPY --from=build /opt/exchange-node /opt/exchange-node
# The API listens on every interface of the container so a published port reaches it; set API_TOKEN
# when you publish it (README.md, "Running in a container").
ENV PATH=/opt/exchange-node/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    DATA_DIR=/var/lib/exchange-node \
    P2P_HOST=0.0.0.0 \
    API_HOST=0.0.0.0
USER exchange-node
WORKDIR /var/lib/exchange-node
VOLUME ["/var/lib/exchange-node"]
# P2P (peers dial it) and the control API, console and /ws stream.
EXPOSE 7946/tcp 7947/tcp
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('API_PORT', '7947'), timeout=2)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["exchange-node"]
CMD ["start"]
