/*
 * Unit tests for common/config.c (the YAML node layout) and common/log.c.
 * Run from the repository root: the shipped configs/ are loaded by path.
 */
#include "common/config.h"
#include "common/log.h"
#include "tests/unit/check.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static struct config cfg;
static char err[CONFIG_ERR_MAX];

static int load(const char *yaml)
{
	return config_load_string(&cfg, "t.yaml", yaml, err, sizeof err);
}

/* Loads YAML, expecting an error that starts with PREFIX. */
static int fails_with(const char *yaml, const char *prefix)
{
	if (load(yaml) != -1) {
		printf("  expected an error for:\n%s\n", yaml);
		return 0;
	}
	if (strncmp(err, prefix, strlen(prefix))) {
		printf("  expected \"%s...\"\n  got      \"%s\"\n", prefix, err);
		return 0;
	}
	return 1;
}

/* Whole configs equal, apart from where they came from. */
static int same_as_default(const struct config *c)
{
	struct config def, copy = *c;

	config_default(&def);
	memcpy(copy.source, def.source, sizeof copy.source);
	return memcmp(&copy, &def, sizeof def) == 0;
}

static void test_defaults(void)
{
	struct config c;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);

	config_default(&c);
	CHECK_STR(c.source, "(built-in default)");
	CHECK_STR(c.node_name, "node1");
	CHECK_STR(c.data_dir, "./xmppd-data");
	CHECK_STR(c.domain, "localhost");
	CHECK(c.worker_count == (cpus > 64 ? 64 : cpus < 1 ? 1 : cpus));
	CHECK(c.cpu_count == 0);
	CHECK(c.listener_count == 2);
	CHECK(c.listeners[0].type == LISTENER_C2S);
	CHECK_STR(c.listeners[0].address, "127.0.0.1");
	CHECK(c.listeners[0].port == 5222);
	CHECK(c.listeners[0].tls == TLS_MODE_REQUIRED);
	CHECK(c.listeners[1].type == LISTENER_COMPONENT);
	CHECK_STR(c.listeners[1].address, "127.0.0.1");
	CHECK(c.listeners[1].port == 5223);
	CHECK(c.listeners[1].tls == TLS_MODE_DIRECT);
	CHECK(c.auth == AUTH_INTERNAL);
	CHECK(c.auth_timeout_ms == 10000);
	CHECK(c.callbridge_address_count == 0);
	CHECK_STR(c.tls_key, "");
	CHECK_STR(c.tls_cert, "");
	CHECK_STR(c.tls_bundle, "");
	CHECK(c.max_stanza_size == 262144);
	CHECK(c.max_depth == 32);
	CHECK(c.auth_attempts == 3);
	CHECK(c.max_connections == 200000);
	CHECK(c.max_sessions == 131072);
	CHECK(c.log_level == LOG_LEVEL_INFO);
	CHECK_STR(c.log_file, "");
	CHECK_STR(c.control_socket, "./xmppd-data/xmppd.sock");
	CHECK_STR(c.pid_file, "./xmppd-data/xmppd.pid");
	CHECK(c.drain_timeout_ms == 5000);
}

static void test_empty_file_is_default(void)
{
	static const char *const empties[] = {
		"", "\n", "# only a comment\n", "---\n", "--- ~\n", "---\n...\n",
		"node:\ntls:\nlimits: {}\n",
	};

	for (size_t i = 0; i < sizeof empties / sizeof empties[0]; i++) {
		CHECK(load(empties[i]) == 0);
		CHECK(same_as_default(&cfg));
		CHECK_STR(cfg.source, "t.yaml");
	}
	CHECK_STR(err, "");
}

/* configs/default.yaml is the documentation of every key: it must say
 * exactly what the code does. */
static void test_default_yaml_is_the_default(void)
{
	CHECK(config_load(&cfg, "configs/default.yaml", err, sizeof err) == 0);
	CHECK_STR(err, "");
	CHECK(same_as_default(&cfg));
	CHECK_STR(cfg.source, "configs/default.yaml");
}

