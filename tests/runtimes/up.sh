#!/usr/bin/env bash
# Start the container runtimes the attribution tests use, idempotently: builds local images
# (no registry), a Python CRI client venv, starts containerd with its own config/state/CNI
# (198.19.64.0/20 only) and dockerd with no bridge, both recorded by pid for down.sh.
# Podman needs no daemon: tests run it with CONTAINERS_CONF=tests/runtimes/containers.conf.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
mkdir -p "$NSL_RT/cni"
cd "$NSL_RT"

# Images: busybox rootfs + static pause.
if [ ! -f busybox-image.tar ] || [ ! -f pause-image.tar ]; then
  rm -rf rootfs && mkdir -p rootfs/{bin,etc,proc,sys,dev,tmp,run,root}
  cp /bin/busybox rootfs/bin/busybox
  for a in $(rootfs/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "rootfs/bin/$a"; done
  gcc -static -Os -s -o rootfs/pause "$HERE/pause.c"
  echo 'root:x:0:0:root:/root:/bin/sh' > rootfs/etc/passwd; echo 'root:x:0:' > rootfs/etc/group
  tar -C rootfs -cf rootfs.tar .
  python3 "$HERE/mkimage.py" rootfs localhost/pause:test pause-image.tar.tmp /pause && mv pause-image.tar.tmp pause-image.tar
  python3 "$HERE/mkimage.py" rootfs localhost/busybox:test busybox-image.tar.tmp && mv busybox-image.tar.tmp busybox-image.tar
fi

# CRI client: grpcio in a venv, stubs generated from the minimal proto.
if [ ! -f venv/ok ]; then
  python3 -m venv venv
  venv/bin/pip install -q grpcio grpcio-tools
  touch venv/ok
fi
if [ ! -f cri_min_pb2_grpc.py ] || [ "$HERE/cri_min.proto" -nt cri_min_pb2_grpc.py ]; then
  cp "$HERE/cri_min.proto" .
  venv/bin/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. cri_min.proto
fi

# containerd.
sed -e "s#@ROOT@#$NSL_CTD_ROOT#g" -e "s#@STATE@#$NSL_CTD_STATE#g" -e "s#@SOCK@#$NSL_CTD_SOCK#g" \
    -e "s#@RT@#$NSL_RT#g" "$HERE/containerd.toml.in" > containerd.toml
cp "$HERE/10-nsltest.conflist" cni/
if ! { [ -f containerd.pid ] && kill -0 "$(cat containerd.pid)" 2>/dev/null; }; then
  containerd --config "$NSL_RT/containerd.toml" >containerd.log 2>&1 &
  echo $! > containerd.pid
fi
for _ in $(seq 100); do ctr --address "$NSL_CTD_SOCK" version >/dev/null 2>&1 && break; sleep 0.1; done
ctr --address "$NSL_CTD_SOCK" version >/dev/null
for img in pause busybox; do
  ctr --address "$NSL_CTD_SOCK" -n k8s.io images ls -q | grep -qx "localhost/$img:test" ||
    ctr --address "$NSL_CTD_SOCK" -n k8s.io images import "$img-image.tar" >/dev/null
done

# podman: an image from the rootfs.
export CONTAINERS_CONF="$HERE/containers.conf"
podman image exists localhost/bbtest:1 || podman import -q rootfs.tar localhost/bbtest:1 >/dev/null

# dockerd (required: the Docker attribution tests need it), on our containerd, without a
# bridge (its default would be 172.17/16) and without touching iptables.
if ! { [ -f dockerd.pid ] && kill -0 "$(cat dockerd.pid)" 2>/dev/null; }; then
  command -v dockerd >/dev/null || { echo "up.sh: dockerd is not installed (tests/setup installs docker.io)" >&2; exit 1; }
  mkdir -p "$NSL_DOCKER_EXEC"
  dockerd --containerd="$NSL_CTD_SOCK" --data-root "$NSL_DOCKER_ROOT" --exec-root "$NSL_DOCKER_EXEC" \
    --pidfile "$NSL_RT/dockerd.pidfile" -H "unix://$NSL_DOCKER_SOCK" --bridge=none --iptables=false \
    --ip-masq=false --ip-forward=false >dockerd.log 2>&1 &
  echo $! > dockerd.pid
fi
for _ in $(seq 150); do /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" info >/dev/null 2>&1 && break; sleep 0.2; done
if ! /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" info >/dev/null 2>&1; then
  echo "up.sh: dockerd did not start; its log ($NSL_RT/dockerd.log) ends:" >&2
  tail -n 20 dockerd.log >&2
  exit 1
fi
/usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" image inspect localhost/bb:docker >/dev/null 2>&1 || {
  /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" load -i busybox-image.tar >/dev/null &&
    /usr/bin/docker -H "unix://$NSL_DOCKER_SOCK" tag localhost/busybox:test localhost/bb:docker; }
echo "runtimes up: containerd pid $(cat containerd.pid), dockerd pid $(cat dockerd.pid)"
