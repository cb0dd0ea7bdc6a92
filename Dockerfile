# mlserve serving image: `docker build -t mlserve .`, then
#   docker run -p 8080:8080 -v "$PWD/models:/models:ro" mlserve
# serves the model store in /models (see deploy/kubernetes/ for a cluster).
#
# Stage 1 builds the wheel (the C extension, with the OpenBLAS that the
# scipy-openblas32 build requirement brings); stage 2 installs only that wheel
# into a slim image with no compiler, and runs it as a non-root user.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY csrc/ csrc/
COPY mlserve/ mlserve/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:${PYTHON_VERSION}-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLSERVE_STORE=/models
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin mlserve \
    && mkdir -p /models \
    && chown mlserve /models
USER 10001
EXPOSE 8080
# the readiness route: 200 once the store's models are loaded (python, not curl:
# the slim image has no curl)
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/v2/health/ready', timeout=2).status != 200)"]
ENTRYPOINT ["mlserve"]
CMD ["serve", "/models", "--host", "0.0.0.0", "--port", "8080"]