static void test_shipped_examples_load(void)
{
	CHECK(config_load(&cfg, "configs/two-workers.yaml", err, sizeof err) == 0);
	CHECK_STR(err, "");
	CHECK(cfg.worker_count == 2);
	CHECK(cfg.listener_count == 2);
	CHECK(cfg.listeners[0].tls == TLS_MODE_OPTIONAL);
	CHECK_STR(cfg.listeners[1].address, "::1");

	CHECK(config_load(&cfg, "configs/example-production.yaml", err, sizeof err) == 0);
	CHECK_STR(err, "");
	CHECK_STR(cfg.domain, "example.com");
	CHECK(cfg.cpu_count == 6 && cfg.cpus[0] == 2 && cfg.cpus[5] == 7);
	CHECK(cfg.max_stanza_size == 256 * 1024);
	CHECK(cfg.tls_key[0] && cfg.tls_cert[0] && cfg.tls_bundle[0]);
	CHECK(cfg.log_file[0]);
}

static void test_every_key(void)
{
	int rc = load("node:\n"
		      "  name: Node-2.a_b\n"
		      "  data_dir: /var/lib/x\n"
		      "domain: Chat.Example.ORG.\n"
		      "workers:\n"
		      "  count: 3\n"
		      "  cpus: [4, 5, 255]\n"
		      "listeners:\n"
		      "  - type: c2s\n"
		      "    address: 0:0::1\n"
		      "    port: 5223\n"
		      "    tls: optional\n"
		      "  - {type: c2s, address: 10.0.0.1, port: 1}\n"
		      "tls:\n"
		      "  key: /k.pem\n"
		      "  certificate: '/c.pem'\n"
		      "  bundle: \"/b.pem\"\n"
		      "limits:\n"
		      "  max_stanza_size: 1M\n"
		      "  max_depth: 1024\n"
		      "  auth_attempts: 20\n"
		      "  max_connections: 1000000\n"
		      "  max_sessions: 16\n"
		      "logging:\n"
		      "  level: debug\n"
		      "  file: /var/log/x.log\n"
		      "control:\n"
		      "  socket: /run/x.sock\n"
		      "pid_file: /run/x.pid\n"
		      "shutdown:\n"
		      "  drain_timeout_ms: 0\n");
	CHECK(rc == 0);
	CHECK_STR(err, "");
	CHECK_STR(cfg.node_name, "Node-2.a_b");
	CHECK_STR(cfg.data_dir, "/var/lib/x");
	CHECK_STR(cfg.domain, "chat.example.org");
	CHECK(cfg.worker_count == 3);
	CHECK(cfg.cpu_count == 3 && cfg.cpus[0] == 4 && cfg.cpus[1] == 5 && cfg.cpus[2] == 255);
	CHECK(cfg.listener_count == 2);
	CHECK(cfg.listeners[0].type == LISTENER_C2S);
	CHECK_STR(cfg.listeners[0].address, "::1");
	CHECK(cfg.listeners[0].port == 5223);
	CHECK(cfg.listeners[0].tls == TLS_MODE_OPTIONAL);
	CHECK_STR(cfg.listeners[1].address, "10.0.0.1");
	CHECK(cfg.listeners[1].port == 1);
	CHECK(cfg.listeners[1].tls == TLS_MODE_REQUIRED);
	CHECK_STR(cfg.tls_key, "/k.pem");
	CHECK_STR(cfg.tls_cert, "/c.pem");
	CHECK_STR(cfg.tls_bundle, "/b.pem");
	CHECK(cfg.max_stanza_size == 1048576);
	CHECK(cfg.max_depth == 1024);
	CHECK(cfg.auth_attempts == 20);
	CHECK(cfg.max_connections == 1000000);
	CHECK(cfg.max_sessions == 16);
	CHECK(cfg.log_level == LOG_LEVEL_DEBUG);
	CHECK_STR(cfg.log_file, "/var/log/x.log");
	CHECK_STR(cfg.control_socket, "/run/x.sock");
	CHECK_STR(cfg.pid_file, "/run/x.pid");
	CHECK(cfg.drain_timeout_ms == 0);

	CHECK(load("domain: 192.0.2.7\n") == 0);
	CHECK_STR(cfg.domain, "192.0.2.7");
	CHECK(load("domain: '[2001:DB8::1]'\n") == 0);
	CHECK_STR(cfg.domain, "[2001:db8::1]");
	CHECK(load("limits: {max_stanza_size: 1024}\n") == 0);
	CHECK(cfg.max_stanza_size == 1024);
	CHECK(load("limits: {max_stanza_size: 16m}\n") == 0);
	CHECK(cfg.max_stanza_size == 16777216);
	CHECK(load("workers: {cpus: []}\n") == 0);
	CHECK(cfg.cpu_count == 0);
}

