#!/usr/bin/env bash
# Side-by-side benchmark of tokenway against the peer gateways of ../shared/bench/peers.sh.
#
#   bash bench/run.sh            (what `make bench` runs)
#
# One gateway is measured at a time, always pinned to CPU 1 with the load (wrk / node) and the
# upstream (nginx, the paced sim) on CPU 0; the gateways not under test are frozen with SIGSTOP
# so that they cannot take CPU 1 time from the one that is. Raw outputs go to bench/results/raw,
# the summary to bench/results/summary.json (see bench/README.md).
#
# Environment: GATEWAYS="tokenway portkey litellm" (order / subset), SWEEP=1 adds an open-loop
# rate sweep per gateway (RATES as in peers.sh), PROFILE=0 skips the py-spy profile, SKIP_INSTALL=1,
# ROUNDS=N interleaved peak rounds after the main pass (default 3; 0 skips them).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="${PEERS:-$ROOT/../shared/bench/peers.sh}"
[ -f "$PEERS" ] || PEERS=/work/shared/bench/peers.sh
export BENCH_DIR="${BENCH_DIR:-/tmp/gateway-bench}"
GATEWAYS="${GATEWAYS:-tokenway portkey litellm}"
TW_DIR=/tmp/tokenway-bench # the ledger path in bench/tokenway.yaml lives here
OUT="$ROOT/bench/results"
RAW="$OUT/raw"
TW_PORT=4141
SIM_URL=http://127.0.0.1:18090/v1/chat/completions

cd "$ROOT"
[ "${SKIP_INSTALL:-0}" = 1 ] || bash bench/install-peers.sh
pid_of() { # the process-group leader of a gateway (each runs in its own session)
  case "$1" in
    tokenway) cat "$TW_DIR/tokenway.pid" ;;
    sim) cat "$TW_DIR/sim.pid" ;;
    *) cat "$BENCH_DIR/$1.pid" ;;
  esac
}
signal_group() { local pid; pid=$(pid_of "$2" 2>/dev/null) && kill "-$1" -- "-$pid" 2>/dev/null || true; }

cleanup() {
  for g in tokenway portkey litellm sim; do signal_group CONT "$g"; done
  signal_group TERM tokenway
  signal_group TERM sim
  bash "$PEERS" stop >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A clean slate: whatever an earlier run left behind, and a fresh ledger.
cleanup
rm -rf "$RAW" "$TW_DIR"
mkdir -p "$RAW" "$TW_DIR"
bash "$PEERS" start

# The paced upstream for the TTFT figure, in its own process on the load's CPU.
setsid taskset -c 0 .venv/bin/tokenway sim --config bench/sim.yaml >"$TW_DIR/sim.log" 2>&1 &
echo $! >"$TW_DIR/sim.pid"
for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:18090/" && break; sleep 0.1; done

python3 - "$BENCH_DIR" "$TW_DIR" <<'EOF'
import json, sys
bench, tw = sys.argv[1], sys.argv[2]
msgs = [{"role": "user", "content": "Say hello to the benchmark."}]
for name, model in (("paced-gw.json", "bench-paced"), ("paced-direct.json", "bench-model")):
    body = {"model": model, "max_tokens": 6, "stream": True,
            "stream_options": {"include_usage": True}, "messages": msgs}
    open(f"{tw}/{name}", "w").write(json.dumps(body))
EOF

headers_for() { # the request headers each gateway needs; $2 is the upstream port
  case "$1" in
    tokenway) printf '%s\n' "Authorization: Bearer sk-bench" ;;
    litellm) printf '%s\n' "Authorization: Bearer sk-bench" ;;
    portkey) printf '%s\n' "Authorization: Bearer sk-bench" "x-portkey-provider: openai" \
      "x-portkey-custom-host: http://127.0.0.1:$2/v1" ;;
  esac
}
url_for() {
  case "$1" in
    tokenway) echo "http://127.0.0.1:$TW_PORT/v1/chat/completions" ;;
    litellm) echo "http://127.0.0.1:4000/v1/chat/completions" ;;
    portkey) echo "http://127.0.0.1:8787/v1/chat/completions" ;;
  esac
}
args_for() { # $1 gateway, $2 upstream port, $3 flag name (--header | --gateway-header)
  local h
  while IFS= read -r h; do printf '%s\0%s\0' "$3" "$h"; done < <(headers_for "$1" "$2")
}
rss_kb() { # resident set of the whole process group, in kB
  ps -o rss= --sid "$(pid_of "$1")" | awk '{s += $1} END {print s + 0}'
}

