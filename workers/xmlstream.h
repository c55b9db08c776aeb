/*
 * xmlstream: one XMPP stream's XML, parsed incrementally with expat under the
 * restrictions of RFC 6120 section 11.
 *
 * The parser reports the stream header, every top-level (depth-1) element
 * ("stanza", which here includes <starttls/>, <auth/> and friends) and the
 * stream's end. A stanza is reported as the exact bytes it arrived as
 * (RAW), so routing forwards those bytes untouched but for its start tag.
 * A small tree (struct xml_node) is built only when the stanza-start
 * callback asks for one: stanzas the server answers itself. Stanzas that
 * are only routed never build a tree.
 *
 * Restrictions (each closes the stream with the given condition):
 *   DOCTYPE / DTD, entity declarations      -> restricted-xml
 *   processing instructions, comments       -> restricted-xml
 *   entity references other than the five predefined -> restricted-xml
 *   malformed XML, wrong encoding           -> not-well-formed
 *   a stanza larger than max_stanza_size, or
 *   deeper than max_depth                   -> policy-violation
 *   (the stream header itself is limited to max_stanza_size too)
 *
 * Reparse deferral (expat >= 2.6 / Debian's 2.5.0-1+deb12u5): expat holds
 * back an incomplete large token until enough new bytes arrive, which stops
 * the quadratic re-scan of CVE-2023-52425, but it can also hold back a
 * complete stanza. xmlstream_feed() therefore runs one extra parse with
 * deferral off when the bytes expat has not reported yet are small (a few
 * KiB); larger pending tokens keep expat's doubling rule.
 */
#ifndef XMPPD_XMLSTREAM_H
#define XMPPD_XMLSTREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define XMLNS_STREAMS "http://etherx.jabber.org/streams"
#define XMLNS_CLIENT "jabber:client"
#define XMLNS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define XMLNS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define XMLNS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define XMLNS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define XMLNS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define XMLNS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XMLNS_XML "http://www.w3.org/XML/1998/namespace"

enum xs_error {
	XS_OK = 0,
	XS_ERR_NOT_WELL_FORMED,
	XS_ERR_RESTRICTED_XML,
	XS_ERR_POLICY_VIOLATION,   /* size or depth */
	XS_ERR_INTERNAL,           /* out of memory */
	XS_ERR_CALLBACK,           /* a callback returned non-zero: caller's decision */
};

struct xml_attr {
	const char *ns;    /* namespace URI or "" */
	const char *name;  /* local name */
	const char *value; /* unescaped, NUL-terminated */
};

/* A node of the small tree. All strings live in the stanza's arena and are
 * valid only during the on_stanza callback. */
struct xml_node {
	const char *ns;   /* namespace URI ("" if none) */
	const char *name; /* local name */
	int attr_count;
	struct xml_attr *attrs;
	struct xml_node *parent, *first_child, *last_child, *next;
	char *text;       /* concatenated character data directly inside, "" if none */
	size_t text_len;
};

/* What the stanza-start callback sees: the start tag's name and the
 * attributes the router needs. Other attributes are in ATTRS. */
struct xml_stanza_head {
	const char *ns;
	const char *name;
	const char *to, *from, *type, *id; /* NULL when absent */
	int attr_count;
	const struct xml_attr *attrs;
};

struct xml_stanza {
	struct xml_stanza_head head;
	const char *raw;       /* the stanza's bytes as received */
	size_t raw_len;
	size_t start_tag_len;  /* bytes of RAW that form the original start tag */
	bool self_closing;     /* RAW is a single empty-element tag <x .../> */
	struct xml_node *tree; /* non-NULL only if on_stanza_start asked for it */
};

struct xmlstream_callbacks {
	/* The stream header (depth 0). ATTRS as in the tag; NS is the element's
	 * namespace, DEFAULT_NS the default namespace declared on it ("" if
	 * none). Return non-zero to stop parsing (XS_ERR_CALLBACK). */
	int (*on_stream_open)(void *ctx, const char *ns, const char *name,
			      const char *default_ns, const struct xml_attr *attrs,
			      int attr_count);
	/* A depth-1 element starts; return true to have its tree built. */
	bool (*on_stanza_start)(void *ctx, const struct xml_stanza_head *head);
	/* A depth-1 element is complete. Return non-zero to stop. */
	int (*on_stanza)(void *ctx, const struct xml_stanza *st);
	/* </stream:stream> */
	void (*on_stream_close)(void *ctx);
};

struct xmlstream;

struct xmlstream *xmlstream_new(const struct xmlstream_callbacks *cb, void *ctx,
				uint32_t max_stanza_size, uint32_t max_depth);
void xmlstream_free(struct xmlstream *xs);

/* Feed LEN bytes. Callbacks run inside. Returns XS_OK or the error that
 * stopped the stream; after an error the stream must be closed.
 * If a callback calls xmlstream_request_reset(), parsing stops right after
 * that stanza; *CONSUMED (if not NULL) gets how many bytes of DATA were
 * consumed up to the end of that stanza, so the caller can decide what to
 * do with the rest (discard after STARTTLS, feed again after SASL). */
enum xs_error xmlstream_feed(struct xmlstream *xs, const char *data, size_t len,
			     size_t *consumed);

/* Called from on_stanza: stop after this stanza; the caller must call
 * xmlstream_reset() after xmlstream_feed() returns. */
void xmlstream_request_reset(struct xmlstream *xs);
bool xmlstream_reset_requested(const struct xmlstream *xs);
/* Start a new stream on the same object (outside callbacks). Returns 0 or -ENOMEM. */
int xmlstream_reset(struct xmlstream *xs);

/* A human-readable reason for the last error ("line 1, column 40: mismatched tag"). */
const char *xmlstream_error_text(const struct xmlstream *xs);
/* Stream error condition name for an error code ("not-well-formed", ...). */
const char *xs_error_condition(enum xs_error e);

/* Memory held now (parser, buffers, arena) for per-connection accounting. */
size_t xmlstream_memory(const struct xmlstream *xs);
/* Release buffers while idle (keeps the parser). */
void xmlstream_trim(struct xmlstream *xs);
/* For a stream that has been idle a while: free the parser itself and all
 * buffers, keeping only the stream header's bytes and the offsets. The next
 * xmlstream_feed() rebuilds the parser by parsing the saved header again
 * (a few microseconds) and goes on exactly as if it had never stopped:
 * same stanzas, offsets, limits and error texts. Does nothing unless the
 * stream is between stanzas with every byte fed so far parsed (or is new
 * and has been fed nothing), without an error, a close or a reset request,
 * and not from inside one of its callbacks. */
void xmlstream_hibernate(struct xmlstream *xs);

/* Tree helpers */
struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name);
const char *xml_attr(const struct xml_node *n, const char *name); /* no-namespace attr */

/* Escape S (LEN bytes) for use in character data or attribute values
 * (&, <, >, ', "). Returns bytes written, or -ENOSPC. */
int xml_escape(char *out, size_t cap, const char *s, size_t len);

#endif
