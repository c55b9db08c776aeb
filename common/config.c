/*
 * config: the YAML node layout, read with libyaml's event parser.
 *
 * Why events rather than libyaml's document API: the document loader turns
 * aliases into shared (even cyclic) nodes and keeps no trace of a repeated
 * key, while events let us refuse anchors, aliases and tags outright and see
 * a duplicate key where it stands. A first pass only checks the YAML syntax
 * (see check_syntax()); the second is a recursive descent over the events,
 * one function per section, checking each value as it arrives and stopping
 * at the first error. Nothing is ever skipped, so the nesting we follow is
 * the schema's, never the file's.
 *
 * Positions: libyaml counts lines and columns from 0 (columns in characters);
 * messages count both from 1. Checks that span several keys (tls key and
 * certificate together, paths derived from data_dir) run once the whole file
 * is read, using the positions remembered while parsing.
 */
#include "common/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

/* A node layout is a few KiB; anything this big is the wrong file. */
#define CONFIG_FILE_MAX (1u << 20)
/* Longest key path in a message, e.g. "workers.cpus[255]"; unknown keys
 * from the file are cut to fit. */
#define KEY_PATH_MAX 128
#define KEY_SHOWN_MAX 64
#define WORKERS_MAX 64
#define DOMAIN_MAX 253
/* bind(2) needs the control socket's path, NUL included, in sun_path. */
#define UNIX_PATH_LIMIT (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

/* A position in the file, 1-based; line 0 means "not in the file". */
struct pos {
	unsigned line, col;
};

struct parser {
	yaml_parser_t yaml;
	yaml_event_t event; /* the current event, valid while have_event */
	bool have_event;
	const char *name;
	const char *input;
	size_t input_len;
	struct config *cfg;
	char *err;
	size_t errlen;
	/* where the keys checked after parsing were set */
	struct pos data_dir_at, tls_key_at, tls_cert_at, tls_bundle_at;
	struct pos control_socket_at, pid_file_at;
};

/* Called with the value's first event current; consumes exactly the value. */
typedef int (*key_fn)(struct parser *p, int key, const char *path, void *ctx);

static const char *const listener_type_names[] = {
	[LISTENER_C2S] = "c2s",
	[LISTENER_COMPONENT] = "component",
};
static const char *const tls_mode_names[] = {
	[TLS_MODE_REQUIRED] = "required",
	[TLS_MODE_OPTIONAL] = "optional",
	[TLS_MODE_DIRECT] = "direct",
	[TLS_MODE_NONE] = "none",
};
static const char *const auth_mode_names[] = {
	[AUTH_INTERNAL] = "internal",
	[AUTH_CALLBRIDGE] = "callbridge",
};
static const char *const log_level_names[] = {
	[LOG_LEVEL_DEBUG] = "debug",
	[LOG_LEVEL_INFO] = "info",
	[LOG_LEVEL_WARN] = "warn",
	[LOG_LEVEL_ERROR] = "error",
};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))

static const char *name_of(const char *const names[], int n, int v)
{
	return v >= 0 && v < n ? names[v] : "unknown";
}

const char *config_listener_type_name(enum listener_type t)
{
	return name_of(listener_type_names, COUNT(listener_type_names), (int)t);
}

const char *config_tls_mode_name(enum tls_mode m)
{
	return name_of(tls_mode_names, COUNT(tls_mode_names), (int)m);
}

const char *config_auth_mode_name(enum auth_mode m)
{
	return name_of(auth_mode_names, COUNT(auth_mode_names), (int)m);
}

const char *config_log_level_name(enum log_level l)
{
	return name_of(log_level_names, COUNT(log_level_names), (int)l);
}

/* DIR/FILE into OUT; a trailing slash on DIR is not doubled.
 * Returns 0 or -ENAMETOOLONG. */