static void test_derived_paths(void)
{
	CHECK(load("node: {data_dir: /srv/xmpp/}\n") == 0);
	CHECK_STR(cfg.control_socket, "/srv/xmpp/xmppd.sock");
	CHECK_STR(cfg.pid_file, "/srv/xmpp/xmppd.pid");

	CHECK(load("node: {data_dir: /}\n") == 0);
	CHECK_STR(cfg.control_socket, "/xmppd.sock");

	/* One key set, the other still derived from the final data_dir,
	 * whatever the order of the keys. */
	CHECK(load("pid_file: /run/p.pid\nnode: {data_dir: d}\n") == 0);
	CHECK_STR(cfg.pid_file, "/run/p.pid");
	CHECK_STR(cfg.control_socket, "d/xmppd.sock");
}

/* Errors with their exact text: FILE:LINE:COL: KEY: message. */
static void test_error_messages(void)
{
	CHECK(fails_with("domain: a\nbogus: 1\n",
			 "t.yaml:2:1: bogus: unknown key (known here: node, domain, workers, "
			 "listeners, tls, limits, logging, control, pid_file, shutdown, auth, callbridges)"));
	CHECK_STR(err, "t.yaml:2:1: bogus: unknown key (known here: node, domain, workers, "
		       "listeners, tls, limits, logging, control, pid_file, shutdown, auth, "
		       "callbridges)");
	CHECK(fails_with("limits:\n  max_dept: 3\n",
			 "t.yaml:2:3: limits.max_dept: unknown key (known here: max_stanza_size,"));
	CHECK(fails_with("domain: a\ndomain: b\n",
			 "t.yaml:2:1: domain: duplicate key (first at line 1)"));
	CHECK(fails_with("limits:\n  max_depth: 8\n  max_depth: 9\n",
			 "t.yaml:3:3: limits.max_depth: duplicate key (first at line 2)"));
	CHECK(fails_with("logging:\n  level: verbose\n",
			 "t.yaml:2:10: logging.level: expected one of debug, info, warn, error"));
	CHECK_STR(err, "t.yaml:2:10: logging.level: expected one of debug, info, warn, error");
	CHECK(fails_with("listeners:\n  - type: c2s\n    address: 127.0.0.1\n    port: 70000\n",
			 "t.yaml:4:11: listeners[0].port: expected an integer 1-65535"));
	CHECK_STR(err, "t.yaml:4:11: listeners[0].port: expected an integer 1-65535");
	CHECK(fails_with("limits:\n  max_depth:\n    deep: 1\n",
			 "t.yaml:3:5: limits.max_depth: expected a scalar, found a mapping"));
	CHECK(fails_with("node: [a]\n", "t.yaml:1:7: node: expected a mapping, found a sequence"));
	CHECK(fails_with("listeners: 5222\n",
			 "t.yaml:1:12: listeners: expected a sequence of listeners, found a scalar"));
	CHECK(fails_with("- a\n", "t.yaml:1:1: expected a mapping, found a sequence"));
	CHECK(fails_with("workers:\n  cpus: [0, 256]\n",
			 "t.yaml:2:13: workers.cpus[1]: expected an integer 0-255"));
	CHECK(fails_with("? [a]\n: b\n", "t.yaml:1:3: a key must be a scalar, found a sequence"));
}

static void test_yaml_syntax_errors(void)
{
	/* A syntax error wins over complaints about the values before it
	 * (here, a sequence where node.name wants a scalar). */
	CHECK(fails_with("node:\n  name: [a\n", "t.yaml:3:1: yaml syntax error: "));
	CHECK_STR(err, "t.yaml:3:1: yaml syntax error: did not find expected ',' or ']'");
	CHECK(fails_with("domain: a\n  b: c\n", "t.yaml:2:4: yaml syntax error: "));
	CHECK_STR(err, "t.yaml:2:4: yaml syntax error: mapping values are not allowed in this context");
	CHECK(fails_with("domain: \"abc\n", "t.yaml:2:1: yaml syntax error: "));
	/* Invalid UTF-8: libyaml reports a byte offset, shown as a position. */
	CHECK(fails_with("domain: a\nnode: {name: \"\xff\"}\n",
			 "t.yaml:2:15: yaml syntax error: invalid leading UTF-8 octet"));
	CHECK(fails_with("domain: a\n---\ndomain: b\n",
			 "t.yaml:2:1: only one YAML document is allowed"));
}