measure() {
  local gw="$1" url; url=$(url_for "$gw")
  local -a peak_args stream_args ovh_args
  mapfile -d '' peak_args < <(args_for "$gw" 18080 --header)
  mapfile -d '' stream_args < <(args_for "$gw" 18081 --header)
  mapfile -d '' ovh_args < <(args_for "$gw" 18080 --gateway-header)
  echo "== $gw: peak (warm-up run, then the measured run)"
  rss_kb "$gw" >"$RAW/rss-idle-$gw.txt" # before its first request
  bash "$PEERS" peak "$url" "${peak_args[@]}" >"$RAW/peak-warmup-$gw.txt" 2>&1
  bash "$PEERS" peak "$url" "${peak_args[@]}" >"$RAW/peak-$gw.txt" 2>&1
  grep -E 'Requests/sec|Non-2xx|Socket errors' "$RAW/peak-$gw.txt" || true
  echo "== $gw: peak, streamed"
  BODY="$BENCH_DIR/body-stream.json" bash "$PEERS" peak "$url" "${stream_args[@]}" \
    >"$RAW/peak-stream-$gw.txt" 2>&1
  grep -E 'Requests/sec|Non-2xx|Socket errors' "$RAW/peak-stream-$gw.txt" || true
  echo "== $gw: added latency"
  bash "$PEERS" overhead "$url" "${ovh_args[@]}" | tee "$RAW/overhead-$gw.json"
  if [ "${SWEEP:-0}" = 1 ]; then
    echo "== $gw: open-loop sweep"
    bash "$PEERS" sweep "$gw" "$url" "${peak_args[@]}" | tee "$RAW/sweep-$gw.jsonl"
  fi
  rss_kb "$gw" >"$RAW/rss-$gw.txt"
  echo "== $gw: RSS after the load: $(cat "$RAW/rss-$gw.txt") kB"
}

ttft() { # streamed TTFT through the gateway vs direct to the paced sim
  local gw="$1" body="$TW_DIR/paced-gw.json" url; url=$(url_for "$gw")
  local -a args
  mapfile -d '' args < <(args_for "$gw" 18090 --gateway-header)
  [ "$gw" = tokenway ] || body="$TW_DIR/paced-direct.json"
  echo "== $gw: streamed TTFT vs the paced upstream"
  taskset -c 0 node bench/ttft.mjs --direct "$SIM_URL" --gateway "$url" \
    --direct-body "$TW_DIR/paced-direct.json" --gateway-body "$body" "${args[@]}" \
    | tee "$RAW/ttft-$gw.json"
}

