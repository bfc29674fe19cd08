# GPU image: the official PyTorch CUDA runtime, the pinned requirements, and `cnn-factory` as
# the entrypoint, used as the original cnn-factory's image was:
#   docker build -t cnn-factory .
#   docker run -it --rm --gpus all -u $(id -u):$(id -g) \
#     -v $(pwd)/data:/data -v $(pwd)/output:/out cnn-factory \
#     --modelname my-model --csv /data/input-data.csv --batch-size 4 --num-epochs 800 --output-path /out/models/
# or with -v $(pwd)/args:/args -e ARGS_FILE=/args/train.args.json and no flags.
# The pipeline runs in a clone of /app under /out/work, so the container writes only under /out.
# Docker cannot run on the project's build machines: tests/test_docker.py checks what it can.
ARG BASE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE}

RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt ./
RUN python -m pip install --no-cache-dir -r requirements.txt
COPY . ./
RUN python -m pip install --no-cache-dir --no-deps . \
    && git config --system --add safe.directory '*'

# any user (-u) may run it: HOME and git's identity need no passwd entry
ENV CNN_FACTORY_HOME=/app \
    CNN_FACTORY_WORKDIR=/out/work \
    HOME=/tmp \
    GIT_AUTHOR_NAME=cnn-factory GIT_AUTHOR_EMAIL=cnn-factory@localhost \
    GIT_COMMITTER_NAME=cnn-factory GIT_COMMITTER_EMAIL=cnn-factory@localhost \
    DVC_NO_ANALYTICS=1
WORKDIR /out
ENTRYPOINT ["cnn-factory"]
