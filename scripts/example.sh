#!/usr/bin/env bash
# The README's "install and run the main job" command. On a fresh machine with
# no internet it: installs everything, builds two small sample images (sharing
# a base layer), serves them from a registry on 127.0.0.1, materializes them
# into a workflow dir, stops the registry, re-stages them offline into a second
# workflow dir, deploys them into Docker (and Podman) from there, runs one, and
# prints the provenance YAML.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-host.sh

WORK="$(pwd)/example-work"
rm -rf "$WORK"
mkdir -p "$WORK/build/base" "$WORK/build/tool" "$WORK/registry"
WL=.venv/bin/wfexs-like
say() { printf '\n== %s\n' "$*" >&2; }

PORT=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/registry/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $WORK/registry/data}}
http: {addr: 127.0.0.1:$PORT}
YML
say "starting a registry on 127.0.0.1:$PORT"
env -u AWS_CA_BUNDLE docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry/log" 2>&1 &
REG_PID=$!
trap 'kill $REG_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null || { cat "$WORK/registry/log" >&2; exit 1; }

REPO="127.0.0.1:$PORT/wfexs-like"
say "building sample images $REPO/{base,tool}"
cp /bin/busybox "$WORK/build/base/busybox"
printf 'FROM scratch\nCOPY busybox /bin/busybox\nCMD ["/bin/busybox","sh"]\n' >"$WORK/build/base/Dockerfile"
build() { docker build -q -t "$1" "$2" >"$WORK/build/log" 2>&1 || { cat "$WORK/build/log" >&2; exit 1; }; }
build "$REPO/base:1.0" "$WORK/build/base"
printf 'FROM %s\nCOPY greeting /etc/greeting\nCMD ["/bin/busybox","cat","/etc/greeting"]\n' "$REPO/base:1.0" \
  >"$WORK/build/tool/Dockerfile"
echo "hello from a container materialized by wfexs-like" >"$WORK/build/tool/greeting"
build "$REPO/tool:2.1" "$WORK/build/tool"
docker push -q "$REPO/base:1.0" >/dev/null
docker push -q "$REPO/tool:2.1" >/dev/null
docker rmi -f "$REPO/base:1.0" "$REPO/tool:2.1" >/dev/null

export WFEXS_LIKE_CACHE_DIR="$WORK/cache"
say "materialize into workflow 1 (from the registry)"
$WL materialize "$REPO/base:1.0" "$REPO/tool:2.1" --engine docker \
  --stage-dir "$WORK/wf1/containers" -o "$WORK/wf1/containers.yaml"

say "materialize the tool as a SIF for Apptainer/Singularity (built natively, no apptainer needed)"
$WL materialize "docker://$REPO/tool:2.1" --engine singularity \
  --stage-dir "$WORK/wf1/singularity" -o "$WORK/wf1/singularity.yaml"
for sif in "$WORK"/wf1/singularity/*; do
  case "$sif" in *_meta.json) ;; *) siftool list "$sif" ;; esac
done

say "stopping the registry; re-staging offline into workflow 2"
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true
$WL materialize "$REPO/base:1.0" "$REPO/tool:2.1" --engine docker --offline \
  --stage-dir "$WORK/wf2/containers" -o "$WORK/wf2/containers.yaml"

say "deploying workflow 2's containers into Docker and Podman"
$WL deploy "$WORK/wf2/containers.yaml" --engine docker --stage-dir "$WORK/wf2/containers"
$WL deploy "$WORK/wf2/containers.yaml" --engine podman --stage-dir "$WORK/wf2/containers"
say "running the tool image with Docker (no network)"
docker run --rm --network none "$REPO/tool:2.1"

say "provenance of workflow 2 ($WORK/wf2/containers.yaml)"
cat "$WORK/wf2/containers.yaml"
