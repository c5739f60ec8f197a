# otelpipe: a small non-root image. The build stage compiles the C extensions, builds wheels and installs
# them into a virtualenv; the runtime stage gets that virtualenv and nothing of the compiler.
#
#   docker build -t otelpipe .
#   docker run --rm -p 4317:4317 -p 4318:4318 -p 8125:8125/udp -p 8888:8888 -p 8889:8889 otelpipe
#   docker run --rm -v "$PWD/my.yaml:/etc/otelpipe/config.yaml:ro" otelpipe          # your own config
#
# The config is read from /etc/otelpipe/config.yaml (OTELPIPE_CONFIG); the image ships the embedded
# default config there, and a mounted ConfigMap or file replaces it. Kubernetes manifests: deploy/.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A C compiler for processors/privacy/_wirewalk.c (the privacy processors' wire walker) and, on amd64,
# libhyperscan's headers for processors/privacy/_hsscan.c (secret_mask's scan). Debian's packages are
# not pinned: the archive keeps only the current version of each, so a pinned version stops building
# at the next point release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && if [ "$(dpkg --print-architecture)" = amd64 ]; then \
      apt-get install -y --no-install-recommends libhyperscan-dev; \
    fi \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY otelpipe ./otelpipe
COPY pipeline ./pipeline
COPY receivers ./receivers
COPY processors ./processors
COPY exporters ./exporters
COPY connectors ./connectors
COPY extensions ./extensions
COPY config ./config
# Wheels first (otelpipe's own, with its C extensions compiled, and every dependency's), then a virtualenv
# installed from those wheels alone; the runtime stage copies the virtualenv. setup.py builds the extensions
# as optional; here they must have been built.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && python -m venv /opt/otelpipe \
 && /opt/otelpipe/bin/pip install --no-cache-dir --no-index --find-links /wheels /wheels/otelpipe-*.whl \
 && /opt/otelpipe/bin/python -c "import processors.privacy._wirewalk, connectors.genai_metrics._genaiwire, exporters.datadog._ddwire, exporters.pagerduty._pdwire, exporters.loki._lokiwire" \
 && if [ "$(dpkg --print-architecture)" = amd64 ]; then \
      /opt/otelpipe/bin/python -c "import processors.privacy._hsscan"; \
    fi

FROM ${PYTHON_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Only the shared library _hsscan links against (amd64), no compiler or headers.
# hadolint ignore=DL3008
RUN if [ "$(dpkg --print-architecture)" = amd64 ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends libhyperscan5 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 otelpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin otelpipe
COPY --from=build /opt/otelpipe /opt/otelpipe
COPY config/default.yaml /etc/otelpipe/config.yaml
ENV PATH=/opt/otelpipe/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    OTELPIPE_CONFIG=/etc/otelpipe/config.yaml
LABEL org.opencontainers.image.title="otelpipe" \
      org.opencontainers.image.description="A telemetry pipeline daemon for AI-agent platforms, in the style of the OpenTelemetry Collector" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
# OTLP gRPC, OTLP HTTP, StatsD (udp), admin (/metrics /healthz /readyz /status), Prometheus exporter
EXPOSE 4317 4318 8125/udp 8888 8889
# SIGTERM drains: receivers stop, processors flush, exporter queues drain within service.shutdown_timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["otelpipe"]
CMD ["run"]
