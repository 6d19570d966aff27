#!/usr/bin/env bash
# Signed-hook intake: cigw's `POST /hooks/github` beside adnanh/webhook (Debian `webhook`), with the
# same GitHub-signed ~8 KB push payload (crates/cigw/tests/resources/hooks/github-push.json, compact),
# the same rule (event `push` to a branch, signature checked) and `/bin/true` as webhook's command,
# both driven by `wrk` with the same script (every request a new X-GitHub-Delivery) in one run.
#
# cigw stores each delivery and its trigger (SQLite, default durability) and answers 202; its runs'
# dispatch is delayed by an hour so the figure is intake alone. webhook verifies, matches and runs
# /bin/true (it answers once the command has been started).
#   DURATION=10s CONNECTIONS=16 scripts/bench.d/hooks.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-16}
THREADS=${THREADS:-2}
SECRET=bench-hook-secret

need() {
  command -v "$1" >/dev/null 2>&1 && return
  echo "   installing $2 (apt-get)"
  if [[ $(id -u) -eq 0 ]]; then apt-get install -y -qq "$2" >/dev/null; else sudo apt-get install -y -qq "$2" >/dev/null; fi
}
need wrk wrk
need webhook webhook
need openssl openssl

# CIGW=path/to/cigw measures another build (e.g. one already built); the default is a release build.
if [[ -z ${CIGW-} ]]; then
  cargo build --release --quiet -p cigw
  CIGW=target/release/cigw
fi

dir=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The payload GitHub would send (compact JSON) and its signature.
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])), separators=(",",":")), end="")' \
  crates/cigw/tests/resources/hooks/github-push.json > "$dir/push.json"
SIG="sha256=$(openssl dgst -sha256 -hmac "$SECRET" < "$dir/push.json" | sed 's/^.* //')"
export BODY_FILE="$dir/push.json" SIG

cigw_port=$(free_port)
cat > "$dir/cigw.toml" <<TOML
[server]
listen = "127.0.0.1:$cigw_port"
[database]
url = "sqlite://$dir/cigw.db"
[timings]
dispatch_delay = "1h"
[providers.circleci.bench]
base_url = "http://127.0.0.1:9/api/v2"
token = "bench-circleci-token"
[targets.api-build]
provider = "circleci"
account = "bench"
project_slug = "gh/acme/api"
[hooks.github]
scheme = "github"
secrets = ["$SECRET"]
[[hooks.github.rules]]
name = "push-to-branch"
all = [{ header = "X-GitHub-Event", equals = "push" }, { pointer = "/ref", glob = "refs/heads/*" }]
targets = ["api-build"]
ref = { branch = "{{ body.ref | branch }}" }
TOML
CIGW_LOG=warn "$CIGW" serve --config "$dir/cigw.toml" 2>"$dir/cigw.log" &
pids+=($!)

webhook_port=$(free_port)
cat > "$dir/hooks.json" <<JSON
[{
  "id": "github",
  "execute-command": "/bin/true",
  "trigger-rule": {"and": [
    {"match": {"type": "payload-hmac-sha256", "secret": "$SECRET",
               "parameter": {"source": "header", "name": "X-Hub-Signature-256"}}},
    {"match": {"type": "value", "value": "push", "parameter": {"source": "header", "name": "X-GitHub-Event"}}},
    {"match": {"type": "regex", "regex": "^refs/heads/", "parameter": {"source": "payload", "name": "ref"}}}
  ]}
}]
JSON
webhook -hooks "$dir/hooks.json" -ip 127.0.0.1 -port "$webhook_port" >"$dir/webhook.log" 2>&1 &
pids+=($!)

cat > "$dir/hook.lua" <<'LUA'
-- Every request: the signed push with a new delivery id (so cigw's dedupe never short-circuits).
local body = io.open(os.getenv("BODY_FILE"), "rb"):read("*a")
local sig = os.getenv("SIG")
local run = tostring(os.time())
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  local headers = {
    ["Host"] = wrk.headers["Host"],
    ["Content-Type"] = "application/json",
    ["X-GitHub-Event"] = "push",
    ["X-Hub-Signature-256"] = sig,
    ["X-GitHub-Delivery"] = run .. "-" .. tid .. "-" .. n,
  }
  return wrk.format("POST", nil, headers, body)
end
LUA

wait_up() {
  for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return; sleep 0.1; done
  echo "   $2 did not come up" >&2; exit 1
}
wait_up "http://127.0.0.1:$cigw_port/healthz" cigw
wait_up "http://127.0.0.1:$webhook_port/" webhook

# One request each first: both must accept the delivery, or the figures mean nothing.
probe() {
  curl -s -w ' HTTP %{http_code}' -X POST "$1" -H 'Content-Type: application/json' -H 'X-GitHub-Event: push' \
    -H "X-GitHub-Delivery: probe-$RANDOM" -H "X-Hub-Signature-256: $SIG" --data-binary "@$BODY_FILE"
}
cigw_probe=$(probe "http://127.0.0.1:$cigw_port/hooks/github")
webhook_probe=$(probe "http://127.0.0.1:$webhook_port/hooks/github")
[[ $cigw_probe == *'"matched":true'*'HTTP 202' ]] || { echo "cigw refused the probe: $cigw_probe" >&2; exit 1; }
[[ $webhook_probe == *'HTTP 200' && $webhook_probe != *'not satisfied'* ]] \
  || { echo "webhook refused the probe: $webhook_probe" >&2; exit 1; }

measure() {
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$dir/hook.lua" "$1" > "$dir/$2.wrk"
  local rps p50 p99 bad
  rps=$(awk '/^Requests\/sec/ {print $2}' "$dir/$2.wrk")
  p50=$(awk '$1 == "50%" {print $2}' "$dir/$2.wrk")
  p99=$(awk '$1 == "99%" {print $2}' "$dir/$2.wrk")
  bad=$(awk '/Non-2xx/ {print $NF}' "$dir/$2.wrk")
  printf '   %-28s %10s req/s   p50 %8s   p99 %8s   non-2xx %s\n' "$3" "$rps" "$p50" "$p99" "${bad:-0}"
}
echo "   payload $(wc -c < "$BODY_FILE") bytes, $THREADS threads, $CONNECTIONS connections, $DURATION each (machine: $(nproc) cores)"
measure "http://127.0.0.1:$cigw_port/hooks/github" cigw "cigw (stores + 202)"
measure "http://127.0.0.1:$webhook_port/hooks/github" webhook "webhook $(webhook -version | awk '{print $3}') (/bin/true)"
stored=$(sqlite3 "$dir/cigw.db" 'SELECT COUNT(*) FROM hook_deliveries' 2>/dev/null || echo '?')
echo "   cigw stored $stored deliveries, each with its trigger"
