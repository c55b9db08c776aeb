/*
 * c2s.c: client-to-server streams (RFC 6120) and IM routing (RFC 6121).
 *
 * A stream goes WAIT_STREAM -> (STARTTLS -> TLS_HANDSHAKE -> WAIT_STREAM)
 * -> WAIT_AUTH / SASL -> (restart) WAIT_STREAM -> WAIT_BIND -> BOUND.
 *
 * Routing never builds a tree for a stanza it only forwards: the parser
 * hands over the stanza's bytes, 'from' is stamped by rewriting the start
 * tag only (stanza_set_from), and the bytes go to the recipient's
 * connection: appended to its output when it lives on this worker, or
 * pushed into the owning worker's inbound ring with a small header
 * (struct route_hdr) that carries what the receiver needs to apply the
 * RFC 6121 8.5 rules should the connection have gone meanwhile.
 *
 * Presence: a session's last broadcast presence is kept (stamped) so that a
 * resource coming online can be told about the account's other resources;
 * for a resource on another worker this is a PROBE message answered by the
 * worker that holds it. There are no rosters yet, so presence goes to the
 * account's own resources and to explicit directed recipients only.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/jid.h"
#include "common/log.h"
#include "common/slab.h"
#include "shm/sessdir.h"
#include "storage/accounts.h"
#include "workers/router.h"
#include "workers/stanza.h"
#include "workers/tls.h"
#include "workers/worker.h"
#include "workers/xmlstream.h"

#define XMLNS_PING "urn:xmpp:ping"
#define XMLNS_DISCO_INFO "http://jabber.org/protocol/disco#info"
#define XMLNS_DISCO_ITEMS "http://jabber.org/protocol/disco#items"
#define XMLNS_ROSTER "jabber:iq:roster"
#define AUTH_TIMEOUT_MS 60000
/* A stream without input for this long gives up its XML parser
 * (xmlstream_hibernate): about 10 KiB back, for about 8 us of CPU (2 to
 * free it, 6 to rebuild it when bytes come). Idle clients are silent for
 * minutes, while a log-in or a conversation sends stanzas seconds or less
 * apart: a few seconds keeps the parsers of active streams, and even a
 * client that wakes its stream every time costs at most 8 us per 5 s. */
#define HIBERNATE_AFTER_MS 5000
#define BARE_FANOUT 64

enum pending_action { ACT_NONE = 0, ACT_STARTTLS, ACT_RESTART };

/* Per-connection protocol state that the loop does not need. */
struct c2s_extra {
	enum pending_action action;
	char *presence;      /* last broadcast presence, 'from' stamped */
	size_t presence_len;
	bool offered_plus;
	/* The client tried -PLUS with a binding type we do not have (e.g.
	 * tls-unique, undefined for TLS 1.3): it cannot bind to this channel,
	 * so its next attempt with the 'y' flag is an honest fallback, not a
	 * downgrade (see handle_auth). */
	bool cb_type_unsupported;
	/* After a stream restart: whitespace the client sent after its last
	 * element of the old stream (go-xmpp sends a newline) must not reach
	 * the new parser before the new XML declaration. */
	bool skip_leading_space;
	/* auth: callbridge: the attempt a call bridge is deciding */
	bool handoff_pending;
	uint32_t handoff_seq;
	int64_t handoff_deadline_ms;
	char *handoff_user;
	/* the bridge's stream the attempt went to: if it ends before
	 * answering, the attempt fails then, not at the deadline */
	char *handoff_bridge;
	uint16_t handoff_bridge_worker;
	uint32_t handoff_bridge_id, handoff_bridge_gen;
};

static struct buf stamp;       /* the stanza being routed, 'from' stamped */
static struct buf build;       /* stanzas the server composes */
static const char *domain;

/* ---- small helpers ------------------------------------------------------- */

static struct c2s_extra *extra(struct conn *c)
{
	return (struct c2s_extra *)c->proto;
}

/* ---- stream output ----------------------------------------------------------- */

static void stream_header(struct conn *c)
{
	struct buf *b = &build;
	b->len = 0;
	stanza_random_id(c->stream_id, sizeof c->stream_id);
	buf_add_str(b, "<?xml version='1.0'?><stream:stream xmlns='" XMLNS_CLIENT
		       "' xmlns:stream='" XMLNS_STREAMS "' id='");
	buf_add_str(b, c->stream_id);
	buf_add_str(b, "' from='");
	buf_add_esc(b, domain);
	buf_add_str(b, "' version='1.0' xml:lang='en'>");
	conn_write(c, b->data, b->len);
	c->stream_open = true;
}

/* Close C's stream with a stream error (RFC 6120 4.9). */
static void stream_error(struct conn *c, const char *condition, const char *text)
{
	if (c->state == C2S_CLOSING || c->fd_closed)
		return;
	if (!c->stream_open)
		stream_header(c);
	stanza_build_stream_error(&build, condition, text);
	conn_write(c, build.data, build.len);
	log_info("closing stream from %s%s%s: %s%s%s", c->peer, c->jid ? " " : "",
		 c->jid ? c->jid : "", condition, text ? ": " : "", text ? text : "");
	c->state = C2S_CLOSING;
	conn_close(c);
}

static void write_or_close(struct conn *c, const char *data, size_t len)
{
	if (conn_write(c, data, len) < 0) {
		log_warn("output to %s failed (peer not reading?); closing", c->peer);
		c->state = C2S_CLOSING;
		conn_close(c);
	}
}

