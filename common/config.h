/*
 * config: the YAML node layout.
 *
 * The supervisor parses and validates the whole file before it starts anything
 * (and again on reload, into a fresh struct, so a broken file never replaces
 * a working one). Workers inherit the parsed struct across fork and receive
 * reloaded values through the shared-memory segment, never by re-parsing.
 *
 * Errors name the file, line, column and key, in the form
 *   FILE:LINE:COL: KEY: what is wrong
 * e.g. "configs/x.yaml:7:11: listeners[0].port: expected an integer 1-65535".
 */
#ifndef XMPPD_CONFIG_H
#define XMPPD_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_MAX_LISTENERS 16
#define CONFIG_MAX_CPUS 256
#define CONFIG_PATH_MAX 1024
#define CONFIG_ERR_MAX 512

#define CONFIG_MAX_CALLBRIDGE_ADDRESSES 64

enum listener_type {
	LISTENER_C2S = 0,
	LISTENER_COMPONENT,    /* XEP-0114 call bridges */
};

enum tls_mode {
	TLS_MODE_REQUIRED = 0, /* STARTTLS must succeed before SASL (c2s default) */
	TLS_MODE_OPTIONAL,     /* STARTTLS offered, not required */
	TLS_MODE_DIRECT,       /* TLS from the first byte (component default; XEP-0368 for c2s) */
	TLS_MODE_NONE,         /* plaintext (components only, when the YAML says so) */
};

/* Who decides a client's password. */
enum auth_mode {
	AUTH_INTERNAL = 0,     /* the node's accounts (xmppctl user ...) */
	AUTH_CALLBRIDGE,       /* a connected call bridge, over the login hand-off */
};

enum log_level {
	LOG_LEVEL_DEBUG = 0,
	LOG_LEVEL_INFO,
	LOG_LEVEL_WARN,
	LOG_LEVEL_ERROR,
};

struct listener_config {
	enum listener_type type;
	char address[64]; /* numeric IPv4 or IPv6 address */
	uint16_t port;
	enum tls_mode tls;
};

struct config {
	char source[CONFIG_PATH_MAX]; /* file name, or "(built-in default)" */

	/* node: */
	char node_name[64];                 /* default: "node1" */
	char data_dir[CONFIG_PATH_MAX];     /* default: "./xmppd-data" (relative to cwd) */

	char domain[256]; /* default: "localhost" */

	/* workers: */
	int worker_count;              /* default: number of online CPUs, 1..64 */
	int cpu_count;                 /* number of entries in cpus[]; 0 = no pinning */
	int cpus[CONFIG_MAX_CPUS];     /* workers.cpus: worker i pinned to cpus[i % cpu_count] */

	int listener_count;
	struct listener_config listeners[CONFIG_MAX_LISTENERS];

	enum auth_mode auth;        /* auth: internal (default) | callbridge */

	/* callbridges: */
	uint32_t auth_timeout_ms;   /* callbridges.auth_timeout_ms, default 10000 */
	/* callbridges.addresses: component address of a bridge NAME when it is
	 * not NAME.DOMAIN */
	int callbridge_address_count;
	struct {
		char name[64];
		char address[256];
	} callbridge_addresses[CONFIG_MAX_CALLBRIDGE_ADDRESSES];

	/* tls: empty key and certificate mean "self-signed files in data_dir,
	 * made on first start" (data_dir/tls/key.pem, data_dir/tls/cert.pem). */
	char tls_key[CONFIG_PATH_MAX];
	char tls_cert[CONFIG_PATH_MAX];
	char tls_bundle[CONFIG_PATH_MAX]; /* optional CA bundle, may be empty */

	/* limits: */
	uint32_t max_stanza_size;   /* default 262144, 1024..16777216 */
	uint32_t max_depth;         /* default 32, 4..1024 */
	uint32_t auth_attempts;     /* default 3, 1..20 */
	uint32_t max_connections;   /* per worker, default 200000 */
	uint32_t max_sessions;      /* session directory capacity, default 131072 */

	/* logging: */
	enum log_level log_level;   /* default info */
	char log_file[CONFIG_PATH_MAX]; /* empty = stderr */

	/* paths derived from data_dir unless set: */
	char control_socket[CONFIG_PATH_MAX]; /* default DATA_DIR/xmppd.sock */
	char pid_file[CONFIG_PATH_MAX];       /* default DATA_DIR/xmppd.pid */

	uint32_t drain_timeout_ms;  /* shutdown.drain_timeout_ms, default 5000 */
};

/* Fill in the built-in default configuration (one node, domain localhost,
 * c2s on 127.0.0.1:5222 with required STARTTLS, components on
 * 127.0.0.1:5223 with direct TLS, data dir ./xmppd-data). */
void config_default(struct config *cfg);

/* Parse and validate PATH into CFG (starting from the defaults).
 * Returns 0, or -1 with a one-line message in ERR. CFG is unspecified on
 * error: parse into a scratch struct when the old one must survive. */
int config_load(struct config *cfg, const char *path, char *err, size_t errlen);

/* Same, from a string (for tests); NAME stands in for the file name. */
int config_load_string(struct config *cfg, const char *name, const char *yaml,
		       char *err, size_t errlen);

/* The component address of call bridge NAME (normalised): the mapped one,
 * or NAME.DOMAIN. Returns 0, or -ENAMETOOLONG. */
int config_callbridge_address(const struct config *cfg, const char *name, char *out,
			      size_t cap);
/* The call bridge name whose component address is ADDRESS (normalised),
 * into OUT (64 bytes). Returns 0, or -ENOENT when ADDRESS names no bridge
 * (it is neither mapped nor NAME.DOMAIN with a one-label NAME). */
int config_callbridge_name(const struct config *cfg, const char *address, char out[64]);
/* TLS files in effect for CFG: the configured ones, or the self-signed
 * pair in the data directory (see tls_key above). */
void config_tls_paths(const struct config *cfg, char *key, char *cert, size_t cap);

const char *config_auth_mode_name(enum auth_mode m);
const char *config_listener_type_name(enum listener_type t);
const char *config_tls_mode_name(enum tls_mode m);
const char *config_log_level_name(enum log_level l);

#endif
