# Paths shared by up.sh, down.sh and tests/attribution.rs (which reads the same defaults).
NSL_RT=${NSL_RT:-/var/tmp/netsleuth-rt}                     # images, venv, configs, logs, pid files
NSL_CTD_ROOT=/var/lib/netsleuth-containerd                  # containerd root (own, not the system's)
NSL_CTD_STATE=/run/netsleuth-containerd                     # containerd state: task bundles live here
NSL_CTD_SOCK=$NSL_CTD_STATE/containerd.sock
NSL_DOCKER_ROOT=/var/lib/netsleuth-docker
NSL_DOCKER_EXEC=/run/netsleuth-docker
NSL_DOCKER_SOCK=$NSL_DOCKER_EXEC/docker.sock
