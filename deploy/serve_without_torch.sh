#!/usr/bin/env bash
# Prove the serving install needs no torch: a fresh venv with requirements-serve.txt and the wheel,
# `import torch` impossible in it, `saemi serve` started, /api/v1/ready, one analysis, the page.
#
#   bash deploy/serve_without_torch.sh [VENV]      # default /tmp/saemi-serve-venv (kept for slug_size.py)
#
# Prints the cold start (spawn -> ready, the export of the weights built on the first run and
# reused after) and the worker's resident memory. Needs PyPI (pip install) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-/tmp/saemi-serve-venv}
WORK=$(mktemp -d)
trap 'kill "${PID:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r requirements-serve.txt
"$VENV/bin/pip" wheel -q --no-deps -w "$WORK/dist" .
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$WORK"/dist/saemi-*.whl
if "$VENV/bin/python" -c "import torch" 2>/dev/null; then echo "torch is installed in $VENV: not a serving install" >&2; exit 1; fi

export SAEMI_ENGINE_DIR="$WORK/engine" SAEMI_CACHE_DIR="$WORK/cache" WEB_CONCURRENCY=1 SAEMI_ACCESS_LOG=
PORT=$("$VENV/bin/python" -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
for run in "export built" "export cached"; do
  t0=$(date +%s.%N)
  (cd "$WORK" && exec "$VENV/bin/saemi" serve --port "$PORT") > "$WORK/serve.log" 2>&1 &
  PID=$!
  until curl -sf "http://127.0.0.1:$PORT/api/v1/ready" > /dev/null; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
  done
  t1=$(date +%s.%N)
  worker=$(pgrep -P "$PID" | head -1)
  echo "$run: cold start $(python3 -c "print(round($t1 - $t0, 1))") s, worker RSS $(awk '/VmRSS/ {print int($2/1024)}' /proc/"$worker"/status) MB"
  curl -sf -F file=@tests/fixtures/emps/images/aa309f6cec.png "http://127.0.0.1:$PORT/api/v1/analyze" \
    | "$VENV/bin/python" -c "import json, sys; d = json.load(sys.stdin); print('  analysis:', d['summary']['count'], 'particles, network', d['timings']['network'], 's')"
  page=$(curl -sf "http://127.0.0.1:$PORT/")
  case "$page" in *"<html"*) echo "  page: served" ;; *) echo "the page was not served" >&2; exit 1 ;; esac
  if grep -q -E "torch|fastai" /proc/"$worker"/maps; then echo "torch or fastai loaded in the worker" >&2; exit 1; fi
  kill "$PID"; wait "$PID" 2>/dev/null || true
  rm -rf "$SAEMI_CACHE_DIR"  # the second start analyses the image afresh
done
echo "serving without torch: ok ($VENV)"
