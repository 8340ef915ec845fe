# fedtrack-redis: the CLI, the flusher, the admin API and the demo workers.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY scripts ./scripts
RUN pip install --no-cache-dir ".[server]"
USER nobody
ENTRYPOINT ["fedtrack"]
CMD ["--help"]
