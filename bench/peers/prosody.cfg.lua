-- Prosody under bench/compare. The @-placeholders are filled in by bench/compare.
-- Fair settings: SCRAM-SHA-256 keys stored at 4096 iterations (as xmppd),
-- TCP_NODELAY, warnings only, and only the modules whose work xmppd does too
-- (SASL, STARTTLS, disco, ping). offline is loaded automatically by Prosody,
-- so it is disabled here; so is s2s.
daemonize = false
run_as_root = true
pidfile = "@DIR@/prosody.pid"
data_path = "@DIR@/data"
plugin_paths = {}
log = { { levels = { min = "warn" }, to = "file", filename = "@DIR@/prosody.log" } }
network_backend = "epoll"
network_settings = { nagle = false }

modules_enabled = { "saslauth", "tls", "disco", "ping" }
modules_disabled = { "offline", "s2s", "s2s_auth_certs" }

c2s_ports = { @PORT@ }
c2s_interfaces = { "@ADDR@" }
s2s_ports = { }
-- the component scenario: one XEP-0114 component, plaintext (as for every server)
component_ports = { @COMPONENT_PORT@ }
component_interfaces = { "@ADDR@" }
c2s_require_encryption = false
c2s_stanza_size_limit = 262144

authentication = "internal_hashed"
password_hash = "SHA-256"
default_iteration_count = 4096
storage = "internal"

ssl = { certificate = "@CERT@", key = "@KEY@" }

VirtualHost "@DOMAIN@"

Component "@COMPONENT@"
    component_secret = "@COMPONENT_SECRET@"
