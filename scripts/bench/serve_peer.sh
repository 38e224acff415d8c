#!/usr/bin/env bash
# The serving benchmark with its peer in the same run: lcross's server (in-process,
# every client steered with its own beta) and llama.cpp's OpenAI-compatible server from
# llama-cpp-python (unsteered: it cannot steer per request; llama-cpp-python's server
# has no control-vector option at all, llama.cpp's C++ server applies one vector to every
# request from start-up), same clients, same prompts, same max_tokens.
#
#   scripts/bench/serve_peer.sh [MODEL_ID] [OUT.md]
#
# PEER_PYTHON: a Python with llama-cpp-python (default /opt/peers/bin/python); the
# server extras (uvicorn, fastapi, ...) are pip-installed into it when missing.
# CLIENTS (default 1,4,8,16), NEW_TOKENS (64), REQUESTS (2), PORT (8181).
set -euo pipefail
cd "$(dirname "$0")/../.."
MODEL=${1:-qwen2.5-coder-0.5b-instruct}
OUT=${2:-}
PY=${PEER_PYTHON:-/opt/peers/bin/python}
PORT=${PORT:-8181}
GGUF="${LCROSS_MODELS_DIR:-$HOME/.cache/lcross/models}/$MODEL.gguf"
[ -f "$GGUF" ] || { echo "missing $GGUF: run scripts/fetch-models $MODEL" >&2; exit 1; }
"$PY" -c "import llama_cpp" || { echo "$PY has no llama-cpp-python (pip install llama-cpp-python)" >&2; exit 1; }
"$PY" -c "import llama_cpp.server.app" 2>/dev/null || "$PY" -m pip install -q uvicorn fastapi sse-starlette starlette-context pydantic-settings
cargo build --release -q -p lcross-cli
"$PY" -m llama_cpp.server --model "$GGUF" --model_alias "$MODEL" --n_threads "$(nproc)" --n_ctx 4096 \
  --host 127.0.0.1 --port "$PORT" >/tmp/lcross-peer-server.log 2>&1 &
PEER=$!
trap 'kill $PEER 2>/dev/null || true' EXIT
for _ in $(seq 120); do
  curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break
  sleep 1
done
curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null || { echo "the peer server did not start; see /tmp/lcross-peer-server.log" >&2; exit 1; }
ARGS=(bench --serve -m "$MODEL" --clients "${CLIENTS:-1,4,8,16}" --new-tokens "${NEW_TOKENS:-64}"
      --requests-per-client "${REQUESTS:-2}" --peer-url "http://127.0.0.1:$PORT/v1")
[ -n "$OUT" ] && ARGS+=(--out "$OUT")
target/release/lcross "${ARGS[@]}"
