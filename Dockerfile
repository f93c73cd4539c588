# fashionlens on CPU: the same steps as the Makefile (make install, then the demo, which serves on port 8000).
#   docker build -t fashionlens .
#   docker run --rm -p 8000:8000 -e FASHIONLENS_API_KEY=change-me fashionlens
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY . .
# PyTorch CPU wheels: the Makefile keeps the pin torch==2.13.0 in every pip call.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1
RUN make install
EXPOSE 8000
CMD [".venv/bin/fashionlens", "demo", "--host", "0.0.0.0", "--port", "8000"]
