# otelpipe: small image, non-root, the default config embedded; mount your own with -c.
FROM python:3.11-slim AS build
# a C compiler for processors/privacy/_wirewalk.c (the privacy processors' wire walker) and, on amd64, libhyperscan
# for processors/privacy/_hsscan.c (secret_mask's scan); only the build stage has the compiler and headers
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
      $( [ "$(dpkg --print-architecture)" = amd64 ] && echo libhyperscan-dev ) && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY pipeline ./pipeline
COPY receivers ./receivers
COPY processors ./processors
COPY exporters ./exporters
COPY config ./config
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home /nonexistent --shell /usr/sbin/nologin otelpipe \
 && if [ "$(dpkg --print-architecture)" = amd64 ]; then apt-get update && apt-get install -y --no-install-recommends \
      libhyperscan5 && rm -rf /var/lib/apt/lists/*; fi
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
 && python -c "import processors.privacy._wirewalk"
USER 10001
# OTLP gRPC, OTLP HTTP, StatsD (udp), Prometheus exporter, admin (/metrics /healthz /readyz /status)
EXPOSE 4317 4318 8125/udp 8889 8888
ENTRYPOINT ["otelpipe", "run"]
# no args: the embedded default config; in Kubernetes: args: ["-c", "/etc/otelpipe/config.yaml"]