static int join_path(char *out, size_t cap, const char *dir, const char *file)
{
	size_t len = strlen(dir);

	while (len > 1 && dir[len - 1] == '/')
		len--;
	int n = snprintf(out, cap, "%.*s%s%s", (int)len, dir,
			 len && dir[len - 1] == '/' ? "" : "/", file);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

static int default_worker_count(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	if (n < 1)
		return 1;
	return n > WORKERS_MAX ? WORKERS_MAX : (int)n;
}

void config_default(struct config *cfg)
{
	/* Zeroed first so that two defaults compare equal byte for byte. */
	memset(cfg, 0, sizeof *cfg);
	strcpy(cfg->source, "(built-in default)");
	strcpy(cfg->node_name, "node1");
	strcpy(cfg->data_dir, "./xmppd-data");
	strcpy(cfg->domain, "localhost");
	cfg->worker_count = default_worker_count();
	cfg->listener_count = 2;
	cfg->listeners[0].type = LISTENER_C2S;
	strcpy(cfg->listeners[0].address, "127.0.0.1");
	cfg->listeners[0].port = 5222;
	cfg->listeners[0].tls = TLS_MODE_REQUIRED;
	cfg->listeners[1].type = LISTENER_COMPONENT;
	strcpy(cfg->listeners[1].address, "127.0.0.1");
	cfg->listeners[1].port = 5223;
	cfg->listeners[1].tls = TLS_MODE_DIRECT;
	cfg->auth = AUTH_INTERNAL;
	cfg->auth_timeout_ms = 10000;
	cfg->max_stanza_size = 262144;
	cfg->max_depth = 32;
	cfg->auth_attempts = 3;
	cfg->max_connections = 200000;
	cfg->max_sessions = 131072;
	cfg->log_level = LOG_LEVEL_INFO;
	/* Both fit: the default data_dir is short. */
	join_path(cfg->control_socket, sizeof cfg->control_socket, cfg->data_dir, "xmppd.sock");
	join_path(cfg->pid_file, sizeof cfg->pid_file, cfg->data_dir, "xmppd.pid");
	cfg->drain_timeout_ms = 5000;
}

/* ---- messages ---------------------------------------------------------- */

static const struct pos nowhere;

static struct pos mark_pos(yaml_mark_t m)
{
	return (struct pos){(unsigned)m.line + 1, (unsigned)m.column + 1};
}

static struct pos event_pos(const struct parser *p)
{
	return mark_pos(p->event.start_mark);
}

/* "FILE:LINE:COL: KEY: message", leaving out the parts that do not apply. */
__attribute__((format(printf, 4, 5)))
static int fail_at(struct parser *p, struct pos at, const char *key, const char *fmt, ...)
{
	char msg[CONFIG_ERR_MAX], where[48] = "";
	va_list ap;

	if (!p->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	if (at.line)
		snprintf(where, sizeof where, ":%u:%u", at.line, at.col);
	snprintf(p->err, p->errlen, "%s%s: %s%s%s", p->name, where, key,
		 key[0] ? ": " : "", msg);
	return -1;
}

/* libyaml's reader errors carry a byte offset rather than a mark: count
 * lines and UTF-8 characters up to it ourselves. */
static struct pos offset_pos(const struct parser *p, size_t offset)
{
	struct pos at = {1, 1};

	for (size_t i = 0; i < offset && i < p->input_len; i++) {
		unsigned char c = (unsigned char)p->input[i];
		if (c == '\n') {
			at.line++;
			at.col = 1;
		} else if ((c & 0xc0) != 0x80) {
			at.col++;
		}
	}
	return at;
}

static int syntax_error(struct parser *p)
{
	const yaml_parser_t *y = &p->yaml;

	if (y->error == YAML_MEMORY_ERROR)
		return fail_at(p, nowhere, "", "out of memory");
	struct pos at = y->error == YAML_READER_ERROR ? offset_pos(p, y->problem_offset)
						      : mark_pos(y->problem_mark);
	return fail_at(p, at, "", "yaml syntax error: %s",
		       y->problem ? y->problem : "unknown problem");
}

/* libyaml reports a syntax error only on reaching it, after the events that
 * come before it. A first pass over the whole stream lets a syntax error win
 * over complaints about earlier values, which would otherwise describe text
 * the operator never meant (an unclosed bracket or quote swallows what
 * follows it). */
static int check_syntax(struct parser *p)
{
	yaml_event_t ev;

	for (;;) {
		if (!yaml_parser_parse(&p->yaml, &ev))
			return syntax_error(p);
		bool end = ev.type == YAML_STREAM_END_EVENT;
		yaml_event_delete(&ev);
		if (end)
			return 0;
	}
}

static const char *event_kind(const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_SCALAR_EVENT:
		return "a scalar";
	case YAML_SEQUENCE_START_EVENT:
		return "a sequence";
	case YAML_MAPPING_START_EVENT:
		return "a mapping";
	default:
		return "something else";
	}
}

/* ---- events ------------------------------------------------------------ */

/* Advance to the next event. Anchors, aliases and tags are refused: the
 * node layout has no use for them, and refusing them keeps every value
 * exactly where it is written. KEY names the value being read. */
static int next_event(struct parser *p, const char *key)
{
	const yaml_char_t *anchor = NULL, *tag = NULL;

	if (p->have_event) {
		yaml_event_delete(&p->event);
		p->have_event = false;
	}
	if (!yaml_parser_parse(&p->yaml, &p->event))
		return syntax_error(p);
	p->have_event = true;

	switch (p->event.type) {
	case YAML_ALIAS_EVENT:
		return fail_at(p, event_pos(p), key, "aliases are not supported");
	case YAML_SCALAR_EVENT:
		anchor = p->event.data.scalar.anchor;
		tag = p->event.data.scalar.tag;
		break;
	case YAML_SEQUENCE_START_EVENT:
		anchor = p->event.data.sequence_start.anchor;
		tag = p->event.data.sequence_start.tag;
		break;
	case YAML_MAPPING_START_EVENT:
		anchor = p->event.data.mapping_start.anchor;
		tag = p->event.data.mapping_start.tag;
		break;
	default:
		break;
	}
	if (anchor)
		return fail_at(p, event_pos(p), key, "anchors are not supported");
	if (tag)
		return fail_at(p, event_pos(p), key, "tags are not supported");
	return 0;
}

/* An empty or ~/null plain scalar: "section:" with nothing under it. */
static bool event_is_null(const yaml_event_t *ev)
{
	if (ev->type != YAML_SCALAR_EVENT || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = (const char *)ev->data.scalar.value;
	return !s[0] || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
	       !strcmp(s, "NULL");
}

/* The current event's text. An embedded NUL (possible through "\0" in a
 * double-quoted string) is refused rather than silently cutting the value. */
static int scalar(struct parser *p, const char *path, const char **s, size_t *len)
{
	if (p->event.type != YAML_SCALAR_EVENT)
		return fail_at(p, event_pos(p), path, "expected a scalar, found %s",
			       event_kind(&p->event));
	*s = (const char *)p->event.data.scalar.value;
	*len = p->event.data.scalar.length;
	if (memchr(*s, '\0', *len))
		return fail_at(p, event_pos(p), path, "contains a NUL character");
	return 0;
}

/* A string into DST; null means empty. */
static int read_string(struct parser *p, const char *path, char *dst, size_t cap)
{
	const char *s;
	size_t len;

	if (scalar(p, path, &s, &len))
		return -1;
	if (event_is_null(&p->event))
		len = 0;
	if (len >= cap)
		return fail_at(p, event_pos(p), path, "longer than %zu bytes", cap - 1);
	memcpy(dst, s, len);
	dst[len] = '\0';
	return 0;
}

/* A decimal integer LO..HI. Leading zeros are refused: YAML 1.1 reads 010
 * as octal, and we will not guess which the operator meant. With
 * SIZE_SUFFIX, a k or m suffix multiplies by 1024 or 1048576. */
static int read_uint(struct parser *p, const char *path, uint32_t lo, uint32_t hi,
		     bool size_suffix, uint32_t *out)
{
	const char *s;
	size_t len, i = 0;
	uint64_t v = 0;

	if (scalar(p, path, &s, &len))
		return -1;
	if (len > 1 && s[0] == '0')
		goto bad;
	for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			goto bad;
	}
	if (i == 0)
		goto bad;
	if (size_suffix && i + 1 == len) {
		if (s[i] == 'k' || s[i] == 'K')
			v <<= 10;
		else if (s[i] == 'm' || s[i] == 'M')
			v <<= 20;
		else
			goto bad;
		i++;
	}
	if (i != len || v < lo || v > hi)
		goto bad;
	*out = (uint32_t)v;
	return 0;
bad:
	if (size_suffix)
		return fail_at(p, event_pos(p), path,
			       "expected a size %u-%u (bytes, or with a k or m suffix)", lo, hi);
	return fail_at(p, event_pos(p), path, "expected an integer %u-%u", lo, hi);
}

static int read_int(struct parser *p, const char *path, int lo, int hi, int *out)
{
	uint32_t v;

	if (read_uint(p, path, (uint32_t)lo, (uint32_t)hi, false, &v))
		return -1;
	*out = (int)v;
	return 0;
}

static int read_enum(struct parser *p, const char *path, const char *const names[], int n,
		     int *out)
{
	const char *s;
	size_t len;
	char list[128] = "";

	if (scalar(p, path, &s, &len))
		return -1;
	for (int i = 0; i < n; i++) {
		if (!strcmp(s, names[i])) {
			*out = i;
			return 0;
		}
		size_t used = strlen(list);
		snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", names[i]);
	}
	return fail_at(p, event_pos(p), path, "expected one of %s", list);
}

static void key_path(char *out, const char *parent, const char *key, size_t len)
{
	int shown = len > KEY_SHOWN_MAX ? KEY_SHOWN_MAX : (int)len;

	if (parent[0])
		snprintf(out, KEY_PATH_MAX, "%s.%.*s", parent, shown, key);
	else
		snprintf(out, KEY_PATH_MAX, "%.*s", shown, key);
}

/* The current event is the value at PATH: read that mapping to its end,
 * calling ON_KEY for each key in KEYS. SEEN (one per key, zeroed by the
 * caller) receives where each key was given, for duplicates and for the
 * caller's own "missing key" checks. A null value counts as an empty
 * mapping, so a section whose keys are all commented out means defaults. */
static int parse_mapping(struct parser *p, const char *path, const char *const keys[],
			 int nkeys, struct pos seen[], key_fn on_key, void *ctx)
{
	if (event_is_null(&p->event))
		return 0;
	if (p->event.type != YAML_MAPPING_START_EVENT)
		return fail_at(p, event_pos(p), path, "expected a mapping, found %s",
			       event_kind(&p->event));
	for (;;) {
		char child[KEY_PATH_MAX];
		const char *name;
		size_t len;
		int k;

		if (next_event(p, path))
			return -1;
		if (p->event.type == YAML_MAPPING_END_EVENT)
			return 0;
		struct pos at = event_pos(p);
		if (p->event.type != YAML_SCALAR_EVENT)
			return fail_at(p, at, path, "a key must be a scalar, found %s",
				       event_kind(&p->event));
		name = (const char *)p->event.data.scalar.value;
		len = p->event.data.scalar.length;
		key_path(child, path, name, len);
		for (k = 0; k < nkeys; k++)
			if (strlen(keys[k]) == len && !memcmp(keys[k], name, len))
				break;
		if (k == nkeys) {
			char list[256] = "";
			for (int i = 0; i < nkeys; i++) {
				size_t used = strlen(list);
				snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "",
					 keys[i]);
			}
			return fail_at(p, at, child, "unknown key (known here: %s)", list);
		}
		if (seen[k].line)
			return fail_at(p, at, child, "duplicate key (first at line %u)",
				       seen[k].line);
		seen[k] = at;
		if (next_event(p, child) || on_key(p, k, child, ctx))
			return -1;
	}
}

