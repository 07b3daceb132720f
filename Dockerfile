# Strata: one image for every role (`run`, `front`, `worker`, `migrate`); compose.yaml starts them on PostgreSQL.
# Untested on the build machine (no Docker daemon there): see README, "Running on PostgreSQL and several workers".
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user owns the only writable folder (backtest candle cache; SQLite files for `run`).
RUN useradd --create-home --uid 10001 strata
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
RUN pip install . && mkdir -p /data && chown strata:strata /data

USER strata
ENV STRATA_DATA_DIR=/data
VOLUME ["/data"]
ENTRYPOINT ["python", "-m", "bot"]
CMD ["run"]
