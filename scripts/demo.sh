#!/usr/bin/env bash
# Set everything up and run the demo: a 2-node local cluster trains scikit-learn models on the digits data.
# Uses its own server home (.corral-demo/) and port, so it never touches your ~/.corral.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CORRAL_HOME="$PWD/.corral-demo"
export CORRAL_SERVER="${CORRAL_DEMO_SERVER:-http://127.0.0.1:8799}"
corral() { .venv/bin/corral "$@"; }
trap 'corral server stop --home "$CORRAL_HOME" >/dev/null 2>&1 || true' EXIT
corral server status >/dev/null 2>&1 || corral server start --background --port "${CORRAL_SERVER##*:}"

step() { printf '\n\033[1m$ corral %s\033[0m\n' "$*"; corral "$@"; }

corral cluster show demo >/dev/null 2>&1 || step cluster create -f examples/sklearn-digits/cluster.yaml
step cluster node list demo
printf '\n\033[1m$ corral job create -f examples/sklearn-digits/job.yaml\033[0m\n'
name=$(corral job create -f examples/sklearn-digits/job.yaml)
echo "$name"
step job logs "$name" --follow
step job wait "$name"
step job logs "$name" --node 1
step job show "$name"
step job metrics "$name"
step job files "$name" --output MODEL
step job download "$name" .corral-demo/ --output MODEL --path metrics-node0.json
cat .corral-demo/metrics-node0.json; echo
printf '\nDemo done. The server stops now; its state stays in .corral-demo/.\n'
printf 'A running server also serves a web portal at its address (here %s/): sign in with the token in %s/token.\n' \
  "$CORRAL_SERVER" "$CORRAL_HOME"