static void test_refused_yaml_features(void)
{
	CHECK(fails_with("node: &n {name: a}\n", "t.yaml:1:7: node: anchors are not supported"));
	CHECK(fails_with("domain: *x\n", "t.yaml:1:9: domain: aliases are not supported"));
	CHECK(fails_with("domain: !!str a\n", "t.yaml:1:9: domain: tags are not supported"));
	CHECK(fails_with("domain: \"a\\0b\"\n", "t.yaml:1:9: domain: contains a NUL character"));
}

static void test_value_checks(void)
{
	CHECK(fails_with("workers: {count: 0}\n", "t.yaml:1:18: workers.count: expected an integer 1-64"));
	CHECK(fails_with("workers: {count: 65}\n", "t.yaml:1:18: workers.count: expected an integer 1-64"));
	CHECK(fails_with("workers: {count: -1}\n", "t.yaml:1:18: workers.count:"));
	CHECK(fails_with("workers: {count: 010}\n", "t.yaml:1:18: workers.count:"));
	CHECK(fails_with("workers: {count: 2x}\n", "t.yaml:1:18: workers.count:"));
	CHECK(fails_with("workers: {count: ''}\n", "t.yaml:1:18: workers.count:"));
	CHECK(fails_with("shutdown: {drain_timeout_ms: 99999999999999999999}\n",
			 "t.yaml:1:30: shutdown.drain_timeout_ms: expected an integer 0-600000"));
	CHECK(fails_with("limits: {max_stanza_size: 1023}\n",
			 "t.yaml:1:27: limits.max_stanza_size: expected a size 1024-16777216 "
			 "(bytes, or with a k or m suffix)"));
	CHECK(fails_with("limits: {max_stanza_size: 17m}\n", "t.yaml:1:27: limits.max_stanza_size:"));
	CHECK(fails_with("limits: {max_stanza_size: 1g}\n", "t.yaml:1:27: limits.max_stanza_size:"));
	CHECK(fails_with("limits: {max_depth: 3}\n", "t.yaml:1:21: limits.max_depth: expected an integer 4-1024"));
	CHECK(fails_with("limits: {max_depth: 1k}\n", "t.yaml:1:21: limits.max_depth:"));
	CHECK(fails_with("limits: {auth_attempts: 21}\n", "t.yaml:1:25: limits.auth_attempts:"));
	CHECK(fails_with("limits: {max_connections: 1000001}\n", "t.yaml:1:27: limits.max_connections:"));
	CHECK(fails_with("limits: {max_sessions: 15}\n", "t.yaml:1:24: limits.max_sessions:"));
	CHECK(fails_with("shutdown: {drain_timeout_ms: 600001}\n", "t.yaml:1:30: shutdown.drain_timeout_ms:"));

	CHECK(fails_with("node: {name: a/b}\n",
			 "t.yaml:1:14: node.name: expected 1-63 characters from A-Z a-z 0-9 . _ -"));
	CHECK(fails_with("node: {name: ''}\n", "t.yaml:1:14: node.name:"));
	CHECK(fails_with("node: {data_dir: ''}\n", "t.yaml:1:18: node.data_dir: must not be empty"));
	CHECK(fails_with("domain: exa_mple.com\n", "t.yaml:1:9: domain: expected a domain name"));
	CHECK(fails_with("domain: -a.com\n", "t.yaml:1:9: domain:"));
	CHECK(fails_with("domain: a-.com\n", "t.yaml:1:9: domain:"));
	CHECK(fails_with("domain: a..com\n", "t.yaml:1:9: domain:"));
	CHECK(fails_with("domain: '::1'\n", "t.yaml:1:9: domain:"));
	CHECK(fails_with("domain: '[1.2.3.4]'\n", "t.yaml:1:9: domain:"));
	CHECK(fails_with("domain:\n", "t.yaml:1:8: domain:"));
	CHECK(fails_with("listeners:\n  - {type: s2s, address: 127.0.0.1, port: 5269}\n",
			 "t.yaml:2:12: listeners[0].type: expected one of c2s"));
	CHECK(fails_with("listeners:\n  - {type: c2s, address: localhost, port: 5222}\n",
			 "t.yaml:2:26: listeners[0].address: expected a numeric IPv4 or IPv6 address"));
	CHECK(fails_with("listeners:\n  - {type: c2s, address: 127.0.0.1, port: 0}\n",
			 "t.yaml:2:43: listeners[0].port: expected an integer 1-65535"));
	CHECK(fails_with("listeners:\n  - {type: c2s, address: 127.0.0.1, port: 5222, tls: off}\n",
			 "t.yaml:2:54: listeners[0].tls: expected one of required, optional"));
}

