#!/bin/sh
# Writes the project's podman configuration into $1 (make podman-config; the Makefile points CONTAINERS_CONF
# and CONTAINERS_STORAGE_CONF at these files, so nothing host-wide changes). Image layers, named volumes and
# podman's database live under $1/storage, outside the clone: later runs and fresh clones reuse the layers.
# Why each setting: docs/containers.md ("Podman here").
set -eu
dir=$1
mkdir -p "$dir/storage"
run=${XDG_RUNTIME_DIR:-/tmp}/bayes-beats-containers-$(id -u)
# Containers inherit these limits; podman's defaults (nofile 1048576) exceed the hard limits here and root
# cannot raise them, so every run would fail: cap at the hard limits (nproc at most kernel.pid_max).
nofile=$(ulimit -H -n)
nproc=$(bash -c 'ulimit -H -u')
pid_max=$(cat /proc/sys/kernel/pid_max)
[ "$nofile" = unlimited ] && nofile=1048576
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
cat > "$dir/storage.conf.tmp" <<CONF
# written by docker/podman-config.sh (make podman-config)
[storage]
driver = "overlay"
graphroot = "$dir/storage"
runroot = "$run/storage"
CONF
cat > "$dir/containers.conf.tmp" <<CONF
# written by docker/podman-config.sh (make podman-config)
[containers]
# host networking only: a bridge makes netavark add firewall rules and turn on IP forwarding on the host
netns = "host"
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
# crun 1.8.1 fails here ("cgroups in hybrid mode not supported"); runc works
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = "$run/libpod"
static_dir = "$dir/storage/libpod"
volume_path = "$dir/storage/volumes"

[network]
network_backend = "netavark"
CONF
mv "$dir/storage.conf.tmp" "$dir/storage.conf"
mv "$dir/containers.conf.tmp" "$dir/containers.conf"
echo "podman config in $dir (nofile=$nofile nproc=$nproc)"
