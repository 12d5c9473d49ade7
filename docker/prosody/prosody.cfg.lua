-- Prosody for the cpim-gateway compose demo (docker/compose.yaml).
--
-- Mounted read-only at /etc/prosody/prosody.cfg.lua in the `prosody` container (Debian's
-- prosody 0.12, docker/prosody/Dockerfile), which runs `prosody -F` as the user prosody.
-- The settings follow the test harness (crates/test-support/src/xmpp.rs).
--
-- DEMO ONLY: anyone who reaches port 5222 may register an account (in-band registration),
-- and passwords may be sent without TLS. The component port 5347 is plain TCP (XEP-0114):
-- it listens on the container's interfaces so that the gateway can reach prosody:5347 over
-- the compose network, and compose.yaml does not publish it.
-- Checked by crates/gateway/tests/docker.rs (syntax, component domains, secret).

data_path = "/var/lib/prosody"
certificates = "certs" -- /etc/prosody/certs: a self-signed xmpp.localhost certificate
log = { { levels = { min = "info" }, to = "console" } }

interfaces = { "*" }
c2s_ports = { 5222 }
c2s_direct_tls_ports = { }
s2s_ports = { }
component_ports = { 5347 }
component_interfaces = { "*" }

c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = true
authentication = "internal_hashed"
allow_registration = true

modules_enabled = {
    "roster"; "saslauth"; "tls"; "disco"; "ping"; "register"; "carbons"; "version";
    "posix"; -- SIGTERM (docker stop) shuts Prosody down cleanly
}
modules_disabled = { "s2s"; "s2s_auth_certs" }

VirtualHost "xmpp.localhost"

-- The gateway's component domains: the same domains and secret as the xmpp adapter in
-- docker/gateway/gateway.toml. CPIM_XMPP_SECRET comes from compose.yaml; the default is
-- for local demos only.
Component "gw.xmpp.localhost"
    component_secret = ENV_CPIM_XMPP_SECRET or "cpim-dev-secret"

Component "sip.gw.xmpp.localhost"
    component_secret = ENV_CPIM_XMPP_SECRET or "cpim-dev-secret"