/* ---- values with their own syntax -------------------------------------- */

static bool node_name_valid(const char *s, size_t len)
{
	if (len < 1 || len > 63)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* A DNS name (ASCII letters, digits, '-' between labels, case-folded; a
 * non-ASCII name goes in its xn-- form) or an IP literal: a.b.c.d or [v6],
 * as RFC 7622 writes them in a domainpart. One trailing dot is dropped, as
 * common/jid.c does, so the domain compares equal to the JIDs' domains. */
static bool domain_normalize(char *out, const char *s, size_t len)
{
	if (len > 1 && s[len - 1] == '.')
		len--;
	if (len < 1 || len > DOMAIN_MAX)
		return false;
	if (s[0] == '[') {
		char addr[INET6_ADDRSTRLEN];
		unsigned char bin[16];
		if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof addr)
			return false;
		memcpy(addr, s + 1, len - 2);
		addr[len - 2] = '\0';
		if (inet_pton(AF_INET6, addr, bin) != 1)
			return false;
	} else {
		size_t label = 0;
		for (size_t i = 0; i <= len; i++) {
			char c = i < len ? s[i] : '.';
			if (c == '.') {
				if (label == 0 || label > 63 || s[i - 1] == '-')
					return false;
				label = 0;
			} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
				   (c >= '0' && c <= '9') || (c == '-' && label > 0)) {
				label++;
			} else {
				return false;
			}
		}
	}
	for (size_t i = 0; i < len; i++)
		out[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] - 'A' + 'a') : s[i];
	out[len] = '\0';
	return true;
}