static void test_listener_rules(void)
{
	CHECK(fails_with("listeners: []\n",
			 "t.yaml:1:12: listeners: at least one listener is needed"));
	CHECK(fails_with("listeners:\n  - {type: c2s, port: 5222}\n",
			 "t.yaml:2:5: listeners[0]: missing key 'address'"));
	CHECK(fails_with("listeners:\n  -\n", "t.yaml:2:4: listeners[0]: missing key 'type'"));
	CHECK(fails_with("listeners:\n"
			 "  - {type: c2s, address: 127.0.0.1, port: 5222}\n"
			 "  - {type: c2s, address: 127.0.0.2, port: 5222}\n"
			 "  - {type: c2s, address: 127.0.0.1, port: 5222, tls: optional}\n",
			 "t.yaml:4:5: listeners[2]: 127.0.0.1:5222 is already used by listeners[0]"));
	CHECK(fails_with("listeners:\n"
			 "  - {type: c2s, address: '::1', port: 5222}\n"
			 "  - {type: c2s, address: '0::1', port: 5222}\n",
			 "t.yaml:3:5: listeners[1]: [::1]:5222 is already used by listeners[0]"));
	CHECK(fails_with("listeners:\n"
			 "  - {type: c2s, address: 10.1.2.3, port: 5222}\n"
			 "  - {type: c2s, address: 0.0.0.0, port: 5222}\n",
			 "t.yaml:3:5: listeners[1]: 0.0.0.0:5222 overlaps listeners[0] (10.1.2.3:5222)"));
	/* Different ports, or different families, do not overlap. */
	CHECK(load("listeners:\n"
		   "  - {type: c2s, address: 0.0.0.0, port: 5222}\n"
		   "  - {type: c2s, address: 127.0.0.1, port: 5223}\n"
		   "  - {type: c2s, address: '::', port: 5222}\n") == 0);
	CHECK(cfg.listener_count == 3);

	/* TLS defaults and modes by listener type. */
	CHECK(load("listeners:\n"
		   "  - {type: c2s, address: 127.0.0.1, port: 5222}\n"
		   "  - {type: component, address: 127.0.0.1, port: 5223}\n"
		   "  - {type: component, address: 127.0.0.1, port: 5224, tls: none}\n"
		   "  - {type: c2s, address: 127.0.0.1, port: 5225, tls: direct}\n") == 0);
	CHECK(cfg.listeners[0].tls == TLS_MODE_REQUIRED);
	CHECK(cfg.listeners[1].type == LISTENER_COMPONENT);
	CHECK(cfg.listeners[1].tls == TLS_MODE_DIRECT);
	CHECK(cfg.listeners[2].tls == TLS_MODE_NONE);
	CHECK(cfg.listeners[3].tls == TLS_MODE_DIRECT);
	CHECK(fails_with("listeners:\n  - {type: c2s, address: 127.0.0.1, port: 5222, tls: none}\n",
			 "t.yaml:2:49: listeners[0].tls: c2s listeners take required, optional or "
			 "direct: clients send passwords"));
	CHECK(fails_with("listeners:\n"
			 "  - {type: component, address: 127.0.0.1, port: 5223, tls: required}\n",
			 "t.yaml:2:55: listeners[0].tls: component listeners take direct (TLS from the "
			 "first byte) or none (plaintext)"));

	char many[4096] = "listeners:\n";
	for (int i = 0; i <= CONFIG_MAX_LISTENERS; i++) {
		size_t used = strlen(many);
		snprintf(many + used, sizeof many - used,
			 "  - {type: c2s, address: 127.0.0.1, port: %d}\n", 1000 + i);
	}
	CHECK(fails_with(many, "t.yaml:18:5: listeners: more than 16 listeners"));
}