cpu_ticks() { # per-thread CPU time (utime + stime, clock ticks) of a process: "tid ticks" lines
  local t
  for t in /proc/"$1"/task/*; do echo "$(basename "$t") $(awk '{print $14 + $15}' "$t/stat")"; done
}

profile() { # py-spy on tokenway under the peak load (a separate run: sampling slows it down)
  [ "${PROFILE:-1}" = 1 ] || return 0
  echo "== tokenway: py-spy (--gil: the thread holding the GIL) under peak load"
  local -a peak_args
  local pid; pid=$(pid_of tokenway)
  mapfile -d '' peak_args < <(args_for tokenway 18080 --header)
  taskset -c 0 "$BENCH_DIR/pyspy-venv/bin/py-spy" record -p "$pid" --gil -d 7 -r 200 \
    -f raw -o "$RAW/pyspy-tokenway.txt" >"$RAW/pyspy-tokenway.log" 2>&1 &
  local spy=$!
  cpu_ticks "$pid" | sort >"$TW_DIR/ticks-before"
  bash "$PEERS" peak "$(url_for tokenway)" "${peak_args[@]}" >"$RAW/peak-pyspy-tokenway.txt" 2>&1
  cpu_ticks "$pid" | sort >"$TW_DIR/ticks-after"
  # which thread burnt the CPU during that run (tid == pid is the event loop's thread)
  join "$TW_DIR/ticks-before" "$TW_DIR/ticks-after" \
    | awk -v pid="$pid" -v hz="$(getconf CLK_TCK)" '$3 > $2 {
        printf "%s %s %.2f\n", $1, ($1 == pid ? "main" : "other"), ($3 - $2) / hz }' \
    >"$RAW/threads-tokenway.txt"
  wait "$spy" || echo "py-spy failed: see $RAW/pyspy-tokenway.log"
}

for gw in tokenway portkey litellm; do signal_group STOP "$gw"; done
for gw in $GATEWAYS; do
  for other in tokenway portkey litellm; do [ "$other" = "$gw" ] || signal_group STOP "$other"; done
  if [ "$gw" = tokenway ]; then
    echo "== tokenway: start-up time (exec to /healthz answering), 3 runs"
    python3 bench/startup.py --url "http://127.0.0.1:$TW_PORT/healthz" --runs 3 \
      --keep-last "$TW_DIR/tokenway.pid" --log "$TW_DIR/tokenway.log" -- \
      taskset -c 1 .venv/bin/tokenway serve --config bench/tokenway.yaml --port "$TW_PORT" \
      | tee "$RAW/startup-tokenway.json"
  fi
  signal_group CONT "$gw"
  measure "$gw"
  [ "$gw" = litellm ] || ttft "$gw"
  [ "$gw" != tokenway ] || profile
  signal_group STOP "$gw"
done

# Interleaved peak rounds: on a shared VM a neighbour's burst can land on one gateway's single
# run and skew the ratio; alternating short runs and taking each gateway's median is steadier.
rounds_gws=""
for gw in $GATEWAYS; do [ "$gw" = litellm ] || rounds_gws="$rounds_gws $gw"; done
rm -f "$RAW"/peak-round-*.txt
for r in $(seq 1 "${ROUNDS:-3}"); do
  for gw in $rounds_gws; do
    signal_group CONT "$gw"
    mapfile -d '' round_args < <(args_for "$gw" 18080 --header)
    bash "$PEERS" peak "$(url_for "$gw")" "${round_args[@]}" >"$RAW/peak-round-$r-$gw.txt" 2>&1
    echo "== round $r $gw: $(grep -E 'Requests/sec' "$RAW/peak-round-$r-$gw.txt")"
    signal_group STOP "$gw"
  done
done

{
  echo "date_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
  echo "cpus=$(nproc)"
  echo "tokenway_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "tokenway_src_uncommitted_files=$(git -C "$ROOT" status --porcelain src 2>/dev/null | wc -l)"
  echo "python=$(.venv/bin/python -V 2>&1)"
  echo "node=$(node --version)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/.*nginx\///')"
  echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{print $2}')"
  echo "litellm=$("$BENCH_DIR/litellm-venv/bin/pip" show litellm 2>/dev/null | awk '/^Version/ {print $2}')"
  echo "litellm_proxy_extras=$("$BENCH_DIR/litellm-venv/bin/pip" show litellm-proxy-extras 2>/dev/null | awk '/^Version/ {print $2}')"
  echo "portkey=$(node -p "require('$BENCH_DIR/portkey/node_modules/@portkey-ai/gateway/package.json').version" 2>/dev/null)"
} >"$RAW/meta.txt"

.venv/bin/python bench/summarize.py "$RAW" "$OUT/summary.json"
