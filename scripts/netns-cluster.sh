#!/usr/bin/env bash
# Separate hosts on one machine, for Corral's Ray backend: a Ray cluster whose workers are network namespaces.
#
#   scripts/netns-cluster.sh up [HOSTS]   # prints the Ray address (198.18.0.1:PORT) once every host has joined
#   scripts/netns-cluster.sh down
#   scripts/netns-cluster.sh restart N    # host N boots again (what ran there ends; a new, empty node disk)
#   scripts/netns-cluster.sh kill-ray N   # host N's Ray processes are SIGKILLed (nothing else there)
#   scripts/netns-cluster.sh add RESOURCES CPUS  # a new host (number 11 on) joins; prints its address
#   scripts/netns-cluster.sh remove IP    # that host is switched off: everything in it ends, it is gone
#
# `up` makes a bridge (198.18.0.1/24, the benchmarking range: no other address is used) and one network
# namespace per host (198.18.0.11, .12, ...), starts the Ray head in this namespace (no CPUs, so it takes no
# jobs) and one Ray worker in each host, offering the resource `corral_node`. Each host also gets its own node
# disk: a tmpfs at CORRAL_RAY_NODE_ROOT in a mount namespace of its own, so nothing on it is seen from here, and
# its own hostname (crl-h1, ...: OpenMPI takes ranks on machines of one hostname for neighbours in memory).
# Processes are stopped by pid (never `ray stop`, which stops every Ray process on the machine).
#
# The head runs Ray's autoscaler with a node provider that makes hosts (scripts/netns_node_provider.py: `add` and
# `remove` above): a node type `corral-auto` offering `corral_auto` (AUTOSCALE_MAX hosts at most, 2; idle ones
# go after AUTOSCALE_IDLE_MINUTES, 0.1). A Corral server with CORRAL_RAY_NODE_RESOURCE=corral_auto sees only
# those hosts, so its clusters grow and shrink through Ray's autoscaler; the `up` hosts are not the autoscaler's.
# Needs root, `ip` and `unshare`; Ray from .venv (or $RAY).
#
# Settings: NETNS_STATE (default /tmp/corral-netns), NETNS_PREFIX (crl), RAY_PORT (6390), HOST_CPUS (2),
# HOST_MEMORY (bytes, 1 GiB), CORRAL_RAY_NODE_ROOT (/var/lib/corral-node).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STATE=${NETNS_STATE:-/tmp/corral-netns}
PREFIX=${NETNS_PREFIX:-crl}
PORT=${RAY_PORT:-6390}
RAY=${RAY:-$PWD/.venv/bin/ray}
PYTHON=${PYTHON:-$PWD/.venv/bin/python}
NODE_ROOT=${CORRAL_RAY_NODE_ROOT:-/var/lib/corral-node}
BRIDGE=${PREFIX}-br0
HEAD_IP=198.18.0.1
export RAY_USAGE_STATS_ENABLED=0

host_ip() { echo "198.18.0.$((10 + $1))"; }