static void test_tls_pairing(void)
{
	CHECK(fails_with("tls:\n  key: /k.pem\n",
			 "t.yaml:2:8: tls.key: set without tls.certificate: give both, or neither"));
	CHECK(fails_with("tls:\n  certificate: /c.pem\n  key: ''\n",
			 "t.yaml:2:16: tls.certificate: set without tls.key"));
	CHECK(fails_with("tls:\n  bundle: /b.pem\n",
			 "t.yaml:2:11: tls.bundle: set without tls.key and tls.certificate"));
}

static void test_path_lengths(void)
{
	char yaml[4096], dir[1200];

	memset(dir, 'd', 1100);
	dir[1100] = '\0';
	snprintf(yaml, sizeof yaml, "node:\n  data_dir: /%s\n", dir);
	CHECK(fails_with(yaml, "t.yaml:2:13: node.data_dir: longer than 1023 bytes"));

	/* Fits CONFIG_PATH_MAX, but the derived socket would not fit sun_path. */
	dir[100] = '\0';
	snprintf(yaml, sizeof yaml, "node:\n  data_dir: /%s\n", dir);
	CHECK(fails_with(yaml, "t.yaml:2:13: node.data_dir: too long for the control socket"));
	/* ... unless the socket is placed elsewhere. */
	snprintf(yaml, sizeof yaml, "node:\n  data_dir: /%s\ncontrol: {socket: /run/x.sock}\n", dir);
	CHECK(load(yaml) == 0);
	snprintf(yaml, sizeof yaml, "control: {socket: /%s/x.sock}\n", dir);
	CHECK(fails_with(yaml, "t.yaml:1:19: control.socket: longer than 107 bytes"));

	/* A data_dir that fits, whose derived pid file does not. */
	memset(dir, 'd', 1020);
	dir[1020] = '\0';
	snprintf(yaml, sizeof yaml, "node: {data_dir: /%s}\ncontrol: {socket: /s}\n", dir);
	CHECK(fails_with(yaml, "t.yaml:1:18: node.data_dir: too long for the pid file"));
}

static void test_config_load_file_errors(void)
{
	char small[16];

	CHECK(config_load(&cfg, "/nonexistent/x.yaml", err, sizeof err) == -1);
	CHECK_STR(err, "/nonexistent/x.yaml: cannot read: No such file or directory");
	CHECK(config_load(&cfg, "configs", err, sizeof err) == -1);
	CHECK_STR(err, "configs: cannot read: Is a directory");
	/* Messages are cut to the caller's buffer, or not written at all. */
	CHECK(config_load_string(&cfg, "t.yaml", "bogus: 1\n", small, sizeof small) == -1);
	CHECK_STR(small, "t.yaml:1:1: bog");
	CHECK(config_load_string(&cfg, "t.yaml", "bogus: 1\n", NULL, 0) == -1);
	CHECK(config_load(&cfg, "/nonexistent/x.yaml", NULL, 0) == -1);
}

static void test_config_load_from_file(void)
{
	char path[] = "/tmp/test_config_XXXXXX";
	int fd = mkstemp(path);
	static const char text[] = "domain: from.file\nlimits:\n  max_depth: 2\n";

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	CHECK(write(fd, text, sizeof text - 1) == (ssize_t)(sizeof text - 1));
	close(fd);
	CHECK(config_load(&cfg, path, err, sizeof err) == -1);
	char want[128];
	snprintf(want, sizeof want, "%s:3:14: limits.max_depth: expected an integer 4-1024", path);
	CHECK_STR(err, want);

	/* A huge file is refused before parsing. */
	fd = open(path, O_WRONLY | O_TRUNC);
	CHECK(fd >= 0 && ftruncate(fd, 2 << 20) == 0);
	if (fd >= 0)
		close(fd);
	CHECK(config_load(&cfg, path, err, sizeof err) == -1);
	snprintf(want, sizeof want, "%s: cannot read: File too large", path);
	CHECK_STR(err, want);
	unlink(path);
}

