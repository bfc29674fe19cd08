# GPU image: the official PyTorch CUDA runtime, the pinned requirements, and `cnn-factory` as
# the entrypoint, used as the original cnn-factory's image was:
#   docker build -t cnn-factory .
#   docker run -it --rm --gpus all -u $(id -u):$(id -g) \
#     -v $(pwd)/data:/data -v $(pwd)/output:/out cnn-factory \
#     --modelname my-model --csv /data/input-data.csv --batch-size 4 --num-epochs 800 --output-path /out/models/
# or with -v $(pwd)/args:/args -e ARGS_FILE=/args/train.args.json and no flags; serve a model with
#   docker run --rm -p 8000:8000 -v $(pwd)/output:/out cnn-factory serve /out/models/my-model.pt --host 0.0.0.0
# (`serve` alone: SageMaker's contract, the model in /opt/ml/model, port 8080; docs/serving.md).
# train (and validate, plan, summary) runs in a clone of /app under /out/work, so the container
# writes only under /out; every run starts from /app's params.yaml, and earlier runs stay in the
# clone as DVC experiments (docs/command-line.md#docker). The other commands make no clone.
# Docker cannot run on the project's build machines: tests/test_docker.py checks what it can.
ARG BASE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE}

RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt ./
# as `make install`: a line whose comment says --no-deps goes in without its dependencies (the line says why)
RUN grep -v -E '^[^#].*--no-deps' requirements.txt > requirements-with-deps.txt \
    && python -m pip install --no-cache-dir -r requirements-with-deps.txt \
    && python -m pip install --no-cache-dir --no-deps $(grep -E '^[^#].*--no-deps' requirements.txt | cut -d' ' -f1) \
    && rm requirements-with-deps.txt
COPY . ./
RUN python -m pip install --no-cache-dir --no-deps . \
    && git config --system --add safe.directory '*'

# any user (-u) may run it: HOME and git's identity need no passwd entry. Every cache, HOME and
# the temporary folder lie under /out, so a container started with --read-only works: DVC's site
# cache (else /var/tmp/dvc), torch's compile cache (else /tmp/torchinductor_<user>), matplotlib's.
ENV CNN_FACTORY_HOME=/app \
    CNN_FACTORY_WORKDIR=/out/work \
    CNN_FACTORY_DATA=/data \
    HOME=/out/.cache/home \
    TMPDIR=/out/.cache/tmp \
    XDG_CACHE_HOME=/out/.cache \
    DVC_SITE_CACHE_DIR=/out/.cache/dvc \
    TORCHINDUCTOR_CACHE_DIR=/out/.cache/torchinductor \
    MPLCONFIGDIR=/out/.cache/matplotlib \
    GIT_AUTHOR_NAME=cnn-factory GIT_AUTHOR_EMAIL=cnn-factory@localhost \
    GIT_COMMITTER_NAME=cnn-factory GIT_COMMITTER_EMAIL=cnn-factory@localhost \
    DVC_NO_ANALYTICS=1
WORKDIR /out
EXPOSE 8000 8080
ENTRYPOINT ["cnn-factory"]
