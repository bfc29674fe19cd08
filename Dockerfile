# GPU image of the pipeline: the official PyTorch CUDA runtime plus the pinned requirements.
#   docker build -t cnn-factory .
#   docker run --rm --gpus all -v $(pwd)/data:/data -v $(pwd)/output:/out cnn-factory
# Docker cannot run on our build machines, so this file is checked by reading, not by a build.
ARG BASE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE}

RUN apt-get update && apt-get install -y --no-install-recommends git make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . ./
RUN python -m pip install --no-cache-dir --no-deps -e . \
    && git config --system --add safe.directory /app

# the pipeline; pass stage names or dvc flags as arguments (e.g. `train`, `-f`)
ENTRYPOINT ["dvc", "repro"]