static void test_callbridges(void)
{
	char out[300], name[64];

	CHECK(load("domain: example.com\nauth: callbridge\n"
		   "callbridges:\n  auth_timeout_ms: 2500\n"
		   "  addresses: {cb2: Media.Example.NET, cb3: cb3.example.com}\n") == 0);
	CHECK(cfg.auth == AUTH_CALLBRIDGE);
	CHECK(cfg.auth_timeout_ms == 2500);
	CHECK(cfg.callbridge_address_count == 2);
	CHECK(config_callbridge_address(&cfg, "cb1", out, sizeof out) == 0);
	CHECK_STR(out, "cb1.example.com");
	CHECK(config_callbridge_address(&cfg, "cb2", out, sizeof out) == 0);
	CHECK_STR(out, "media.example.net");
	CHECK(config_callbridge_address(&cfg, "cb1", out, 8) == -ENAMETOOLONG);
	CHECK(config_callbridge_name(&cfg, "cb1.example.com", name) == 0);
	CHECK_STR(name, "cb1");
	CHECK(config_callbridge_name(&cfg, "media.example.net", name) == 0);
	CHECK_STR(name, "cb2");
	CHECK(config_callbridge_name(&cfg, "cb3.example.com", name) == 0);
	CHECK_STR(name, "cb3");
	/* mapped away: cb2 no longer answers at its default address */
	CHECK(config_callbridge_name(&cfg, "cb2.example.com", name) == -ENOENT);
	CHECK(config_callbridge_name(&cfg, "a.b.example.com", name) == -ENOENT);
	CHECK(config_callbridge_name(&cfg, "example.com", name) == -ENOENT);
	CHECK(config_callbridge_name(&cfg, ".example.com", name) == -ENOENT);
	CHECK(config_callbridge_name(&cfg, "xexample.com", name) == -ENOENT);

	CHECK(fails_with("auth: ldap\n", "t.yaml:1:7: auth: expected one of internal, callbridge"));
	CHECK(fails_with("callbridges: {addresses: {a.b: x.example.com}}\n",
			 "t.yaml:1:27: callbridges.addresses.a.b: a call bridge name is 1-63 "
			 "letters, digits and '-'"));
	CHECK(fails_with("callbridges: {addresses: {cb1: 'not a name'}}\n",
			 "t.yaml:1:32: callbridges.addresses.cb1: expected a domain name "
			 "(letters, digits, '-' and '.')"));
	CHECK(fails_with("callbridges: {addresses: {cb1: a.example, CB1: b.example}}\n",
			 "t.yaml:1:43: callbridges.addresses.CB1: duplicate call bridge"));
	CHECK(fails_with("callbridges: {auth_timeout_ms: 5}\n",
			 "t.yaml:1:32: callbridges.auth_timeout_ms: expected an integer 100-600000"));
}

static void test_names(void)
{
	CHECK_STR(config_listener_type_name(LISTENER_COMPONENT), "component");
	CHECK_STR(config_tls_mode_name(TLS_MODE_DIRECT), "direct");
	CHECK_STR(config_auth_mode_name(AUTH_CALLBRIDGE), "callbridge");
	CHECK_STR(config_listener_type_name(LISTENER_C2S), "c2s");
	CHECK_STR(config_tls_mode_name(TLS_MODE_OPTIONAL), "optional");
	CHECK_STR(config_log_level_name(LOG_LEVEL_WARN), "warn");
	CHECK_STR(config_log_level_name((enum log_level)42), "unknown");
}

/* ---- log ------------------------------------------------------------- */

static char log_path[] = "/tmp/test_log_XXXXXX";

/* The whole log file, NUL-terminated, into BUF. */
static size_t read_log(char *buf, size_t cap)
{
	int fd = open(log_path, O_RDONLY);
	ssize_t n = fd >= 0 ? read(fd, buf, cap - 1) : -1;

	if (fd >= 0)
		close(fd);
	n = n < 0 ? 0 : n;
	buf[n] = '\0';
	return (size_t)n;
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ " within a few seconds of now. */
static int timestamp_ok(const char *line)
{
	struct tm tm = {0};
	int ms = -1, used = 0;

	if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ %n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
		   &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &used) != 7 || used != 25)
		return 0;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	time_t t = timegm(&tm), now = time(NULL);
	return ms >= 0 && ms <= 999 && t <= now && now - t < 5;
}