/* Numeric IPv4 or IPv6 into BIN (16 bytes). Returns the family or 0. */
static int address_parse(const char *s, unsigned char *bin)
{
	if (inet_pton(AF_INET, s, bin) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, bin) == 1)
		return AF_INET6;
	return 0;
}

/* Two listeners on the same port overlap when their addresses are equal or
 * one is its family's wildcard. The supervisor binds with SO_REUSEPORT, so
 * the kernel would accept both and quietly split or steal the connections:
 * this check is the only place such a mistake is caught. Families never
 * overlap because IPv6 listeners are bound IPV6_V6ONLY: [::] takes no IPv4. */
static bool listeners_overlap(const struct listener_config *a, const struct listener_config *b)
{
	static const unsigned char any[16];
	unsigned char ba[16], bb[16];
	int fa, fb;

	if (a->port != b->port)
		return false;
	fa = address_parse(a->address, ba);
	fb = address_parse(b->address, bb);
	if (fa != fb)
		return false;
	size_t n = fa == AF_INET ? 4 : 16;
	return !memcmp(ba, bb, n) || !memcmp(ba, any, n) || !memcmp(bb, any, n);
}

/* ---- sections ---------------------------------------------------------- */

enum { NODE_NAME, NODE_DATA_DIR };
static const char *const node_keys[] = {"name", "data_dir"};

static int on_node_key(struct parser *p, int key, const char *path, void *ctx)
{
	struct config *cfg = p->cfg;
	const char *s;
	size_t len;

	switch (key) {
	case NODE_NAME:
		if (scalar(p, path, &s, &len))
			return -1;
		if (!node_name_valid(s, len))
			return fail_at(p, event_pos(p), path,
				       "expected 1-63 characters from A-Z a-z 0-9 . _ -");
		memcpy(cfg->node_name, s, len + 1);
		return 0;
	case NODE_DATA_DIR:
		p->data_dir_at = event_pos(p);
		if (read_string(p, path, cfg->data_dir, sizeof cfg->data_dir))
			return -1;
		if (!cfg->data_dir[0])
			return fail_at(p, event_pos(p), path, "must not be empty");
		return 0;
	}
	return -1;
}

static int parse_domain(struct parser *p, const char *path)
{
	const char *s;
	size_t len;

	if (scalar(p, path, &s, &len))
		return -1;
	if (!domain_normalize(p->cfg->domain, s, len))
		return fail_at(p, event_pos(p), path,
			       "expected a domain name (letters, digits, '-' and '.') "
			       "or an IP address literal (192.0.2.1, [2001:db8::1])");
	return 0;
}

static int parse_cpus(struct parser *p, const char *path)
{
	struct config *cfg = p->cfg;

	if (p->event.type != YAML_SEQUENCE_START_EVENT)
		return fail_at(p, event_pos(p), path, "expected a sequence of CPU numbers, found %s",
			       event_kind(&p->event));
	cfg->cpu_count = 0;
	for (;;) {
		char item[KEY_PATH_MAX];

		if (next_event(p, path))
			return -1;
		if (p->event.type == YAML_SEQUENCE_END_EVENT)
			return 0;
		if (cfg->cpu_count == CONFIG_MAX_CPUS)
			return fail_at(p, event_pos(p), path, "more than %d CPUs", CONFIG_MAX_CPUS);
		snprintf(item, sizeof item, "%s[%d]", path, cfg->cpu_count);
		if (read_int(p, item, 0, CONFIG_MAX_CPUS - 1, &cfg->cpus[cfg->cpu_count]))
			return -1;
		cfg->cpu_count++;
	}
}

