# Sourced by the measuring scripts (bench-gateway, count-instructions): the sandbox they
# measure against, started the same way. Expects $bin (the wxgate binary), $work (a scratch
# folder) and WXGATE_DATABASE_URL.

# Waits until 127.0.0.1:$1 accepts connections, trying $2 times (default 50) 0.1 s apart.
wait_for_port() {
  for _ in $(seq 1 "${2:-50}"); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
}

# A fresh master key, the simulator listening on port $1 (a background job of the caller's
# shell, so its exit trap stops it), the database migrated, and a sandbox merchant named $2
# on that simulator: its API key in $key.
start_sandbox() {
  export WXGATE_MASTER_KEY
  WXGATE_MASTER_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  RUST_LOG=warn $bin sim --listen "127.0.0.1:$1" >"$work/sim.log" 2>&1 &
  $bin migrate >/dev/null
  wait_for_port "$1"
  local merchant
  merchant=$($bin merchant create --sandbox-simulator "http://127.0.0.1:$1" --name "$2" --json \
    | sed -E 's/.*"merchant_id":"([^"]+)".*/\1/')
  key=$($bin merchant api-key create --merchant "$merchant" --json \
    | sed -E 's/.*"api_key":"([^"]+)".*/\1/')
}