static void test_log_format(void)
{
	int fd = mkstemp(log_path);
	char buf[8192];

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	close(fd);
	CHECK(log_open(log_path) == 0);
	log_set_name("worker 1");
	log_set_level(LOG_LEVEL_INFO);
	log_debug("hidden %d", 1);
	log_info("two\nlines\r\tand a tab");
	log_set_level(LOG_LEVEL_DEBUG);
	errno = EAGAIN;
	log_debug("shown %s", "too");
	CHECK(errno == EAGAIN);
	log_warn("w");
	log_error("e");

	read_log(buf, sizeof buf);
	char *line = strtok(buf, "\n");
	CHECK(line && timestamp_ok(line));
	CHECK(line && !strcmp(line + 25, "INFO [worker 1] two lines  and a tab"));
	line = strtok(NULL, "\n");
	CHECK(line && timestamp_ok(line) && !strcmp(line + 25, "DEBUG [worker 1] shown too"));
	line = strtok(NULL, "\n");
	CHECK(line && !strcmp(line + 25, "WARN [worker 1] w"));
	line = strtok(NULL, "\n");
	CHECK(line && !strcmp(line + 25, "ERROR [worker 1] e"));
	CHECK(strtok(NULL, "\n") == NULL);
}

static void test_log_truncates_long_lines(void)
{
	static char big[5000], buf[8192];

	CHECK(truncate(log_path, 0) == 0);
	memset(big, 'x', sizeof big - 1);
	/* A 2-byte UTF-8 character across the cut must not be split. The
	 * message starts at byte 41 (timestamp, "INFO [worker 1] "); the line
	 * holds 2047 bytes before its newline, "..." taking the last 3, so the
	 * cut falls at message byte 2003. */
	memcpy(big + 2002, "\xc3\xa9", 2);
	log_set_name("worker 1");
	log_info("%s", big);
	size_t n = read_log(buf, sizeof buf);
	CHECK(n <= 2048 && n > 2000);
	CHECK(buf[n - 1] == '\n');
	CHECK(!memcmp(buf + n - 4, "...\n", 4));
	CHECK(strchr(buf, '\n') == buf + n - 1);
	/* no lone lead byte before the marker */
	CHECK((unsigned char)buf[n - 5] < 0x80);
}

/* The descriptor flags of the fd open on log_path, or -1 if none is. */
static int log_fd_flags(void)
{
	char link[64], target[256];

	for (int fd = 3; fd < 1024; fd++) {
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		ssize_t n = readlink(link, target, sizeof target - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (!strcmp(target, log_path))
			return fcntl(fd, F_GETFD);
	}
	return -1;
}

static void test_log_reopen(void)
{
	char moved[64], buf[4096];

	snprintf(moved, sizeof moved, "%s.1", log_path);
	CHECK(truncate(log_path, 0) == 0);
	log_info("before rotation");
	CHECK(rename(log_path, moved) == 0);
	CHECK(log_open(log_path) == 0); /* what USR1 does after logrotate */
	log_info("after rotation");
	read_log(buf, sizeof buf);
	CHECK(strstr(buf, "after rotation") && !strstr(buf, "before rotation"));

	/* A failed reopen keeps the current file. */
	CHECK(log_open("/nonexistent/dir/x.log") == -ENOENT);
	log_info("still here");
	read_log(buf, sizeof buf);
	CHECK(strstr(buf, "still here") != NULL);

	/* The descriptor does not leak into programs we exec (etcd). */
	CHECK(log_fd_flags() == FD_CLOEXEC);

	CHECK(log_open(NULL) == 0);
	unlink(moved);
	unlink(log_path);
}

int main(void)
{
	RUN(test_defaults);
	RUN(test_empty_file_is_default);
	RUN(test_default_yaml_is_the_default);
	RUN(test_shipped_examples_load);
	RUN(test_every_key);
	RUN(test_derived_paths);
	RUN(test_error_messages);
	RUN(test_yaml_syntax_errors);
	RUN(test_refused_yaml_features);
	RUN(test_value_checks);
	RUN(test_listener_rules);
	RUN(test_callbridges);
	RUN(test_tls_pairing);
	RUN(test_path_lengths);
	RUN(test_config_load_file_errors);
	RUN(test_config_load_from_file);
	RUN(test_names);
	RUN(test_log_format);
	RUN(test_log_truncates_long_lines);
	RUN(test_log_reopen);
	return check_exit();
}