enum { WORKERS_COUNT, WORKERS_CPUS };
static const char *const workers_keys[] = {"count", "cpus"};

static int on_workers_key(struct parser *p, int key, const char *path, void *ctx)
{
	switch (key) {
	case WORKERS_COUNT:
		return read_int(p, path, 1, WORKERS_MAX, &p->cfg->worker_count);
	case WORKERS_CPUS:
		return parse_cpus(p, path);
	}
	return -1;
}

enum { LISTENER_TYPE, LISTENER_ADDRESS, LISTENER_PORT, LISTENER_TLS, LISTENER_KEYS };
static const char *const listener_keys[] = {"type", "address", "port", "tls"};

static int on_listener_key(struct parser *p, int key, const char *path, void *ctx)
{
	struct listener_config *l = ctx;
	unsigned char bin[16];
	const char *s;
	size_t len;
	uint32_t port;
	int v, family;

	switch (key) {
	case LISTENER_TYPE:
		if (read_enum(p, path, listener_type_names, COUNT(listener_type_names), &v))
			return -1;
		l->type = (enum listener_type)v;
		return 0;
	case LISTENER_ADDRESS:
		if (scalar(p, path, &s, &len))
			return -1;
		family = address_parse(s, bin);
		if (!family)
			return fail_at(p, event_pos(p), path,
				       "expected a numeric IPv4 or IPv6 address");
		/* Stored in inet_ntop's canonical form, so logs show one spelling. */
		inet_ntop(family, bin, l->address, sizeof l->address);
		return 0;
	case LISTENER_PORT:
		if (read_uint(p, path, 1, 65535, false, &port))
			return -1;
		l->port = (uint16_t)port;
		return 0;
	case LISTENER_TLS:
		if (read_enum(p, path, tls_mode_names, COUNT(tls_mode_names), &v))
			return -1;
		l->tls = (enum tls_mode)v;
		return 0;
	}
	return -1;
}

/* "address:port", IPv6 in brackets, for messages. */
static void format_endpoint(char *out, size_t cap, const struct listener_config *l)
{
	bool v6 = strchr(l->address, ':') != NULL;

	snprintf(out, cap, "%s%s%s:%u", v6 ? "[" : "", l->address, v6 ? "]" : "", l->port);
}

/* type, address and port have no default: a listener is exposed to the
 * network and says so in full; tls defaults to required for c2s and to
 * direct for components. */
static int parse_listener(struct parser *p, const char *path, int index)
{
	struct config *cfg = p->cfg;
	struct listener_config *l = &cfg->listeners[index];
	struct pos seen[LISTENER_KEYS] = {{0, 0}};
	struct pos at = event_pos(p);

	memset(l, 0, sizeof *l);
	l->type = LISTENER_C2S;
	l->tls = TLS_MODE_REQUIRED;
	if (parse_mapping(p, path, listener_keys, COUNT(listener_keys), seen, on_listener_key, l))
		return -1;
	for (int k = LISTENER_TYPE; k <= LISTENER_PORT; k++)
		if (!seen[k].line)
			return fail_at(p, at, path, "missing key '%s'", listener_keys[k]);
	char tls_path[KEY_PATH_MAX + 8];
	snprintf(tls_path, sizeof tls_path, "%s.tls", path);
	if (!seen[LISTENER_TLS].line && l->type == LISTENER_COMPONENT)
		l->tls = TLS_MODE_DIRECT;
	if (l->type == LISTENER_C2S && l->tls == TLS_MODE_NONE)
		return fail_at(p, seen[LISTENER_TLS], tls_path,
			       "c2s listeners take required, optional or direct: clients "
			       "send passwords");
	if (l->type == LISTENER_COMPONENT &&
	    (l->tls == TLS_MODE_REQUIRED || l->tls == TLS_MODE_OPTIONAL))
		return fail_at(p, seen[LISTENER_TLS], tls_path,
			       "component listeners take direct (TLS from the first byte) "
			       "or none (plaintext)");
	for (int i = 0; i < index; i++) {
		char mine[96], theirs[96];
		if (!listeners_overlap(l, &cfg->listeners[i]))
			continue;
		format_endpoint(mine, sizeof mine, l);
		format_endpoint(theirs, sizeof theirs, &cfg->listeners[i]);
		if (!strcmp(mine, theirs))
			return fail_at(p, at, path, "%s is already used by listeners[%d]", mine, i);
		return fail_at(p, at, path, "%s overlaps listeners[%d] (%s)", mine, i, theirs);
	}
	return 0;
}

static int parse_listeners(struct parser *p, const char *path)
{
	struct config *cfg = p->cfg;
	struct pos at = event_pos(p);

	if (p->event.type != YAML_SEQUENCE_START_EVENT)
		return fail_at(p, at, path, "expected a sequence of listeners, found %s",
			       event_kind(&p->event));
	cfg->listener_count = 0;
	for (;;) {
		char item[KEY_PATH_MAX];

		if (next_event(p, path))
			return -1;
		if (p->event.type == YAML_SEQUENCE_END_EVENT)
			break;
		if (cfg->listener_count == CONFIG_MAX_LISTENERS)
			return fail_at(p, event_pos(p), path, "more than %d listeners",
				       CONFIG_MAX_LISTENERS);
		snprintf(item, sizeof item, "%s[%d]", path, cfg->listener_count);
		if (parse_listener(p, item, cfg->listener_count))
			return -1;
		cfg->listener_count++;
	}
	if (!cfg->listener_count)
		return fail_at(p, at, path, "at least one listener is needed");
	return 0;
}

