# Sourced by bench/instructions.sh and bench/ab.sh, from the repository's
# root after the release build: a scratch directory $T, the processes to
# stop on exit ($pids), free ports, and what a sidecar under load needs
# beside it: redis-server on $REDIS and an OTLP sink (the floor's) on $OTLP.
command -v redis-server >/dev/null 2>&1 || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get install -y -qq redis-server >&2; }
R=target/release
T=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$T"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 120); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.5; done
  echo "nothing listens on $1" >&2; exit 1; }

REDIS=$(port); OTLP=$(port)
redis-server --port "$REDIS" --bind 127.0.0.1 --save "" --appendonly no --dir "$T" >/dev/null 2>&1 &
pids+=($!)
$R/examples/floor --otlp "127.0.0.1:$OTLP" >/dev/null 2>&1 &
pids+=($!)
wait_port "$REDIS"; wait_port "$OTLP"
