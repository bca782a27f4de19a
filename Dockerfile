# One image for every process of the marketplace: the API, the media web app,
# the migrate job and the five Dramatiq workers. Which process a container runs
# is chosen by its command, e.g. `market worker billing` (see compose/).

# --- build: install the project and its dependencies into a virtualenv --------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore keeps the context to what `pip install .` needs.
COPY . .
# constraints.txt pins the transitive dependencies to the versions the tests ran with.
RUN pip install --no-cache-dir -c constraints.txt .

# --- runtime: the virtualenv only, no source tree, no build leftovers ---------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MARKET_DATA_DIR=/data

# Fixed uid/gid so volume ownership is predictable. /data is created here and
# owned by that user: Docker copies this ownership into an empty named volume
# mounted on /data, so the non-root processes can write to it.
RUN groupadd --system --gid 10001 market \
 && useradd --system --uid 10001 --gid market --create-home --home-dir /home/market \
        --shell /usr/sbin/nologin market \
 && mkdir -p /data \
 && chown market:market /data

COPY --from=build /opt/venv /opt/venv

WORKDIR /home/market
USER market

# api (gunicorn) and media-web; workers listen on nothing.
EXPOSE 8000 8001

# No ENTRYPOINT: a compose `command: ["market", ...]` is the whole argv.
CMD ["market", "--help"]