enum { TLS_KEY, TLS_CERTIFICATE, TLS_BUNDLE };
static const char *const tls_keys[] = {"key", "certificate", "bundle"};

static int on_tls_key(struct parser *p, int key, const char *path, void *ctx)
{
	struct config *cfg = p->cfg;

	switch (key) {
	case TLS_KEY:
		p->tls_key_at = event_pos(p);
		return read_string(p, path, cfg->tls_key, sizeof cfg->tls_key);
	case TLS_CERTIFICATE:
		p->tls_cert_at = event_pos(p);
		return read_string(p, path, cfg->tls_cert, sizeof cfg->tls_cert);
	case TLS_BUNDLE:
		p->tls_bundle_at = event_pos(p);
		return read_string(p, path, cfg->tls_bundle, sizeof cfg->tls_bundle);
	}
	return -1;
}

enum { LIMIT_STANZA, LIMIT_DEPTH, LIMIT_AUTH, LIMIT_CONNECTIONS, LIMIT_SESSIONS };
static const char *const limits_keys[] = {
	"max_stanza_size", "max_depth", "auth_attempts", "max_connections", "max_sessions",
};

static int on_limits_key(struct parser *p, int key, const char *path, void *ctx)
{
	struct config *cfg = p->cfg;

	switch (key) {
	case LIMIT_STANZA:
		return read_uint(p, path, 1024, 16777216, true, &cfg->max_stanza_size);
	case LIMIT_DEPTH:
		return read_uint(p, path, 4, 1024, false, &cfg->max_depth);
	case LIMIT_AUTH:
		return read_uint(p, path, 1, 20, false, &cfg->auth_attempts);
	case LIMIT_CONNECTIONS:
		return read_uint(p, path, 1, 1000000, false, &cfg->max_connections);
	case LIMIT_SESSIONS:
		return read_uint(p, path, 16, 4194304, false, &cfg->max_sessions);
	}
	return -1;
}

enum { LOGGING_LEVEL, LOGGING_FILE };
static const char *const logging_keys[] = {"level", "file"};

static int on_logging_key(struct parser *p, int key, const char *path, void *ctx)
{
	struct config *cfg = p->cfg;
	int v;

	switch (key) {
	case LOGGING_LEVEL:
		if (read_enum(p, path, log_level_names, COUNT(log_level_names), &v))
			return -1;
		cfg->log_level = (enum log_level)v;
		return 0;
	case LOGGING_FILE:
		return read_string(p, path, cfg->log_file, sizeof cfg->log_file);
	}
	return -1;
}

enum { CONTROL_SOCKET };
static const char *const control_keys[] = {"socket"};

static int on_control_key(struct parser *p, int key, const char *path, void *ctx)
{
	p->control_socket_at = event_pos(p);
	return read_string(p, path, p->cfg->control_socket, sizeof p->cfg->control_socket);
}

enum { SHUTDOWN_DRAIN };
static const char *const shutdown_keys[] = {"drain_timeout_ms"};

static int on_shutdown_key(struct parser *p, int key, const char *path, void *ctx)
{
	return read_uint(p, path, 0, 600000, false, &p->cfg->drain_timeout_ms);
}

/* callbridges.addresses: NAME: ADDRESS pairs. */
static int parse_callbridge_addresses(struct parser *p, const char *path)
{
	struct config *cfg = p->cfg;

	if (event_is_null(&p->event))
		return 0;
	if (p->event.type != YAML_MAPPING_START_EVENT)
		return fail_at(p, event_pos(p), path, "expected a mapping NAME: ADDRESS, found %s",
			       event_kind(&p->event));
	for (;;) {
		char child[KEY_PATH_MAX];
		const char *s;
		size_t len;

		if (next_event(p, path))
			return -1;
		if (p->event.type == YAML_MAPPING_END_EVENT)
			return 0;
		struct pos at = event_pos(p);
		if (scalar(p, path, &s, &len))
			return -1;
		key_path(child, path, s, len);
		if (cfg->callbridge_address_count == CONFIG_MAX_CALLBRIDGE_ADDRESSES)
			return fail_at(p, at, child, "more than %d call bridges",
				       CONFIG_MAX_CALLBRIDGE_ADDRESSES);
		int i = cfg->callbridge_address_count;
		char *name = cfg->callbridge_addresses[i].name;
		/* a bridge name is one DNS label: its default address is NAME.DOMAIN */
		if (len >= sizeof cfg->callbridge_addresses[i].name || memchr(s, '.', len) ||
		    !domain_normalize(name, s, len) || name[0] == '[' ||
		    strspn(name, "0123456789") == len)
			return fail_at(p, at, child,
				       "a call bridge name is 1-63 letters, digits and '-'");
		for (int k = 0; k < i; k++)
			if (!strcmp(cfg->callbridge_addresses[k].name, name))
				return fail_at(p, at, child, "duplicate call bridge");
		if (next_event(p, child) || scalar(p, child, &s, &len))
			return -1;
		if (!domain_normalize(cfg->callbridge_addresses[i].address, s, len) ||
		    cfg->callbridge_addresses[i].address[0] == '[')
			return fail_at(p, event_pos(p), child,
				       "expected a domain name (letters, digits, '-' and '.')");
		cfg->callbridge_address_count++;
	}
}

