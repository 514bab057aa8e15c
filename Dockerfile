# The recorder as a container image: `docker compose build` (see docker-compose.yml).
# Two stages: the build stage installs the package into a virtualenv, the final one copies
# only that virtualenv, and runs as an unprivileged user. No secret is baked in: the DSN
# arrives at run time as RECORDER_DATABASE__DSN.
FROM python:3.12-slim-bookworm AS build
# gcc builds the writer's numeric encoder (recorder/storage/_numeric.c, hatch_build.py);
# only this stage has it: the final image gets the built module, not the compiler.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md hatch_build.py ./
COPY recorder ./recorder
COPY migrations ./migrations
RUN python -m venv /opt/recorder \
    && /opt/recorder/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.12-slim-bookworm
COPY --from=build /opt/recorder /opt/recorder
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/recorder --create-home \
        --shell /usr/sbin/nologin recorder
ENV PATH=/opt/recorder/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    RECORDER_RECORDER__DATA_DIR=/var/lib/recorder \
    RECORDER_METRICS__LISTEN=0.0.0.0:9108
WORKDIR /var/lib/recorder
USER recorder:recorder
EXPOSE 9108
# SIGTERM asks for a clean stop: the writer commits or spools what it buffers.
STOPSIGNAL SIGTERM
ENTRYPOINT ["recorder"]
CMD ["run"]
