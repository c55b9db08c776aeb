/*
 * router: where a stanza goes once a stream (c2s or component) has accepted
 * it and stamped its 'from' (RFC 6121 8.5 for users of the domain, XEP-0114
 * addresses for call bridges).
 *
 * Routing never builds a tree for a stanza it only forwards: the bytes go to
 * the recipient's connection, appended to its output when it lives on this
 * worker, or pushed into the owning worker's inbound ring with a small
 * header that carries what the receiver needs to apply the delivery rules
 * should the connection have gone meanwhile.
 *
 * Both kinds of stream live in the session directory: a client session
 * under its full JID (local@domain/resource), a component under its address
 * (cb1.example.com: no '@', no '/'), so a lookup by what a stanza is
 * addressed to finds either, whichever worker holds it.
 *
 * Everything here runs in a worker's loop; the functions use the worker's
 * scratch buffers and are not reentrant across workers (each process has
 * its own).
 */
#ifndef XMPPD_ROUTER_H
#define XMPPD_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/jid.h"
#include "shm/sessdir.h"

struct conn;
struct buf;

#define XMLNS_COMPONENT "jabber:component:accept"
/* How often a stanza may be re-routed (full JID gone -> bare JID, ...). */
#define ROUTE_MAX_HOPS 3

enum stanza_kind { ST_OTHER = 0, ST_MESSAGE, ST_PRESENCE, ST_IQ };
enum stanza_type {
	TY_NONE = 0, /* message normal (absent), presence available (absent) */
	TY_NORMAL,
	TY_CHAT,
	TY_GROUPCHAT,
	TY_HEADLINE,
	TY_ERROR,
	TY_GET,
	TY_SET,
	TY_RESULT,
	TY_UNAVAILABLE,
	TY_PROBE,
	TY_SUBSCRIPTION, /* subscribe, subscribed, unsubscribe, unsubscribed */
	TY_INVALID,
};

/* What routing needs to know about one stanza. */
struct routed {
	enum stanza_kind kind;
	enum stanza_type type;
	const char *id;           /* may be NULL */
	const char *from;         /* stamped sender */
	const char *to;           /* as addressed (normalised) */
	const char *bytes;        /* the stanza, 'from' stamped */
	size_t len;
	uint8_t hops;
};

/* message / presence / iq in the stream's content namespace NS
 * (jabber:client or jabber:component:accept), else ST_OTHER. */
enum stanza_kind stanza_kind_of(const char *ns, const char *name);
enum stanza_type stanza_type_of(enum stanza_kind k, const char *type);
const char *stanza_kind_name(enum stanza_kind k);

/* Compose into B the error reply to a stanza of KIND: from ERR_FROM (may be
 * NULL or empty), to ERR_TO, with ID, condition CONDITION (RFC 6120 8.3). */
void stanza_build_error(struct buf *b, enum stanza_kind kind, const char *err_from,
			const char *err_to, const char *id, const char *condition);

/* Compose into B the end of a stream: <stream:error> with CONDITION and
 * optional TEXT, then </stream:stream> (RFC 6120 4.9). */
void stanza_build_stream_error(struct buf *b, const char *condition, const char *text);

/* Route R to JID TO (parsed R->to). TO's domain is ours (a user), a call
 * bridge's address or a JID under one (a component), or neither
 * (remote: an error back to the sender, federation being a later issue).
 * Stanzas for the domain itself are the caller's business: do not pass
 * them. */
void route_stanza(const struct routed *r, const struct jid *to);

/* Deliver R to the session or component E (here or on its worker). */
void route_to_entry(const struct sessdir_entry *e, const struct routed *r);

/* Send the error reply CONDITION for R back to its sender, wherever it is
 * (nothing for errors, results, or a sender that is gone). */
void route_bounce(const struct routed *r, const char *condition);

/* Find where JID lives: a client's full JID, or a component (any JID whose
 * domain is a connected component's address). 0 and *OUT, or -ENOENT. */
int route_lookup(const char *jid, struct sessdir_entry *out);

/* Requests to the worker that owns E's connection. */
void route_kick(const struct sessdir_entry *e);   /* close it with <conflict/> */
void route_probe(const struct sessdir_entry *e, const char *from); /* send FROM its presence */
/* The login hand-off's answer for client connection (id, gen) on WORKER:
 * OK (accepted), or refused with CONDITION (a SASL condition). */
void route_auth_answer(int worker_index, uint32_t conn_id, uint32_t conn_gen, uint32_t seq,
		       bool ok, const char *condition);

/* A message from another worker's ring. */
void router_inbound(const void *msg, size_t len);

void router_fini(void);

#endif