enum { CALLBRIDGES_AUTH_TIMEOUT, CALLBRIDGES_ADDRESSES };
static const char *const callbridges_keys[] = {"auth_timeout_ms", "addresses"};

static int on_callbridges_key(struct parser *p, int key, const char *path, void *ctx)
{
	switch (key) {
	case CALLBRIDGES_AUTH_TIMEOUT:
		return read_uint(p, path, 100, 600000, false, &p->cfg->auth_timeout_ms);
	case CALLBRIDGES_ADDRESSES:
		p->cfg->callbridge_address_count = 0;
		return parse_callbridge_addresses(p, path);
	}
	return -1;
}

/* A section with sub-keys, each with a fresh zeroed 'seen' array. */
#define SECTION(keys, fn)                                                                  \
	parse_mapping(p, path, keys, COUNT(keys), (struct pos[COUNT(keys)]){{0, 0}}, fn, NULL)

enum {
	TOP_NODE, TOP_DOMAIN, TOP_WORKERS, TOP_LISTENERS, TOP_TLS, TOP_LIMITS,
	TOP_LOGGING, TOP_CONTROL, TOP_PID_FILE, TOP_SHUTDOWN, TOP_AUTH, TOP_CALLBRIDGES,
	TOP_KEYS
};
static const char *const top_keys[] = {
	"node", "domain", "workers", "listeners", "tls",
	"limits", "logging", "control", "pid_file", "shutdown", "auth", "callbridges",
};

static int on_top_key(struct parser *p, int key, const char *path, void *ctx)
{
	switch (key) {
	case TOP_NODE:
		return SECTION(node_keys, on_node_key);
	case TOP_DOMAIN:
		return parse_domain(p, path);
	case TOP_WORKERS:
		return SECTION(workers_keys, on_workers_key);
	case TOP_LISTENERS:
		return parse_listeners(p, path);
	case TOP_TLS:
		return SECTION(tls_keys, on_tls_key);
	case TOP_LIMITS:
		return SECTION(limits_keys, on_limits_key);
	case TOP_LOGGING:
		return SECTION(logging_keys, on_logging_key);
	case TOP_CONTROL:
		return SECTION(control_keys, on_control_key);
	case TOP_PID_FILE:
		p->pid_file_at = event_pos(p);
		return read_string(p, path, p->cfg->pid_file, sizeof p->cfg->pid_file);
	case TOP_SHUTDOWN:
		return SECTION(shutdown_keys, on_shutdown_key);
	case TOP_AUTH: {
		int v;
		if (read_enum(p, path, auth_mode_names, COUNT(auth_mode_names), &v))
			return -1;
		p->cfg->auth = (enum auth_mode)v;
		return 0;
	}
	case TOP_CALLBRIDGES:
		return SECTION(callbridges_keys, on_callbridges_key);
	}
	return -1;
}

/* The stream: no document (an empty file, or only comments) means the
 * defaults; one document must be a mapping of the keys above (or null). */
static int parse_stream(struct parser *p)
{
	struct pos seen[TOP_KEYS] = {{0, 0}};

	/* stream start, then a document start or the stream's end */
	if (next_event(p, "") || next_event(p, ""))
		return -1;
	if (p->event.type == YAML_STREAM_END_EVENT)
		return 0;
	/* the root value, the document end, then the stream's end (or more) */
	if (next_event(p, "") ||
	    parse_mapping(p, "", top_keys, TOP_KEYS, seen, on_top_key, NULL) ||
	    next_event(p, "") || next_event(p, ""))
		return -1;
	if (p->event.type != YAML_STREAM_END_EVENT)
		return fail_at(p, event_pos(p), "", "only one YAML document is allowed");
	return 0;
}

/* Cross-key checks and the paths derived from data_dir. */
static int finish(struct parser *p)
{
	struct config *cfg = p->cfg;
	bool key = cfg->tls_key[0], cert = cfg->tls_cert[0];

	if (key != cert)
		return fail_at(p, key ? p->tls_key_at : p->tls_cert_at,
			       key ? "tls.key" : "tls.certificate",
			       "set without tls.%s: give both, or neither for a self-signed "
			       "certificate made in the data directory",
			       key ? "certificate" : "key");
	if (cfg->tls_bundle[0] && !key)
		return fail_at(p, p->tls_bundle_at, "tls.bundle",
			       "set without tls.key and tls.certificate");

	if (!cfg->control_socket[0]) {
		if (join_path(cfg->control_socket, sizeof cfg->control_socket, cfg->data_dir,
			      "xmppd.sock") < 0 ||
		    strlen(cfg->control_socket) > UNIX_PATH_LIMIT)
			return fail_at(p, p->data_dir_at, "node.data_dir",
				       "too long for the control socket DATA_DIR/xmppd.sock "
				       "(a unix socket path has at most %zu bytes): shorten it "
				       "or set control.socket",
				       UNIX_PATH_LIMIT);
	} else if (strlen(cfg->control_socket) > UNIX_PATH_LIMIT) {
		return fail_at(p, p->control_socket_at, "control.socket",
			       "longer than %zu bytes, the limit of a unix socket path",
			       UNIX_PATH_LIMIT);
	}
	if (!cfg->pid_file[0] &&
	    join_path(cfg->pid_file, sizeof cfg->pid_file, cfg->data_dir, "xmppd.pid") < 0)
		return fail_at(p, p->data_dir_at, "node.data_dir",
			       "too long for the pid file DATA_DIR/xmppd.pid");
	return 0;
}

