#!/usr/bin/env bash
# Separate hosts on one machine, for Corral's Ray backend: a Ray cluster whose workers are network namespaces.
#
#   scripts/netns-cluster.sh up [HOSTS]   # prints the Ray address (198.18.0.1:PORT) once every host has joined
#   scripts/netns-cluster.sh down
#   scripts/netns-cluster.sh restart N    # host N boots again (what ran there ends; a new, empty node disk)
#   scripts/netns-cluster.sh kill-ray N   # host N's Ray processes are SIGKILLed (nothing else there)
#
# `up` makes a bridge (198.18.0.1/24, the benchmarking range: no other address is used) and one network
# namespace per host (198.18.0.11, .12, ...), starts the Ray head in this namespace (no CPUs, so it takes no
# jobs) and one Ray worker in each host, offering the resource `corral_node`. Each host also gets its own node
# disk: a tmpfs at CORRAL_RAY_NODE_ROOT in a mount namespace of its own, so nothing on it is seen from here, and
# its own hostname (crl-h1, ...: OpenMPI takes ranks on machines of one hostname for neighbours in memory).
# Processes are stopped by pid (never `ray stop`, which stops every Ray process on the machine).
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

down() {
  local ns pid link tries
  for ns in $(ip netns list | awk '{print $1}' | grep "^${PREFIX}-h" || true); do
    # Everything running in a host: its Ray worker and whatever it started (jobs included).
    for tries in 1 2 3 4 5 6 7 8 9 10; do
      pids=$(ip netns pids "$ns" 2>/dev/null || true)
      [ -z "$pids" ] && break
      kill -9 $pids 2>/dev/null || true
      sleep 0.2
    done
    ip netns delete "$ns" 2>/dev/null || true
  done
  if [ -f "$STATE/head.pid" ]; then
    for pid in $(session_pids "$(cat "$STATE/head.pid")"); do kill -9 "$pid" 2>/dev/null || true; done
  fi
  # The hosts' links go with their namespaces, but not at once: delete what is left by name.
  for link in $(ip -o link show | awk -F': ' '{print $2}' | cut -d@ -f1 | grep "^${PREFIX}-" || true); do
    ip link delete "$link" 2>/dev/null || true
  done
  rm -rf "$STATE"
}

# Start host $1's Ray worker (its node disk a new, empty tmpfs: a machine that boots).
start_host() {
  local i=$1
  # A host cut off from the head for this long has its raylet exit, and with it the Corral agent, whose fence
  # then ends the jobs' processes there (Ray's default is 60 s; docs/ray.md).
  RAY_gcs_rpc_server_reconnect_timeout_s=${RAY_gcs_rpc_server_reconnect_timeout_s:-5} \
  setsid ip netns exec "${PREFIX}-h$i" unshare --mount --uts --propagation private sh -c "
    hostname '${PREFIX}-h$i' && mount -t tmpfs -o size=512m,mode=0755 corral-node '$NODE_ROOT' &&
    exec '$RAY' start --block --address '$HEAD_IP:$PORT' --node-ip-address '$(host_ip "$i")' \
      --num-cpus ${HOST_CPUS:-2} --memory ${HOST_MEMORY:-1073741824} --object-store-memory 80000000 \
      --resources '{\"corral_node\": 1}' --disable-usage-stats --temp-dir '$STATE/h$i'" \
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

up() {
  local hosts=${1:-2} i ns
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
  setsid "$RAY" start --head --block --node-ip-address "$HEAD_IP" --port "$PORT" --num-cpus 0 \
    --object-store-memory 100000000 --include-dashboard false --disable-usage-stats \
    --temp-dir "$STATE/head" >"$STATE/head.log" 2>&1 &
  echo $! >"$STATE/head.pid"
  for i in $(seq 1 "$hosts"); do
    ns=${PREFIX}-h$i
    ip netns add "$ns"
    ip link add "${PREFIX}-v$i" type veth peer name eth0 netns "$ns"
    ip link set "${PREFIX}-v$i" master "$BRIDGE" up
    ip -n "$ns" addr add "$(host_ip "$i")/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
  done
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
  *) echo "usage: $0 up [HOSTS] | down | restart HOST | kill-ray HOST" >&2; exit 2 ;;
esac
