# Image for the hivebus CLI, coordinator and agents (used by docker-compose.yml).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY coordinator ./coordinator
COPY agents ./agents
RUN pip install --no-cache-dir .
ENV HIVEBUS_LOG_FORMAT=json
ENTRYPOINT []
CMD ["hivebus", "--help"]
