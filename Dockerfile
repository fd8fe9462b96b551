# The official Airflow image plus this provider (as a wheel built in the first stage), Java and
# pyspark for the local engine. Used by docker-compose.yaml; `docker compose build` builds it.
ARG AIRFLOW_VERSION=3.3.2
ARG PYTHON_VERSION=3.12

FROM python:${PYTHON_VERSION}-slim AS wheel
WORKDIR /src
COPY setup.cfg pyproject.toml README.md ./
COPY airflow_spark_portable ./airflow_spark_portable
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM apache/airflow:${AIRFLOW_VERSION}-python${PYTHON_VERSION}
ARG AIRFLOW_VERSION
ARG PYTHON_VERSION
USER 0
# Java for Spark (local engine); the image is Debian-based. (USER 0 is root, 50000 the
# image's airflow user.)
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
USER 50000
COPY --from=wheel /dist /tmp/dist
# Airflow's own constraints for this version keep the image's packages where they are
RUN WHEEL="$(ls /tmp/dist/airflow_spark_portable-*.whl)" \
    && pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "${WHEEL}[local,amazon,databricks]" \
       --constraint "https://raw.githubusercontent.com/apache/airflow/constraints-${AIRFLOW_VERSION}/constraints-${PYTHON_VERSION}.txt"