# Every process of a session (a Ray node started with setsid is one).
session_pids() {
  local sid=$1 pid
  for pid in /proc/[0-9]*; do
    pid=${pid#/proc/}
    [ "$(awk '{print $6}' "/proc/$pid/stat" 2>/dev/null)" = "$sid" ] && echo "$pid"
  done
  return 0
}

# End everything running in the host namespace $1 (its Ray worker and whatever it started, jobs included), and
# delete the namespace.
end_host() {
  local pids tries
  for tries in 1 2 3 4 5 6 7 8 9 10; do
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    [ -z "$pids" ] && break
    kill -9 $pids 2>/dev/null || true
    sleep 0.2
  done
  ip netns delete "$1" 2>/dev/null || true
}

down() {
  local ns pid link
  for ns in $(ip netns list | awk '{print $1}' | grep "^${PREFIX}-h" || true); do end_host "$ns"; done
  if [ -f "$STATE/head.pid" ]; then
    for pid in $(session_pids "$(cat "$STATE/head.pid")"); do kill -9 "$pid" 2>/dev/null || true; done
  fi
  # The hosts' links go with their namespaces, but not at once: delete what is left by name.
  for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${PREFIX}-" || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  rm -rf "$STATE"
}

# Host $1's namespace and its link to the bridge.
make_host() {
  local ns=${PREFIX}-h$1
  ip netns add "$ns"
  ip link add "${PREFIX}-v$1" type veth peer name eth0 netns "$ns"
  ip link set "${PREFIX}-v$1" master "$BRIDGE" up
  ip -n "$ns" addr add "$(host_ip "$1")/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

# Start host $1's Ray worker (its node disk a new, empty tmpfs: a machine that boots), offering the resources $2
# (JSON; corral_node by default) and $3 CPUs.
start_host() {
  local i=$1 resources=${2:-'{"corral_node": 1}'} cpus=${3:-${HOST_CPUS:-2}}
  # A host cut off from the head for this long has its raylet exit, and with it the Corral agent, whose fence
  # then ends the jobs' processes there (Ray's default is 60 s; docs/ray.md).
  RAY_gcs_rpc_server_reconnect_timeout_s=${RAY_gcs_rpc_server_reconnect_timeout_s:-5} \
  setsid ip netns exec "${PREFIX}-h$i" unshare --mount --uts --propagation private sh -c "
    hostname '${PREFIX}-h$i' && mount -t tmpfs -o size=512m,mode=0755 corral-node '$NODE_ROOT' &&
    exec '$RAY' start --block --address '$HEAD_IP:$PORT' --node-ip-address '$(host_ip "$i")' \
      --num-cpus $cpus --memory ${HOST_MEMORY:-1073741824} --object-store-memory 80000000 \
      --resources '$resources' --disable-usage-stats --temp-dir '$STATE/h$i'" \
    >>"$STATE/h$i.log" 2>&1 &
  echo $! >"$STATE/h$i.pid"
}

# Wait until the hosts $1 (comma-separated numbers) are alive in the Ray cluster.
wait_joined() {
  "$PYTHON" - "$HEAD_IP:$PORT" "$1" <<'EOF'
import logging, sys, time
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
wanted = {f"198.18.0.{10 + int(i)}" for i in sys.argv[2].split(",")}
deadline = time.monotonic() + 90
while not wanted <= {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("corral_node")}:
    assert time.monotonic() < deadline, "the hosts did not join the Ray cluster"
    time.sleep(0.2)
EOF
}

# Host $1 boots again: whatever still runs there ends, its Ray worker starts on a new node disk.
restart_host() {
  local pids
  ip link set "${PREFIX}-v$1" up
  pids=$(ip netns pids "${PREFIX}-h$1" 2>/dev/null || true)
  [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
  start_host "$1"
  wait_joined "$1"
}

# Ray's autoscaler's settings: hosts of the type corral-auto are made and removed by this script.
autoscaling_config() {
  local max=${AUTOSCALE_MAX:-2}
  cat >"$STATE/autoscaler.yaml" <<EOF
cluster_name: corral-netns
max_workers: $max
upscaling_speed: 10
idle_timeout_minutes: ${AUTOSCALE_IDLE_MINUTES:-0.1}
provider: {type: external, module: netns_node_provider.NetnsNodeProvider, head_ip: $HEAD_IP,
           disable_node_updaters: true, disable_launch_config_check: true}
auth: {ssh_user: root}
file_mounts: {}
cluster_synced_files: []
file_mounts_sync_continuously: false
rsync_exclude: []
rsync_filter: []
initialization_commands: []
setup_commands: []
head_setup_commands: []
worker_setup_commands: []
head_start_ray_commands: []
worker_start_ray_commands: []
head_node_type: ray.head.default
available_node_types:
  ray.head.default: {resources: {}, node_config: {}, max_workers: 0}
  corral-auto: {resources: {CPU: ${HOST_CPUS:-2}, corral_auto: 1}, node_config: {}, min_workers: 0, max_workers: $max}
EOF
  echo "$STATE/autoscaler.yaml"
}

# A new host, numbered from 11 (the `up` hosts keep 1 to 10), offering the resources $1 (JSON) and $2 CPUs.
add_host() {
  local i=11
  exec 9>"$STATE/add.lock"
  flock 9
  while [ -e "$STATE/h$i.pid" ] || ip netns list | grep -q "^${PREFIX}-h$i\\b"; do i=$((i + 1)); done
  make_host "$i"
  start_host "$i" "$1" "$2"
  flock -u 9
  host_ip "$i"
}

# Switch off the host with address $1: everything in it ends, its namespace and link go.
remove_host() {
  local i=$((${1##*.} - 10))
  end_host "${PREFIX}-h$i"
  ip link delete "${PREFIX}-v$i" 2>/dev/null || true
  rm -rf "$STATE/h$i.pid" "$STATE/h$i"
}

up() {
  local hosts=${1:-2} i
  [ "$(id -u)" = 0 ] || { echo "netns-cluster: needs root (network and mount namespaces)" >&2; exit 2; }
  down
  mkdir -p "$STATE" "$NODE_ROOT"
  ip link add "$BRIDGE" type bridge
  ip addr add "$HEAD_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # A machine that stops answering is declared dead after ~3 s instead of ~15 s (docs/ray.md).
  RAY_health_check_period_ms=${RAY_health_check_period_ms:-1000} \
  RAY_health_check_timeout_ms=${RAY_health_check_timeout_ms:-1000} \
  RAY_health_check_failure_threshold=${RAY_health_check_failure_threshold:-3} \
  AUTOSCALER_UPDATE_INTERVAL_S=1 PYTHONPATH="$PWD/scripts" NETNS_SCRIPT="$PWD/scripts/netns-cluster.sh" \
  setsid "$RAY" start --head --block --node-ip-address "$HEAD_IP" --port "$PORT" --num-cpus 0 \
    --autoscaling-config "$(autoscaling_config)" \
    --object-store-memory 100000000 --include-dashboard false --disable-usage-stats \
    --temp-dir "$STATE/head" >"$STATE/head.log" 2>&1 &
  echo $! >"$STATE/head.pid"
  for i in $(seq 1 "$hosts"); do make_host "$i"; done
  "$PYTHON" - "$HEAD_IP:$PORT" 0 <<'EOF'
import sys, time
deadline = time.monotonic() + 60
while True:  # the head's GCS answers
    import socket
    try:
        socket.create_connection(tuple(sys.argv[1].rsplit(":", 1)), timeout=1).close()
        break
    except OSError:
        assert time.monotonic() < deadline, "the Ray head did not start"
        time.sleep(0.2)
EOF
  for i in $(seq 1 "$hosts"); do start_host "$i"; done
  wait_joined "$(seq -s, 1 "$hosts")"
  echo "$HEAD_IP:$PORT"
}

# Host $1's Ray dies: SIGKILL its Ray processes (the session its `ray start` leads: raylet, workers, the Corral
# agent), nothing else (the jobs' processes, in sessions of their own, are the agent's fence's to end).
kill_ray() {
  local pid
  for pid in $(session_pids "$(cat "$STATE/h$1.pid")"); do kill -9 "$pid" 2>/dev/null || true; done
}

case "${1:-}" in
  up) up "${2:-2}" ;;
  down) down ;;
  restart) restart_host "$2" ;;
  kill-ray) kill_ray "$2" ;;
  add) add_host "$2" "$3" ;;
  remove) remove_host "$2" ;;
  *) echo "usage: $0 up [HOSTS] | down | restart HOST | kill-ray HOST | add RESOURCES CPUS | remove IP" >&2; exit 2 ;;
esac
