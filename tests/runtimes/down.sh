#!/usr/bin/env bash
# Stop what up.sh started (by the pids it recorded) after removing leftover test pods and
# containers. Leaves images and the venv for the next run.
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
cd "$NSL_RT" 2>/dev/null || exit 0
export CONTAINERS_CONF="$HERE/containers.conf"
podman ps -a --format '{{.Names}}' 2>/dev/null | grep '^nsl' | xargs -r podman rm -f -t 0 >/dev/null 2>&1
podman pod ps --format '{{.Name}}' 2>/dev/null | grep '^nsl' | xargs -r podman pod rm -f -t 0 >/dev/null 2>&1
if [ -f dockerd.pid ]; then
  /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" ps -aq 2>/dev/null | xargs -r /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" rm -f >/dev/null 2>&1
  P=$(cat dockerd.pid); kill "$P" 2>/dev/null; for _ in $(seq 50); do kill -0 "$P" 2>/dev/null || break; sleep 0.2; done
  rm -f dockerd.pid
fi
if [ -f containerd.pid ]; then
  [ -S "$NSL_CTD_SOCK" ] && NETSLEUTH_CRI_STUBS="$NSL_RT" venv/bin/python "$HERE/cri_client.py" "$NSL_CTD_SOCK" rmall >/dev/null 2>&1
  P=$(cat containerd.pid); kill "$P" 2>/dev/null; for _ in $(seq 50); do kill -0 "$P" 2>/dev/null || break; sleep 0.2; done
  rm -f containerd.pid
fi
ip link del nsl-cni0 2>/dev/null
true
