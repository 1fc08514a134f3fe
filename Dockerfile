FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamproc ./streamproc
COPY agents ./agents
COPY configs ./configs
RUN pip install --no-cache-dir .
ENTRYPOINT []
