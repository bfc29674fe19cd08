#!/usr/bin/env bash
# Builds the Docker image (of the checkout's last commit) with podman and runs it as its users do: the original cnn-factory's
# command, the ARGS_FILE form, --read-only, and `serve` answering a request.
#
#   tools/podman-check.sh [WORK_DIR]      # as root, from anywhere; WORK_DIR default /var/tmp/cnn-factory-podman
#
# Heavy: the base is made from Debian's packages with debootstrap (no registry is needed), the
# image installs requirements.txt (torch's CUDA wheel: ~6 GB, minutes), and a short training runs
# three times. Run it when the Dockerfile or the entry point (cnn_factory/cli/main.py, train.py,
# container.py) changes, not in every CI run. Needs: podman, debootstrap, ~15 GB free, and the network to reach
# Debian's mirror and PyPI. Host settings that a virtual machine may need (docs/development.md):
# /etc/containers/containers.conf with
#   [containers]
#   default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
#   [engine]
#   runtime = "runc"
# The VM's TLS certificates are copied into the base, so pip inside the build trusts what the
# host trusts. Exits non-zero at the first check that fails; prints "podman-check: passed" at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/cnn-factory-podman}
base=localhost/cnn-factory-base:bookworm
image=localhost/cnn-factory:check
user=1000:1000
mkdir -p "$work"
say() { printf 'podman-check: %s\n' "$*" >&2; }

# 1. A base with what the PyTorch image gives the Dockerfile: python (3.11), pip, apt, certificates.
if ! podman image exists "$base"; then
  say "making the base with debootstrap"
  rootfs="$work/rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED  # pip installs into the system python, as in the PyTorch image
  tar -C "$rootfs" -c . | podman import - "$base"
  rm -rf "$rootfs"
fi

# 2. The image, from a fresh clone of this checkout's commit: the image's /app must be a git
# repository of its own (a worktree's .git is only a pointer to a folder the build cannot see).
say "building $image"
rm -rf "$work/src"
git clone -q "$root" "$work/src"
podman build --build-arg BASE="$base" -t "$image" "$work/src"

# 3. Data as a user mounts it at /data, and an output folder the user owns.
data="$work/data" out="$work/out" args="$work/args"
rm -rf "$data" "$out" "$args"
"$root/.venv/bin/python" -c "from pathlib import Path; from cnn_factory.data.example import make_example; \
make_example(Path('$data'), rows=48, size=(64, 64), seed=0)"
mkdir -p "$out" "$args"
chown -R "$user" "$out"
run=(podman run --rm -u "$user" -v "$data:/data:ro" -v "$out:/out")

say "the original cnn-factory's command"
"${run[@]}" "$image" --modelname my-model --csv /data/data.csv --batch-size 4 --num-augs 1 \
  --num-epochs 1 --output-path /out/models/ --shuffle-data --learning-rate 0.0001 2>&1 | tee "$work/original.log"
test -f "$out/models/my-model.pt"
test "$(stat -c %u:%g "$out/models/my-model.pt")" = "$user"
test ! -e "$out/work/data/example" || { say "the built-in example was generated beside --csv"; exit 1; }
! grep -q "No file hash info found" "$work/original.log" || { say "DVC's missing-hash warning is back"; exit 1; }

say "ARGS_FILE"
printf '%s\n' '["--modelname", "from-args", "--csv", "/data/data.csv", "--num-epochs", "1", "--output-path", "/out/models/"]' \
  > "$args/train.args.json"
"${run[@]}" -v "$args:/args:ro" -e ARGS_FILE=/args/train.args.json "$image"
test -f "$out/models/from-args.pt"

say "--read-only (no tmpfs either: nothing may be written outside /out)"
"${run[@]}" --read-only --read-only-tmpfs=false "$image" --modelname read-only --csv /data/data.csv \
  --num-epochs 1 --output-path /out/models/
test -f "$out/models/read-only.pt"

say "serve"
podman rm -f cnn-factory-check-serve > /dev/null 2>&1 || true
podman run -d --name cnn-factory-check-serve -u "$user" --read-only --read-only-tmpfs=false -v "$out:/out" \
  -p 127.0.0.1:18000:8000 "$image" serve /out/models/my-model.pt --host 0.0.0.0 > /dev/null
trap 'podman rm -f cnn-factory-check-serve > /dev/null 2>&1 || true' EXIT
for _ in $(seq 120); do curl -sf http://127.0.0.1:18000/ping > /dev/null && break; sleep 1; done
curl -sf -F image=@"$data/images/0000.png" http://127.0.0.1:18000/predict \
  | python3 -c 'import json, sys; answer = json.load(sys.stdin); assert {"round", "majority"} <= set(answer["outputs"])'
curl -sf --data-binary @"$data/images/0000.png" -H 'Content-Type: image/png' http://127.0.0.1:18000/infer \
  -o "$work/mask.png"
python3 -c "import sys; sys.exit(open('$work/mask.png', 'rb').read(8) != b'\x89PNG\r\n\x1a\n')"
say "passed"
