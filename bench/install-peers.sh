#!/usr/bin/env bash
# Install what bench/run.sh needs: the peers of ../shared/bench/peers.sh (nginx, wrk, node,
# LiteLLM proxy, Portkey) and py-spy (in its own venv under $BENCH_DIR, never the project's).
#
# Why not just `peers.sh install`: it installs `litellm[proxy]==1.109.1`, whose proxy extra pins
# `litellm-proxy-extras==0.4.113` and `litellm-enterprise==0.1.82`; when the package index lacks
# the exact pin (this machine's mirror stops at 0.4.110) the whole install fails. Here litellm is
# installed alone and the proxy extra's requirements are installed from its own metadata, with
# those two pins relaxed to "newest available at or below the pin". peers.sh install then finds
# the venv in place and does the rest (nginx, wrk, node, Portkey, the upstream's files).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PEERS="${PEERS:-$HERE/../../shared/bench/peers.sh}"
[ -f "$PEERS" ] || PEERS=/work/shared/bench/peers.sh
BENCH_DIR="${BENCH_DIR:-/tmp/gateway-bench}"
LITELLM_VERSION="${LITELLM_VERSION:-1.109.1}"
VENV="$BENCH_DIR/litellm-venv"
mkdir -p "$BENCH_DIR"

if [ ! -x "$VENV/bin/litellm" ] || ! "$VENV/bin/python" -c 'import fastapi, uvicorn, apscheduler, litellm_proxy_extras' \
    >/dev/null 2>&1; then
  echo "installing the LiteLLM proxy ($LITELLM_VERSION) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "litellm==$LITELLM_VERSION"
  "$VENV/bin/python" - "$BENCH_DIR/litellm-proxy-reqs.txt" <<'EOF'
import re
import sys
from importlib.metadata import requires

from packaging.markers import Marker
from packaging.requirements import Requirement

out = []
for spec in requires("litellm") or []:
    req = Requirement(spec)
    if req.marker is None or not req.marker.evaluate({"extra": "proxy"}):
        continue
    if Marker(str(req.marker)).evaluate({"extra": ""}):
        continue  # a base requirement, already installed with litellm
    line = str(req).split(";")[0].strip()
    # exact pins of litellm's own satellite packages: accept the newest version at or below
    line = re.sub(r"^(litellm-[a-z-]+)==", r"\1<=", line)
    out.append(line)
open(sys.argv[1], "w").write("\n".join(out) + "\n")
EOF
  "$VENV/bin/pip" install -q -r "$BENCH_DIR/litellm-proxy-reqs.txt"
fi

bash "$PEERS" install

if [ ! -x "$BENCH_DIR/pyspy-venv/bin/py-spy" ]; then
  python3 -m venv "$BENCH_DIR/pyspy-venv"
  "$BENCH_DIR/pyspy-venv/bin/pip" install -q py-spy
fi