static int load(struct config *cfg, const char *name, const char *input, size_t len,
		char *err, size_t errlen)
{
	struct parser p = {
		.name = name, .input = input, .input_len = len,
		.cfg = cfg, .err = err, .errlen = errlen,
	};
	int rc;

	config_default(cfg);
	snprintf(cfg->source, sizeof cfg->source, "%s", name);
	/* Empty until finish(): derived from the final data_dir unless set. */
	cfg->control_socket[0] = '\0';
	cfg->pid_file[0] = '\0';

	for (int pass = 0; pass < 2; pass++) {
		if (!yaml_parser_initialize(&p.yaml))
			return fail_at(&p, nowhere, "", "out of memory");
		yaml_parser_set_input_string(&p.yaml, (const unsigned char *)input, len);
		yaml_parser_set_encoding(&p.yaml, YAML_UTF8_ENCODING);
		if (pass == 0)
			rc = check_syntax(&p);
		else
			rc = parse_stream(&p) || finish(&p) ? -1 : 0;
		if (p.have_event)
			yaml_event_delete(&p.event);
		p.have_event = false;
		yaml_parser_delete(&p.yaml);
		if (rc)
			return rc;
	}
	if (errlen)
		err[0] = '\0';
	return 0;
}

int config_callbridge_address(const struct config *cfg, const char *name, char *out,
			      size_t cap)
{
	for (int i = 0; i < cfg->callbridge_address_count; i++)
		if (!strcmp(cfg->callbridge_addresses[i].name, name)) {
			int n = snprintf(out, cap, "%s", cfg->callbridge_addresses[i].address);
			return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
		}
	int n = snprintf(out, cap, "%s.%s", name, cfg->domain);
	return n < 0 || (size_t)n >= cap ? -ENAMETOOLONG : 0;
}

int config_callbridge_name(const struct config *cfg, const char *address, char out[64])
{
	for (int i = 0; i < cfg->callbridge_address_count; i++)
		if (!strcmp(cfg->callbridge_addresses[i].address, address)) {
			strcpy(out, cfg->callbridge_addresses[i].name);
			return 0;
		}
	size_t dlen = strlen(cfg->domain), alen = strlen(address);
	if (alen < dlen + 2 || address[alen - dlen - 1] != '.' ||
	    strcmp(address + alen - dlen, cfg->domain))
		return -ENOENT;
	size_t nlen = alen - dlen - 1;
	if (nlen >= 64 || memchr(address, '.', nlen))
		return -ENOENT;
	/* a name mapped elsewhere does not also answer at NAME.DOMAIN */
	for (int i = 0; i < cfg->callbridge_address_count; i++)
		if (strlen(cfg->callbridge_addresses[i].name) == nlen &&
		    !memcmp(cfg->callbridge_addresses[i].name, address, nlen))
			return -ENOENT;
	memcpy(out, address, nlen);
	out[nlen] = '\0';
	return 0;
}

int config_load_string(struct config *cfg, const char *name, const char *yaml, char *err,
		       size_t errlen)
{
	return load(cfg, name, yaml, strlen(yaml), err, errlen);
}

/* The whole file into a malloc'd buffer. Returns 0 or -errno. */
static int read_file(const char *path, char **out, size_t *outlen)
{
	size_t cap = 4096, len = 0;
	char *buf = NULL;
	int rc, fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return -errno;
	buf = malloc(cap);
	if (!buf) {
		rc = -ENOMEM;
		goto fail;
	}
	for (;;) {
		if (len == cap) {
			char *bigger;
			if (cap >= CONFIG_FILE_MAX) {
				rc = -EFBIG;
				goto fail;
			}
			bigger = realloc(buf, cap * 2);
			if (!bigger) {
				rc = -ENOMEM;
				goto fail;
			}
			buf = bigger;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
fail:
	free(buf);
	close(fd);
	return rc;
}

int config_load(struct config *cfg, const char *path, char *err, size_t errlen)
{
	char *buf = NULL;
	size_t len = 0;
	int rc = read_file(path, &buf, &len);

	if (rc < 0) {
		if (errlen)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(-rc));
		return -1;
	}
	rc = load(cfg, path, buf, len, err, errlen);
	free(buf);
	return rc;
}

void config_tls_paths(const struct config *cfg, char *key, char *cert, size_t cap)
{
	if (cfg->tls_key[0]) {
		snprintf(key, cap, "%s", cfg->tls_key);
		snprintf(cert, cap, "%s", cfg->tls_cert);
	} else {
		snprintf(key, cap, "%s/tls/key.pem", cfg->data_dir);
		snprintf(cert, cap, "%s/tls/cert.pem", cfg->data_dir);
	}
}
