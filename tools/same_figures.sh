#!/usr/bin/env bash
# Runs the pipeline at two commits on the same seeds and compares their metrics files byte for byte:
# the built-in example, the same images in patch mode, and the volume example, each shortened so
# that the three take a few minutes a commit. A refactoring that changes no figure leaves them equal.
#
#   bash tools/same_figures.sh 671a083 HEAD        # "same" or the differing files; exit status 1 if any
#
# Each commit runs in its own clone under $WORK (default /tmp/same-figures) with this checkout's
# .venv and the clone's own src first on PYTHONPATH, so no second environment is installed; a
# commit's finished runs are kept there and not run again.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${WORK:-/tmp/same-figures}"
python="$here/.venv/bin/python"
export PATH="$here/.venv/bin:$PATH"

# name: the params file (relative to the clone) and the keys set over it (dotted=YAML value)
runs=(
  "images params.yaml train.epochs=4"
  "patches params.yaml train.epochs=3 inputs.image.mode=patch inputs.image.size=[32,32] outputs.round.size=[32,32] outputs.angular.size=[32,32] train.patches_per_epoch=128"
  "volumes examples/volumes/params.yaml train.epochs=3 example.rows=24"
)

set_params() {  # file key=value ...: the values parsed as YAML, comments kept where ruamel can
  "$python" - "$@" <<'EOF'
import sys, yaml
path, pairs = sys.argv[1], sys.argv[2:]
params = yaml.safe_load(open(path))
for pair in pairs:
    key, value = pair.split("=", 1)
    *parents, last = key.split(".")
    node = params
    for p in parents:
        node = node[p]
    node[last] = yaml.safe_load(value)
yaml.safe_dump(params, open(path, "w"), sort_keys=False)
EOF
}

differ=0
# resolved once: a commit made while the runs go on moves HEAD, not the comparison
a="$(git -C "$here" rev-parse --short "$1")"
b="$(git -C "$here" rev-parse --short "$2")"
for sha in "$a" "$b"; do
  for run in "${runs[@]}"; do
    read -r name file sets <<<"$run"
    clone="$work/$sha-$name"
    # a commit's run is kept: a second comparison with it runs only the other commit
    if [ -f "$clone/eval/metrics.json" ] && [ "$(cat "$clone/.same-figures-run" 2>/dev/null)" = "$run" ]; then
      continue
    fi
    rm -rf "$clone"
    git clone -q "$here" "$clone"
    git -C "$clone" checkout -q "$sha"
    (
      cd "$clone"
      [ "$file" = params.yaml ] || cp "$file" params.yaml
      # shellcheck disable=SC2086
      set_params params.yaml $sets
      PYTHONPATH="$clone/src:$clone" dvc repro -q >"$work/$sha-$name.log" 2>&1 \
        || { echo "$sha $name: dvc repro failed, see $work/$sha-$name.log"; exit 1; }
      echo "$run" >.same-figures-run
    )
  done
done
for run in "${runs[@]}"; do
  read -r name _ <<<"$run"
  for f in eval/metrics.json eval/figures.json; do
    if cmp -s "$work/$a-$name/$f" "$work/$b-$name/$f"; then
      echo "$name $f: same"
    else
      echo "$name $f: DIFFERS"
      differ=1
    fi
  done
done
exit "$differ"
