FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md LICENSE ./
COPY streamproc ./streamproc
# Not in the wheel: `faust -A agents.app` imports it from the working directory.
COPY agents ./agents
COPY configs ./configs
RUN pip install --no-cache-dir .
ENTRYPOINT []
