# One image for csms-stub, locust-master and locust-worker (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Install the project (runtime dependencies only, no dev extra). Every dependency ships
# manylinux wheels for CPython 3.11, so no compiler is needed.
COPY pyproject.toml README.md ./
COPY loadgen/ loadgen/
COPY csms_stub/ csms_stub/
RUN pip install . && rm -rf build *.egg-info

# Locust loads this file from the working directory (`locust -f locustfile.py`).
COPY locustfile.py ./

RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin loadgen \
    && mkdir -p /app/data /app/reports \
    && chown loadgen:loadgen /app/data /app/reports
USER loadgen

# 9000 OCPP (csms_stub), 8080 stub HTTP API, 8089 Locust web UI, 9646 Locust master
# metrics, 5557 Locust master <- workers.
EXPOSE 9000 8080 8089 9646 5557

CMD ["python", "-m", "csms_stub"]
