#!/usr/bin/env bash
# See the gateway work, in one command: a local Prosody for the sample gateway.toml, the
# gateway on that sample (with its registrar turned on, so a SIP phone can register), a
# SIP phone (alice), an XMPP user (bob) and the sample's webhook app, which send each
# other a message each way. Everything on loopback; Ctrl-C (or the end) stops what it
# started. Needs the ports of the sample: 5060 (SIP), 5347 (component), 8080 (API),
# 8081 (the app's receiver), 9090 (admin), and 5222 (Prosody's clients).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

bash scripts/setup.sh >/dev/null
echo "demo: building the gateway (release)..."
cargo build --release --locked -q -p cpim-gateway
gateway="$repo/target/release/cpim-gateway"

work=$(mktemp -d /tmp/cpim-demo.XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo "demo: stopped everything it started; logs were in $work (removed)"
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Prosody: xmpp.localhost with users alice and bob, the sample's two component domains.
mkdir -p "$work/prosody/data"
cat > "$work/prosody/prosody.cfg.lua" <<EOF
run_as_root = true
pidfile = "$work/prosody/prosody.pid"
data_path = "$work/prosody/data"
log = { { levels = { min = "info" }, to = "file", filename = "$work/prosody/prosody.log" } }
interfaces = { "127.0.0.1" }
c2s_ports = { 5222 }
c2s_direct_tls_ports = { }
s2s_ports = { }
component_ports = { 5347 }
component_interfaces = { "127.0.0.1" }
c2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_plain"
modules_enabled = { "roster"; "saslauth"; "disco"; "ping" }
modules_disabled = { "s2s" }
VirtualHost "xmpp.localhost"
Component "gw.xmpp.localhost"
    component_secret = "cpim-dev-secret"
Component "sip.gw.xmpp.localhost"
    component_secret = "cpim-dev-secret"
EOF
for user in alice bob; do
  prosodyctl --config "$work/prosody/prosody.cfg.lua" register "$user" xmpp.localhost "$user-pass" >/dev/null
done
prosody -F --config "$work/prosody/prosody.cfg.lua" >"$work/prosody/console.log" 2>&1 &
pids+=($!)

# The sample configuration, registrar turned on for alice (the commented lines of the
# sample), its state in the demo's directory.
sed -e 's|^# registrar_domains = \["sip.localhost"\]|registrar_domains = ["sip.localhost"]|' \
    -e 's|^# \[\[adapters.sip.accounts\]\]|[[adapters.sip.accounts]]|' \
    -e 's|^# username = "alice"|username = "alice"|' \
    -e 's|^# password = "${CPIM_SIP_ALICE_PASSWORD:-alice-dev-password}"|password = "${CPIM_SIP_ALICE_PASSWORD:-alice-dev-password}"|' \
    -e 's|^data_dir = "data"|data_dir = "'"$work"'/data"|' \
    gateway.toml > "$work/gateway.toml"
"$gateway" run --config "$work/gateway.toml" >"$work/gateway.log" 2>&1 &
pids+=($!)

echo "demo: waiting for the gateway to be ready (component links up)..."
for _ in $(seq 1 100); do
  if curl -fsS http://127.0.0.1:9090/readyz >/dev/null 2>&1; then break; fi
  sleep 0.2
done
curl -fsS http://127.0.0.1:9090/readyz >/dev/null || { echo "demo: the gateway is not ready:"; tail -20 "$work/gateway.log"; exit 1; }
echo

status=0
/usr/bin/python3 -I scripts/demo_peers.py 5222 || status=$?

cat <<EOF

Where to look next:
  how an address is written on each network:
    $gateway explain --config gateway.toml sip:alice@sip.localhost
    $gateway explain --config gateway.toml im:bot@app.localhost
  what the gateway counted:  curl -s http://127.0.0.1:9090/metrics | grep cpim_
  the webhook API:           docs/webhook-api.md (GET http://127.0.0.1:8080/v1/openapi.json)
EOF
echo
echo "demo: metrics now:"
curl -s http://127.0.0.1:9090/metrics | grep -E '^cpim_(received|delivered)_total' | head -12 || true
exit "$status"
