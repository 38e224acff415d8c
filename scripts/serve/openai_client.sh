#!/usr/bin/env bash
# The official openai Python client against `lcross serve` (plain, steered through
# extra_body, streamed, logprobs, legacy completions, an error). Makes its own virtualenv
# (needs PyPI); not part of CI.
#
#   scripts/serve/openai_client.sh [MODEL_ID]
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-smollm2-135m-instruct}
VENV=${VENV:-$HOME/.cache/lcross/venvs/openai}
PORT=${PORT:-8188}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c "import openai" 2>/dev/null || "$VENV/bin/pip" install -q openai
cargo build --release -q -p lcross-cli
TMP=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$TMP"' EXIT
target/release/lcross extract -m "$MODEL" -d builtin:optimism -l 12 --limit 16 -o "$TMP/v.safetensors" >/dev/null
target/release/lcross serve -m "$MODEL" --vector "v=$TMP/v.safetensors" --port "$PORT" 2>"$TMP/server.log" &
SERVER=$!
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 1; done
"$VENV/bin/python" scripts/serve/openai_client.py "http://127.0.0.1:$PORT/v1" "$MODEL"
"$VENV/bin/python" -c "import openai; print('openai', openai.__version__)"