static void send_features(struct conn *c)
{
	const struct listener_config *l = &worker.cfg->listeners[c->listener];
	struct buf *b = &build;
	b->len = 0;
	buf_add_str(b, "<stream:features>");
	if (c->authenticated) {
		buf_add_str(b, "<bind xmlns='" XMLNS_BIND "'/>"
			       "<session xmlns='" XMLNS_SESSION "'><optional/></session>");
		c->state = C2S_WAIT_BIND;
	} else {
		if (!c->tls_active) {
			buf_add_str(b, "<starttls xmlns='" XMLNS_TLS "'>");
			if (l->tls == TLS_MODE_REQUIRED)
				buf_add_str(b, "<required/>");
			buf_add_str(b, "</starttls>");
		}
		if (c->tls_active || l->tls == TLS_MODE_OPTIONAL) {
			buf_add_str(b, "<mechanisms xmlns='" XMLNS_SASL "'>");
			uint8_t cb[32];
			if (worker.cfg->auth == AUTH_CALLBRIDGE) {
				/* the bridge needs the password itself: PLAIN, in TLS */
				if (c->tls_active)
					buf_add_str(b, "<mechanism>PLAIN</mechanism>");
			} else if (c->tls_active && tls_conn_exporter(c->tls, cb) == 0) {
				/* tls-exporter needs TLS 1.3 here (tls.h), so a
				 * TLS 1.2 stream is offered no -PLUS at all */
				buf_add_str(b, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>");
				extra(c)->offered_plus = true;
			}
			if (worker.cfg->auth == AUTH_INTERNAL) {
				buf_add_str(b, "<mechanism>SCRAM-SHA-256</mechanism>"
					       "<mechanism>SCRAM-SHA-1</mechanism>");
				if (c->tls_active)
					buf_add_str(b, "<mechanism>PLAIN</mechanism>");
			}
			buf_add_str(b, "</mechanisms>");
			if (extra(c)->offered_plus)
				buf_add_str(b, "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
					       "<channel-binding type='tls-exporter'/>"
					       "</sasl-channel-binding>");
		}
		c->state = C2S_WAIT_AUTH;
	}
	buf_add_str(b, "</stream:features>");
	conn_write(c, b->data, b->len);
}

/* ---- stanza errors and server replies ------------------------------------------ */

static void reply_error(struct conn *c, enum stanza_kind kind, const char *to, const char *id,
			const char *condition)
{
	stanza_build_error(&build, kind, to, c->jid ? c->jid : "", id, condition);
	write_or_close(c, build.data, build.len);
}

/* <iq type='result'/> with optional payload (already XML). */
static void reply_result(struct conn *c, const char *from, const char *id, const char *payload)
{
	struct buf *b = &build;
	b->len = 0;
	buf_add_str(b, "<iq type='result'");
	if (from) {
		buf_add_str(b, " from='");
		buf_add_esc(b, from);
		buf_add_str(b, "'");
	}
	if (c->jid) {
		buf_add_str(b, " to='");
		buf_add_esc(b, c->jid);
		buf_add_str(b, "'");
	}
	buf_add_str(b, " id='");
	buf_add_esc(b, id ? id : "");
	buf_add_str(b, "'");
	if (payload) {
		buf_add_str(b, ">");
		buf_add_str(b, payload);
		buf_add_str(b, "</iq>");
	} else {
		buf_add_str(b, "/>");
	}
	write_or_close(c, b->data, b->len);
}

/* ---- presence ---------------------------------------------------------------------- */

/* The bare JID of C's account. */
static void own_bare(const struct conn *c, char out[SESSDIR_JID_MAX])
{
	memcpy(out, c->jid, c->bare_len);
	out[c->bare_len] = '\0';
}

/* Every session of C's account (C's own included). */
static int own_sessions(const struct conn *c, struct sessdir_entry es[BARE_FANOUT])
{
	char bare[SESSDIR_JID_MAX];
	own_bare(c, bare);
	return sessdir_lookup_bare(worker.sessdir, bare, es, BARE_FANOUT, NULL);
}

static void broadcast_own(struct conn *c, const char *bytes, size_t len, enum stanza_type type)
{
	struct sessdir_entry es[BARE_FANOUT];
	int n = own_sessions(c, es);
	for (int i = 0; i < n; i++) {
		if (!es[i].available)
			continue;
		struct routed r = {
			.kind = ST_PRESENCE, .type = type, .from = c->jid, .to = es[i].jid,
			.bytes = bytes, .len = len,
		};
		route_to_entry(&es[i], &r);
	}
}

/* Ask the account's other available resources to send C their presence. */
static void probe_own(struct conn *c)
{
	struct sessdir_entry es[BARE_FANOUT];
	int n = own_sessions(c, es);
	for (int i = 0; i < n; i++) {
		if (!es[i].available || !strcmp(es[i].jid, c->jid))
			continue;
		if (es[i].worker == (uint16_t)worker.index) {
			struct conn *o = conn_lookup(es[i].conn_id, es[i].conn_gen);
			if (o && extra(o)->presence)
				write_or_close(c, extra(o)->presence, extra(o)->presence_len);
		} else {
			route_probe(&es[i], c->jid);
		}
	}
}

static void handle_broadcast_presence(struct conn *c, const struct xml_stanza *st,
				      enum stanza_type type)
{
	struct c2s_extra *x = extra(c);
	if (type != TY_NONE && type != TY_UNAVAILABLE)
		return; /* subscription management without a roster: nothing to do */
	int prio = 0;
	if (st->tree) {
		struct xml_node *p = xml_child(st->tree, XMLNS_CLIENT, "priority");
		if (p && p->text)
			prio = atoi(p->text);
	}
	if (prio < -128)
		prio = -128;
	if (prio > 127)
		prio = 127;
	bool was_available = c->available;
	c->available = type == TY_NONE;
	c->priority = (int16_t)prio;
	slab_free(x->presence, x->presence_len);
	x->presence = NULL;
	x->presence_len = 0;
	if (c->available) {
		x->presence = slab_alloc(stamp.len);
		if (x->presence) {
			memcpy(x->presence, stamp.data, stamp.len);
			x->presence_len = stamp.len;
		}
	}
	sessdir_set_presence(worker.sessdir, c->jid, (uint16_t)worker.index, c->id, c->gen,
			     c->available, (int16_t)prio);
	if (c->available || was_available)
		broadcast_own(c, stamp.data, stamp.len, type);
	if (c->available && !was_available)
		probe_own(c);
}

/* ---- iq handled by the server ------------------------------------------------------------ */

static void handle_server_iq(struct conn *c, const struct xml_stanza *st, enum stanza_type type,
			     const char *to, bool to_account)
{
	const char *id = st->head.id;
	if (type == TY_RESULT || type == TY_ERROR)
		return;
	struct xml_node *q = st->tree ? st->tree->first_child : NULL;
	if (!q || q->next) {
		reply_error(c, ST_IQ, to, id, "bad-request");
		return;
	}
	if (type == TY_GET && !strcmp(q->ns, XMLNS_PING) && !strcmp(q->name, "ping")) {
		reply_result(c, to, id, NULL);
	} else if (type == TY_GET && !strcmp(q->ns, XMLNS_DISCO_INFO) && !xml_attr(q, "node")) {
		if (to_account)
			reply_result(c, to, id,
				     "<query xmlns='" XMLNS_DISCO_INFO "'>"
				     "<identity category='account' type='registered'/>"
				     "<feature var='" XMLNS_DISCO_INFO "'/></query>");
		else
			reply_result(c, to, id,
				     "<query xmlns='" XMLNS_DISCO_INFO "'>"
				     "<identity category='server' type='im' name='xmppd'/>"
				     "<feature var='" XMLNS_DISCO_INFO "'/>"
				     "<feature var='" XMLNS_DISCO_ITEMS "'/>"
				     "<feature var='" XMLNS_PING "'/>"
				     "<feature var='" XMLNS_ROSTER "'/></query>");
	} else if (type == TY_GET && !strcmp(q->ns, XMLNS_DISCO_ITEMS)) {
		reply_result(c, to, id, "<query xmlns='" XMLNS_DISCO_ITEMS "'/>");
	} else if (type == TY_GET && !strcmp(q->ns, XMLNS_ROSTER) && !strcmp(q->name, "query")) {
		/* rosters are a later issue: an honest empty roster */
		reply_result(c, NULL, id, "<query xmlns='" XMLNS_ROSTER "'/>");
	} else if (type == TY_SET && !strcmp(q->ns, XMLNS_SESSION)) {
		reply_result(c, NULL, id, NULL);
	} else {
		reply_error(c, ST_IQ, to, id, "service-unavailable");
	}
}

/* ---- a bound client's stanzas --------------------------------------------------------------- */

static void handle_bound_stanza(struct conn *c, const struct xml_stanza *st)
{
	enum stanza_kind kind = stanza_kind_of(st->head.ns, st->head.name);
	if (kind == ST_OTHER) {
		stream_error(c, "unsupported-stanza-type", NULL);
		return;
	}
	atomic_fetch_add_explicit(&worker.slot->stanzas_in, 1, memory_order_relaxed);
	enum stanza_type type = stanza_type_of(kind, st->head.type);
	if (type == TY_INVALID) {
		reply_error(c, kind, st->head.to, st->head.id, "bad-request");
		return;
	}
	if (kind == ST_IQ && (!st->head.id || type == TY_NONE)) {
		stream_error(c, "invalid-xml", "an iq needs an id and a type");
		return;
	}
	if (st->head.from) {
		struct jid f;
		char full[SESSDIR_JID_MAX], bare[SESSDIR_JID_MAX];
		if (jid_parse(&f, st->head.from, strlen(st->head.from)) < 0 ||
		    jid_full(&f, full, sizeof full) < 0 || jid_bare(&f, bare, sizeof bare) < 0 ||
		    (strcmp(full, c->jid) && (f.resource[0] || strlen(bare) != c->bare_len ||
					      memcmp(bare, c->jid, c->bare_len)))) {
			stream_error(c, "invalid-from", NULL);
			return;
		}
	}
	if (stanza_set_from(&stamp, st->raw, st->raw_len, st->start_tag_len, c->jid) < 0) {
		stream_error(c, "internal-server-error", NULL);
		return;
	}

	char self_bare[SESSDIR_JID_MAX];
	own_bare(c, self_bare);

	if (!st->head.to) {
		if (kind == ST_PRESENCE) {
			handle_broadcast_presence(c, st, type);
		} else if (kind == ST_IQ) {
			handle_server_iq(c, st, type, NULL, true);
		} else {
			struct jid self;
			jid_parse(&self, self_bare, c->bare_len);
			struct routed r = { .kind = kind, .type = type, .id = st->head.id,
					    .from = c->jid, .to = self_bare, .bytes = stamp.data,
					    .len = stamp.len };
			route_stanza(&r, &self);
		}
		return;
	}

	struct jid to;
	char to_norm[3 * JID_PART_MAX + 3];
	if (jid_parse(&to, st->head.to, strlen(st->head.to)) < 0 ||
	    jid_full(&to, to_norm, sizeof to_norm) < 0) {
		if (kind != ST_PRESENCE)
			reply_error(c, kind, st->head.to, st->head.id, "jid-malformed");
		return;
	}
	if (!strcmp(to.domain, domain) && !to.local[0]) {
		if (kind == ST_IQ && !to.resource[0])
			handle_server_iq(c, st, type, to_norm, false);
		else if (kind == ST_IQ)
			reply_error(c, kind, to_norm, st->head.id, "service-unavailable");
		return; /* messages and presence to the server itself: nothing to do */
	}
	if (kind == ST_IQ && !to.resource[0] && !strcmp(to_norm, self_bare)) {
		handle_server_iq(c, st, type, to_norm, true);
		return;
	}
	/* users of this domain, call bridges, and (later) other domains */
	struct routed r = { .kind = kind, .type = type, .id = st->head.id, .from = c->jid,
			    .to = to_norm, .bytes = stamp.data, .len = stamp.len };
	route_stanza(&r, &to);
}

/* ---- authentication and binding --------------------------------------------------------------- */

static int lookup_creds(void *arg, const char *username, struct scram_creds *out)
{
	(void)arg;
	struct jid j;
	char bare[SESSDIR_JID_MAX];
	int n = snprintf(bare, sizeof bare, "%s@%s", username, domain);
	if (n < 0 || (size_t)n >= sizeof bare || jid_parse(&j, bare, (size_t)n) < 0 ||
	    j.resource[0] || jid_bare(&j, bare, sizeof bare) < 0)
		return -ENOENT;
	return accounts_get(worker.accounts, bare, out);
}

/* A failed login attempt: the SASL failure, the log line operators search
 * for, and the stream closed after too many. */
static void auth_failed(struct conn *c, const char *user, const char *mech, const char *cond)
{
	struct buf *b = &build;
	b->len = 0;
	buf_add_str(b, "<failure xmlns='" XMLNS_SASL "'><");
	buf_add_str(b, cond);
	buf_add_str(b, "/></failure>");
	conn_write(c, b->data, b->len);
	log_info("authentication failure for %s from %s (%s: %s)", user[0] ? user : "?", c->peer,
		 mech, cond);
	c->state = C2S_WAIT_AUTH;
	if (++c->auth_failures >= worker.cfg->auth_attempts)
		stream_error(c, "policy-violation", "too many authentication failures");
}

/* USER (as the client sent it) is authenticated: the session's JID is the
 * normalised USER@DOMAIN. B holds the <success/> already written. */
static void auth_succeeded(struct conn *c, const char *user, const char *mech)
{
	char bare[SESSDIR_JID_MAX];
	struct jid j;
	int len = snprintf(bare, sizeof bare, "%s@%s", user, domain);
	if (len < 0 || (size_t)len >= sizeof bare || jid_parse(&j, bare, (size_t)len) < 0 ||
	    (len = jid_bare(&j, bare, sizeof bare)) < 0) {
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	log_info("authenticated %s from %s (%s)", bare, c->peer, mech);
	c->jid = slab_strdup(bare);
	if (!c->jid) {
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	c->bare_len = (size_t)len;
	c->authenticated = true;
	c->state = C2S_WAIT_STREAM;
	extra(c)->action = ACT_RESTART;
	xmlstream_request_reset(c->xml);
}

static void sasl_end(struct conn *c)
{
	sasl_session_clear(c->sasl);
	free(c->sasl);
	c->sasl = NULL;
}

static void sasl_reply(struct conn *c, enum sasl_result res, const uint8_t *out, size_t out_len)
{
	struct buf *b = &build;
	b->len = 0;
	if (res == SASL_FAILURE) {
		char user[sizeof c->sasl->username];
		memcpy(user, c->sasl->username, sizeof user);
		enum sasl_failure why = c->sasl->failure;
		const char *mech = sasl_mech_name(c->sasl->mech);
		sasl_end(c);
		auth_failed(c, user, mech, sasl_failure_condition(why));
		return;
	}
	char *b64 = malloc(out_len * 4 / 3 + 8);
	int n = b64 ? base64_encode(out, out_len, b64, out_len * 4 / 3 + 8) : -ENOMEM;
	if (n < 0) {
		free(b64);
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	if (res == SASL_CONTINUE) {
		buf_add_str(b, "<challenge xmlns='" XMLNS_SASL "'>");
		buf_add(b, b64, (size_t)n);
		buf_add_str(b, "</challenge>");
		conn_write(c, b->data, b->len);
		c->state = C2S_SASL;
		free(b64);
		return;
	}
	if (n)
		buf_add_str(b, "<success xmlns='" XMLNS_SASL "'>"), buf_add(b, b64, (size_t)n),
			buf_add_str(b, "</success>");
	else
		buf_add_str(b, "<success xmlns='" XMLNS_SASL "'/>");
	free(b64);
	conn_write(c, b->data, b->len);
	/* The SASL user name is as the client sent it; the session's JID is
	 * the normalised one the account store was asked about. */
	char user[sizeof c->sasl->username];
	memcpy(user, c->sasl->username, sizeof user);
	const char *mech = sasl_mech_name(c->sasl->mech);
	sasl_end(c);
	auth_succeeded(c, user, mech);
}

/* ---- the login hand-off (auth: callbridge) ------------------------------------------------ */

#define HANDOFF_MECH "PLAIN via call bridge"

/* A PLAIN message IN for a call bridge to decide (docs/callbridge.md). */
static void handoff_start(struct conn *c, const uint8_t *in, size_t len)
{
	struct c2s_extra *x = extra(c);
	struct sasl_session id = { .domain = domain };
	struct sasl_plain p;
	char bare[SESSDIR_JID_MAX], password[1024];
	struct jid j;
	int rc;

	if (sasl_plain_split(in, len, &p) < 0) {
		auth_failed(c, "?", HANDOFF_MECH, "malformed-request");
		return;
	}
	if ((rc = sasl_plain_identity(&id, &p)) < 0) {
		auth_failed(c, id.username, HANDOFF_MECH,
			    rc == -EACCES ? "invalid-authzid" : "malformed-request");
		return;
	}
	int n = snprintf(bare, sizeof bare, "%s@%s", id.username, domain);
	if (n < 0 || (size_t)n >= sizeof bare || jid_parse(&j, bare, (size_t)n) < 0 ||
	    j.resource[0] || p.password_len >= sizeof password) {
		auth_failed(c, id.username, HANDOFF_MECH, "not-authorized");
		return;
	}
	memcpy(password, p.password, p.password_len);
	password[p.password_len] = '\0';
	free(x->handoff_user);
	x->handoff_user = strdup(id.username);
	if (!x->handoff_user) {
		explicit_bzero(password, sizeof password);
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	x->handoff_seq++;
	struct sessdir_entry bridge;
	rc = component_auth_request(c, x->handoff_seq, id.username, password, &bridge);
	explicit_bzero(password, sizeof password);
	if (rc == 0) {
		slab_free_str(x->handoff_bridge);
		if (!(x->handoff_bridge = slab_strdup(bridge.jid)))
			rc = -ENOMEM;
		x->handoff_bridge_worker = bridge.worker;
		x->handoff_bridge_id = bridge.conn_id;
		x->handoff_bridge_gen = bridge.conn_gen;
	}
	if (rc < 0) {
		if (rc == -ENOENT)
			log_warn("no authentication service: no call bridge is connected to "
				 "check %s's login from %s", id.username, c->peer);
		auth_failed(c, id.username, HANDOFF_MECH, "temporary-auth-failure");
		return;
	}
	x->handoff_pending = true;
	x->handoff_deadline_ms = worker.now_ms + worker.cfg->auth_timeout_ms;
	c->state = C2S_SASL;
}

void c2s_auth_answer(struct conn *c, uint32_t seq, bool ok, const char *condition)
{
	struct c2s_extra *x = extra(c);
	if (c->handler != &c2s_handler || !x || !x->handoff_pending || seq != x->handoff_seq ||
	    c->state != C2S_SASL)
		return; /* a late answer: the attempt timed out or was aborted */
	x->handoff_pending = false;
	char *user = x->handoff_user;
	x->handoff_user = NULL;
	if (ok) {
		conn_write_str(c, "<success xmlns='" XMLNS_SASL "'/>");
		auth_succeeded(c, user, HANDOFF_MECH);
	} else {
		auth_failed(c, user, HANDOFF_MECH,
			    condition && !strcmp(condition, "not-authorized") ? "not-authorized"
									: "temporary-auth-failure");
	}
	free(user);
}

static void handle_auth(struct conn *c, const struct xml_stanza *st)
{
	const struct xml_node *n = st->tree;
	const struct listener_config *l = &worker.cfg->listeners[c->listener];
	if (!strcmp(n->name, "abort")) {
		if (c->sasl)
			sasl_end(c);
		extra(c)->handoff_pending = false; /* a late answer is ignored */
		conn_write_str(c, "<failure xmlns='" XMLNS_SASL "'><aborted/></failure>");
		c->state = C2S_WAIT_AUTH;
		return;
	}
	bool is_auth = !strcmp(n->name, "auth");
	if ((is_auth && c->state != C2S_WAIT_AUTH) ||
	    (!is_auth && (c->state != C2S_SASL || !c->sasl || strcmp(n->name, "response")))) {
		stream_error(c, "policy-violation", "unexpected SASL element");
		return;
	}
	const char *text = n->text ? n->text : "";
	size_t tlen = n->text_len;
	bool present = tlen > 0;
	if (tlen == 1 && text[0] == '=')
		tlen = 0; /* "=" is an empty response */
	uint8_t *in = malloc(tlen + 4);
	uint8_t *out = malloc(SASL_OUT_MAX);
	int in_len = in ? base64_decode(text, tlen, in, tlen + 4) : -ENOMEM;
	if (!in || !out) {
		free(in);
		free(out);
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	if (in_len < 0) {
		free(in);
		free(out);
		conn_write_str(c, "<failure xmlns='" XMLNS_SASL "'><incorrect-encoding/></failure>");
		c->state = C2S_WAIT_AUTH;
		return;
	}
	size_t out_len = 0;
	enum sasl_result res;
	if (is_auth) {
		enum sasl_mech mech = sasl_mech_from_name(xml_attr(n, "mechanism") ?
							  xml_attr(n, "mechanism") : "");
		const char *refuse = NULL;
		bool handoff = worker.cfg->auth == AUTH_CALLBRIDGE;
		if (mech == SASL_MECH_NONE || (handoff && mech != SASL_MECH_PLAIN))
			refuse = "invalid-mechanism";
		else if (!c->tls_active && l->tls == TLS_MODE_REQUIRED)
			refuse = "encryption-required";
		else if (!c->tls_active && (mech == SASL_MECH_PLAIN ||
					    mech == SASL_MECH_SCRAM_SHA256_PLUS))
			refuse = mech == SASL_MECH_PLAIN ? "encryption-required"
							 : "invalid-mechanism";
		if (refuse) {
			free(in);
			free(out);
			build.len = 0;
			buf_add_str(&build, "<failure xmlns='" XMLNS_SASL "'><");
			buf_add_str(&build, refuse);
			buf_add_str(&build, "/></failure>");
			conn_write(c, build.data, build.len);
			return;
		}
		if (handoff) {
			handoff_start(c, in, (size_t)in_len);
			explicit_bzero(in, (size_t)in_len);
			free(in);
			free(out);
			return;
		}
		uint8_t cb[32];
		bool have_cb = c->tls_active && tls_conn_exporter(c->tls, cb) == 0;
		if (mech == SASL_MECH_SCRAM_SHA256_PLUS && in_len > 2 && !memcmp(in, "p=", 2) &&
		    ((size_t)in_len < 15 || memcmp(in, "p=tls-exporter,", 15)))
			extra(c)->cb_type_unsupported = true;
		/* RFC 5802's 'y' check guards against a stripped -PLUS offer;
		 * clients without XEP-0440 that only know tls-unique try -PLUS,
		 * fail, and retry with 'y'. Such a client has shown on this
		 * stream that it cannot bind to our channel type. */
		bool cb_offered = extra(c)->offered_plus && !extra(c)->cb_type_unsupported;
		c->sasl = calloc(1, sizeof *c->sasl);
		if (!c->sasl) {
			free(in);
			free(out);
			stream_error(c, "internal-server-error", NULL);
			return;
		}
		res = sasl_start(c->sasl, mech, lookup_creds, NULL, domain, have_cb ? cb : NULL,
				 have_cb ? sizeof cb : 0, cb_offered, in, (size_t)in_len,
				 present, out, SASL_OUT_MAX, &out_len);
	} else {
		res = sasl_step(c->sasl, in, (size_t)in_len, out, SASL_OUT_MAX, &out_len);
	}
	sasl_reply(c, res, out, out_len);
	explicit_bzero(in, tlen + 4);
	free(in);
	free(out);
}

static void handle_bind(struct conn *c, const struct xml_stanza *st)
{
	const char *id = st->head.id;
	struct xml_node *bind = st->tree ? xml_child(st->tree, XMLNS_BIND, "bind") : NULL;
	if (!bind || !st->head.type || strcmp(st->head.type, "set") || !id) {
		if (st->tree && xml_child(st->tree, XMLNS_SESSION, "session"))
			reply_result(c, NULL, id, NULL);
		else
			stream_error(c, "not-authorized", "bind a resource first");
		return;
	}
	char resource[JID_PART_MAX + 1];
	struct xml_node *r = xml_child(bind, XMLNS_BIND, "resource");
	if (r && r->text_len) {
		if (r->text_len > JID_PART_MAX || jid_resource_valid(r->text, r->text_len) < 0) {
			reply_error(c, ST_IQ, NULL, id, "bad-request");
			return;
		}
		memcpy(resource, r->text, r->text_len);
		resource[r->text_len] = '\0';
	} else {
		stanza_random_id(resource, 17);
	}
	struct sessdir_entry e;
	memset(&e, 0, sizeof e);
	size_t rlen = strlen(resource);
	if (c->bare_len + 1 + rlen >= sizeof e.jid) {
		reply_error(c, ST_IQ, NULL, id, "not-allowed");
		return;
	}
	memcpy(e.jid, c->jid, c->bare_len);
	e.jid[c->bare_len] = '/';
	memcpy(e.jid + c->bare_len + 1, resource, rlen + 1);
	e.bare_len = (uint16_t)c->bare_len;
	e.worker = (uint16_t)worker.index;
	e.conn_id = c->id;
	e.conn_gen = c->gen;
	e.tls = c->tls_active;
	e.since_ms = worker.now_ms;
	snprintf(e.address, sizeof e.address, "%s", c->peer);
	struct sessdir_entry old;
	int rc = sessdir_add(worker.sessdir, &e, &old);
	if (rc < 0) {
		log_warn("cannot bind %s: session directory: %s", e.jid, strerror(-rc));
		reply_error(c, ST_IQ, NULL, id, "resource-constraint");
		return;
	}
	char *full = slab_strdup(e.jid);
	if (!full) {
		sessdir_del(worker.sessdir, e.jid, e.worker, e.conn_id, e.conn_gen);
		stream_error(c, "internal-server-error", NULL);
		return;
	}
	slab_free_str(c->jid);
	c->jid = full;
	c->state = C2S_BOUND;
	if (rc == 1) {
		/* RFC 6120 7.7.2.2: the new session wins, the old one gets <conflict/> */
		log_info("%s bound again from %s: closing the older session", e.jid, c->peer);
		if (old.worker == (uint16_t)worker.index) {
			struct conn *o = conn_lookup(old.conn_id, old.conn_gen);
			if (o && o != c)
				stream_error(o, "conflict", "replaced by a new session");
		} else {
			route_kick(&old);
		}
	}
	build.len = 0;
	buf_add_str(&build, "<iq type='result' id='");
	buf_add_esc(&build, id);
	buf_add_str(&build, "'><bind xmlns='" XMLNS_BIND "'><jid>");
	buf_add_esc(&build, c->jid);
	buf_add_str(&build, "</jid></bind></iq>");
	write_or_close(c, build.data, build.len);
	log_info("session %s bound on worker %d from %s%s", c->jid, worker.index, c->peer,
		 c->tls_active ? " (TLS)" : "");
}

/* ---- parser callbacks ------------------------------------------------------------------- */

static int on_stream_open(void *ctx, const char *ns, const char *name, const char *default_ns,
			  const struct xml_attr *attrs, int attr_count)
{
	struct conn *c = ctx;
	if (c->state == C2S_CLOSING)
		return 1;
	if (strcmp(ns, XMLNS_STREAMS) || strcmp(name, "stream")) {
		stream_error(c, "invalid-namespace", "expected <stream:stream>");
		return 1;
	}
	if (strcmp(default_ns, XMLNS_CLIENT)) {
		stream_error(c, "invalid-namespace", "the content namespace must be jabber:client");
		return 1;
	}
	const char *to = NULL, *version = NULL;
	for (int i = 0; i < attr_count; i++) {
		if (attrs[i].ns[0])
			continue;
		if (!strcmp(attrs[i].name, "to"))
			to = attrs[i].value;
		else if (!strcmp(attrs[i].name, "version"))
			version = attrs[i].value;
	}
	stream_header(c);
	if (to) {
		struct jid j;
		if (jid_parse(&j, to, strlen(to)) < 0 || j.local[0] || j.resource[0] ||
		    strcmp(j.domain, domain)) {
			stream_error(c, "host-unknown", NULL);
			return 1;
		}
	}
	if (!version || strtol(version, NULL, 10) < 1) {
		stream_error(c, "unsupported-version", "XMPP 1.0 streams only");
		return 1;
	}
	send_features(c);
	return 0;
}

static bool on_stanza_start(void *ctx, const struct xml_stanza_head *head)
{
	struct conn *c = ctx;
	if (c->state != C2S_BOUND)
		return true;
	enum stanza_kind k = stanza_kind_of(head->ns, head->name);
	if (k == ST_PRESENCE)
		return head->to == NULL;
	if (k != ST_IQ)
		return false;
	/* iq the server answers itself: no 'to', the domain, or our own bare JID */
	if (!head->to || !strcmp(head->to, domain))
		return true;
	size_t tl = strlen(head->to);
	return tl == c->bare_len && strncasecmp(head->to, c->jid, tl) == 0;
}

static int on_stanza(void *ctx, const struct xml_stanza *st)
{
	struct conn *c = ctx;
	switch (c->state) {
	case C2S_BOUND:
		handle_bound_stanza(c, st);
		break;
	case C2S_WAIT_BIND:
		handle_bind(c, st);
		break;
	case C2S_WAIT_AUTH:
	case C2S_SASL:
		if (!strcmp(st->head.ns, XMLNS_TLS) && !strcmp(st->head.name, "starttls") &&
		    c->state == C2S_WAIT_AUTH && !c->tls_active) {
			conn_write_str(c, "<proceed xmlns='" XMLNS_TLS "'/>");
			extra(c)->action = ACT_STARTTLS;
			xmlstream_request_reset(c->xml);
		} else if (!strcmp(st->head.ns, XMLNS_SASL)) {
			handle_auth(c, st);
		} else {
			stream_error(c, "not-authorized", NULL);
		}
		break;
	case C2S_CLOSING:
		break;
	default:
		stream_error(c, "not-authorized", NULL);
		break;
	}
	return c->state == C2S_CLOSING ? 1 : 0;
}

static const struct xmlstream_callbacks callbacks = {
	.on_stream_open = on_stream_open,
	.on_stanza_start = on_stanza_start,
	.on_stanza = on_stanza,
	.on_stream_close = conn_answer_stream_close,
};

/* ---- entry points from the loop ----------------------------------------------------------- */

int c2s_init(void)
{
	domain = worker.cfg->domain;
	return 0;
}

void c2s_fini(void)
{
	free(stamp.data);
	free(build.data);
	stamp = (struct buf){ 0 };
	build = (struct buf){ 0 };
}

static int c2s_open(struct conn *c)
{
	c->proto = slab_alloc(sizeof(struct c2s_extra));
	c->xml = xmlstream_new(&callbacks, c, worker.cfg->max_stanza_size, worker.cfg->max_depth);
	if (!c->proto || !c->xml) {
		log_error("out of memory for a new connection from %s", c->peer);
		return -ENOMEM;
	}
	c->state = C2S_WAIT_STREAM;
	return 0;
}

static void c2s_input(struct conn *c, const char *data, size_t len)
{
	if (xmlstream_reset_requested(c->xml) && extra(c)->action == ACT_RESTART) {
		/* authenticated outside the parser (the login hand-off's answer
		 * came from a call bridge): the new stream starts here */
		if (xmlstream_reset(c->xml) < 0) {
			stream_error(c, "internal-server-error", NULL);
			return;
		}
		extra(c)->action = ACT_NONE;
		extra(c)->skip_leading_space = true;
	}
	while (len && c->state != C2S_CLOSING && !c->fd_closed) {
		if (extra(c)->skip_leading_space) {
			while (len && strchr(" \t\r\n", *data))
				data++, len--;
			if (!len)
				return;
			extra(c)->skip_leading_space = false;
		}
		size_t consumed = len;
		enum xs_error rc = xmlstream_feed(c->xml, data, len, &consumed);
		if (rc == XS_ERR_CALLBACK)
			return; /* the callback has dealt with it */
		if (rc != XS_OK) {
			stream_error(c, xs_error_condition(rc), xmlstream_error_text(c->xml));
			return;
		}
		if (!xmlstream_reset_requested(c->xml))
			return;
		if (xmlstream_reset(c->xml) < 0) {
			stream_error(c, "internal-server-error", NULL);
			return;
		}
		enum pending_action act = extra(c)->action;
		extra(c)->action = ACT_NONE;
		extra(c)->skip_leading_space = true;
		if (act == ACT_STARTTLS) {
			/* Bytes after <starttls/> were sent in the clear and must
			 * not be trusted as TLS-protected: drop them. */
			if (conn_start_tls(c) < 0) {
				stream_error(c, "internal-server-error", NULL);
				return;
			}
			c->state = C2S_TLS_HANDSHAKE;
			return;
		}
		data += consumed;
		len -= consumed;
	}
}

static void c2s_tls_ready(struct conn *c)
{
	c->state = C2S_WAIT_STREAM;
	tls_conn_trim(c->tls);
}

static void c2s_closed(struct conn *c)
{
	struct c2s_extra *x = extra(c);
	if (c->jid && c->state == C2S_BOUND)
		c->state = C2S_CLOSING;
	if (c->jid && strchr(c->jid, '/')) {
		if (c->available) {
			build.len = 0;
			buf_add_str(&build, "<presence from='");
			buf_add_esc(&build, c->jid);
			buf_add_str(&build, "' type='unavailable'/>");
			c->available = false;
			struct buf copy = { 0 };
			buf_add(&copy, build.data, build.len);
			sessdir_del(worker.sessdir, c->jid, (uint16_t)worker.index, c->id, c->gen);
			if (copy.data)
				broadcast_own(c, copy.data, copy.len, TY_UNAVAILABLE);
			free(copy.data);
		} else {
			sessdir_del(worker.sessdir, c->jid, (uint16_t)worker.index, c->id, c->gen);
		}
	}
	if (c->sasl) {
		sasl_session_clear(c->sasl);
		free(c->sasl);
		c->sasl = NULL;
	}
	slab_free_str(c->jid);
	c->jid = NULL;
	if (x) {
		free(x->handoff_user);
		slab_free_str(x->handoff_bridge);
		slab_free(x->presence, x->presence_len);
		slab_free(x, sizeof *x);
		c->proto = NULL;
	}
}

/* The bridge stream a pending hand-off went to has ended (its address is
 * gone from the session directory, or now names another stream). */
static bool handoff_bridge_gone(const struct c2s_extra *x)
{
	struct sessdir_entry e;
	return !x->handoff_bridge || route_lookup(x->handoff_bridge, &e) < 0 ||
	       e.worker != x->handoff_bridge_worker || e.conn_id != x->handoff_bridge_id ||
	       e.conn_gen != x->handoff_bridge_gen;
}

static void c2s_tick(struct conn *c)
{
	/* Once a second: give back what a burst left behind (expat's buffers
	 * and name pool, the stanza arena), so an idle stream holds little;
	 * a quiet stream between two steps of the protocol gives up its parser
	 * too (xmlstream_hibernate does nothing in the middle of a stanza). */
	if (c->xml) {
		bool settled = c->state == C2S_BOUND || c->state == C2S_WAIT_STREAM ||
			       c->state == C2S_WAIT_AUTH || c->state == C2S_WAIT_BIND;
		size_t held = xmlstream_memory(c->xml);
		if (settled && !xmlstream_reset_requested(c->xml) &&
		    worker.now_ms - c->last_input_ms >= HIBERNATE_AFTER_MS)
			xmlstream_hibernate(c->xml);
		xmlstream_trim(c->xml);
		if (xmlstream_memory(c->xml) < held)
			worker_released(held - xmlstream_memory(c->xml));
	}
	struct c2s_extra *x = extra(c);
	if (x->handoff_pending && handoff_bridge_gone(x)) {
		log_warn("call bridge %s went away before answering for %s from %s",
			 x->handoff_bridge, x->handoff_user, c->peer);
		c2s_auth_answer(c, x->handoff_seq, false, "temporary-auth-failure");
	} else if (x->handoff_pending && worker.now_ms >= x->handoff_deadline_ms) {
		log_warn("authentication service did not answer within %u ms for %s from %s",
			 worker.cfg->auth_timeout_ms, x->handoff_user, c->peer);
		c2s_auth_answer(c, x->handoff_seq, false, "temporary-auth-failure");
	}
	if (c->state == C2S_BOUND || c->state == C2S_CLOSING ||
	    worker.now_ms - c->opened_ms <= AUTH_TIMEOUT_MS)
		return;
	if (c->state == C2S_TLS_HANDSHAKE) {
		c->state = C2S_CLOSING;
		conn_close(c);
		return;
	}
	stream_error(c, "connection-timeout", "no session established in time");
}

void c2s_answer_probe(struct conn *t, const char *from)
{
	if (!t->available || !extra(t)->presence)
		return;
	struct sessdir_entry e;
	if (sessdir_lookup_full(worker.sessdir, from, &e) == 0) {
		struct routed pr = { .kind = ST_PRESENCE, .type = TY_NONE, .from = t->jid,
				     .to = from, .bytes = extra(t)->presence,
				     .len = extra(t)->presence_len, .hops = ROUTE_MAX_HOPS };
		route_to_entry(&e, &pr);
	}
}

const struct conn_handler c2s_handler = {
	.open = c2s_open,
	.input = c2s_input,
	.tls_ready = c2s_tls_ready,
	.closed = c2s_closed,
	.tick = c2s_tick,
	.stream_error = stream_error,
};
