/*
 * lg_xml: the load generator's view of a server's stream. expat parses the
 * stream (namespace-aware, no DTDs) and the parser reports only what a client
 * needs: stream start and end, features, SASL steps, iq, presence and
 * messages (body text, sender, error type).
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "bench/loadgen/lg.h"

/* Where inside <stream:features/> the parser is (struct lg_xml.sub). */
enum { SUB_NONE, SUB_MECHS, SUB_SESSION, SUB_CB, SUB_BODY_DONE };

/* Where the splitter in front of expat stands (struct lg_xml.sp_state). */
enum { SP_TEXT, SP_OPEN, SP_TAG, SP_QUOTE, SP_OFF };

static bool name_is(const XML_Char *name, const char *ns, const char *local)
{
	size_t n = strlen(ns);

	return strncmp(name, ns, n) == 0 && name[n] == ' ' && strcmp(name + n + 1, local) == 0;
}

static const XML_Char *attr(const XML_Char **atts, const char *name)
{
	for (; atts[0]; atts += 2)
		if (strcmp(atts[0], name) == 0)
			return atts[1];
	return NULL;
}

static bool copy_attr(char *dst, size_t cap, const XML_Char *value)
{
	size_t n = value ? strlen(value) : 0;

	if (!value || n >= cap)
		return false;
	memcpy(dst, value, n + 1);
	return true;
}

/* A stanza of a client stream or of a component stream (XEP-0114). */
static bool stanza_is(const XML_Char *name, const char *local)
{
	return name_is(name, NS_CLIENT, local) || name_is(name, NS_COMPONENT, local);
}

static void xml_stop(struct lg_xml *x, int result)
{
	if (x->result == 0) {
		x->result = result;
		XML_StopParser(x->parser, XML_FALSE);
	}
}

static void xml_emit(struct lg_xml *x, const struct lg_xml_event *ev)
{
	int r = x->handler(x->arg, ev);

	if (r != 0)
		xml_stop(x, r);
}

static void xml_collect(struct lg_xml *x)
{
	x->collect_depth = x->depth;
	x->text_len = 0;
	x->text[0] = '\0';
	x->overflow = false;
}

static enum lg_iq_type iq_type_of(const XML_Char *type)
{
	if (!type)
		return LG_IQ_NONE;
	if (strcmp(type, "get") == 0)
		return LG_IQ_GET;
	if (strcmp(type, "set") == 0)
		return LG_IQ_SET;
	if (strcmp(type, "result") == 0)
		return LG_IQ_RESULT;
	if (strcmp(type, "error") == 0)
		return LG_IQ_ERROR;
	return LG_IQ_NONE;
}

static void xml_top_start(struct lg_xml *x, const XML_Char *name, const XML_Char **atts)
{
	const XML_Char *type = attr(atts, "type");

	x->top = LG_EV_OTHER;
	x->sub = SUB_NONE;
	x->collect_depth = 0;
	x->text_len = 0;
	x->text[0] = '\0';
	x->overflow = x->error = x->ping = x->id_ok = x->from_ok = false;
	x->iq_type = LG_IQ_NONE;

	if (stanza_is(name, "message")) {
		x->top = LG_EV_MESSAGE;
		x->error = type && strcmp(type, "error") == 0;
		x->from_ok = copy_attr(x->from, sizeof x->from, attr(atts, "from"));
	} else if (stanza_is(name, "presence")) {
		x->top = LG_EV_PRESENCE;
	} else if (stanza_is(name, "iq")) {
		x->top = LG_EV_IQ;
		x->iq_type = iq_type_of(type);
		x->id_ok = copy_attr(x->id, sizeof x->id, attr(atts, "id"));
		x->from_ok = copy_attr(x->from, sizeof x->from, attr(atts, "from"));
	} else if (name_is(name, NS_STREAM, "features")) {
		x->top = LG_EV_FEATURES;
		memset(&x->features, 0, sizeof x->features);
	} else if (name_is(name, NS_STREAM, "error")) {
		x->top = LG_EV_STREAM_ERROR;
	} else if (name_is(name, NS_TLS, "proceed")) {
		x->top = LG_EV_PROCEED;
	} else if (name_is(name, NS_TLS, "failure")) {
		x->top = LG_EV_TLS_FAILURE;
	} else if (name_is(name, NS_SASL, "challenge")) {
		x->top = LG_EV_CHALLENGE;
		xml_collect(x);
	} else if (name_is(name, NS_SASL, "success")) {
		x->top = LG_EV_SUCCESS;
		xml_collect(x);
	} else if (name_is(name, NS_SASL, "failure")) {
		x->top = LG_EV_SASL_FAILURE;
	} else if (name_is(name, NS_COMPONENT, "handshake")) {
		x->top = LG_EV_HANDSHAKE;
	}
}

static void xml_features_child(struct lg_xml *x, const XML_Char *name, const XML_Char **atts)
{
	struct lg_features *f = &x->features;

	if (x->depth == 3) {
		if (name_is(name, NS_TLS, "starttls"))
			f->starttls = true;
		else if (name_is(name, NS_SASL, "mechanisms"))
			x->sub = SUB_MECHS;
		else if (name_is(name, NS_BIND, "bind"))
			f->bind = true;
		else if (name_is(name, NS_SESSION, "session")) {
			f->session = true;
			x->sub = SUB_SESSION;
		} else if (name_is(name, NS_SASL_CB, "sasl-channel-binding")) {
			f->cb_listed = true;
			x->sub = SUB_CB;
		}
	} else if (x->depth == 4) {
		const XML_Char *type;

		if (x->sub == SUB_MECHS && name_is(name, NS_SASL, "mechanism"))
			xml_collect(x);
		else if (x->sub == SUB_SESSION && name_is(name, NS_SESSION, "optional"))
			f->session_optional = true;
		else if (x->sub == SUB_CB && name_is(name, NS_SASL_CB, "channel-binding") &&
			 (type = attr(atts, "type")) && strcmp(type, "tls-exporter") == 0)
			f->cb_exporter = true;
	}
}

static void xml_child_start(struct lg_xml *x, const XML_Char *name, const XML_Char **atts)
{
	switch (x->top) {
	case LG_EV_FEATURES:
		xml_features_child(x, name, atts);
		break;
	case LG_EV_MESSAGE:
		if (x->depth == 3 && x->sub != SUB_BODY_DONE && stanza_is(name, "body"))
			xml_collect(x);
		break;
	case LG_EV_IQ:
		if (x->depth == 3 && name_is(name, NS_PING, "ping"))
			x->ping = true;
		break;
	default:
		break;
	}
}

static void XMLCALL xml_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct lg_xml *x = ud;

	if (x->result)
		return;
	x->depth++;
	if (x->depth == 1) {
		if (!name_is(name, NS_STREAM, "stream")) {
			xml_stop(x, -EPROTO);
			return;
		}
		/* the stream id: a component's handshake hashes it */
		bool id_ok = copy_attr(x->id, sizeof x->id, attr(atts, "id"));
		struct lg_xml_event ev = { .type = LG_EV_STREAM_OPEN, .id = id_ok ? x->id : NULL };
		xml_emit(x, &ev);
	} else if (x->depth == 2) {
		xml_top_start(x, name, atts);
	} else {
		xml_child_start(x, name, atts);
	}
}

/* The text of the element at collect_depth is complete. */
static void xml_text_done(struct lg_xml *x)
{
	x->collect_depth = 0;
	if (x->top == LG_EV_FEATURES) {
		enum sasl_mech m = x->overflow ? SASL_MECH_NONE : sasl_mech_from_name(x->text);

		if (m != SASL_MECH_NONE && (unsigned)m < 32)
			x->features.mechs |= 1u << m;
		x->text_len = 0;
		x->text[0] = '\0';
	} else if (x->top == LG_EV_MESSAGE) {
		x->sub = SUB_BODY_DONE;
	}
}

/* The event for the depth-2 element just read (by expat or the splitter). */
static struct lg_xml_event top_event(const struct lg_xml *x)
{
	return (struct lg_xml_event){
		.type = x->top,
		.text = x->text,
		.text_len = x->text_len,
		.text_overflow = x->overflow,
		.error = x->error,
		.iq_type = x->iq_type,
		.iq_ping = x->ping,
		.id = x->id_ok ? x->id : NULL,
		.from = x->from_ok ? x->from : NULL,
		.features = &x->features,
	};
}

static void xml_top_end(struct lg_xml *x)
{
	struct lg_xml_event ev = top_event(x);

	xml_emit(x, &ev);
}

static void XMLCALL xml_end(void *ud, const XML_Char *name)
{
	struct lg_xml *x = ud;

	(void)name;
	if (x->result)
		return;
	if (x->collect_depth == x->depth)
		xml_text_done(x);
	if (x->depth == 3 && x->top == LG_EV_FEATURES)
		x->sub = SUB_NONE;
	if (x->depth == 2) {
		xml_top_end(x);
	} else if (x->depth == 1) {
		struct lg_xml_event ev = { .type = LG_EV_STREAM_CLOSE };
		xml_emit(x, &ev);
	}
	x->depth--;
}

static void XMLCALL xml_chars(void *ud, const XML_Char *s, int len)
{
	struct lg_xml *x = ud;

	if (x->result || x->collect_depth != x->depth || len <= 0)
		return;
	size_t room = sizeof x->text - 1 - x->text_len;
	size_t n = (size_t)len;
	if (n > room) {
		n = room;
		x->overflow = true;
	}
	memcpy(x->text + x->text_len, s, n);
	x->text_len += n;
	x->text[x->text_len] = '\0';
}

static void XMLCALL xml_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
				const XML_Char *pubid, int has_internal_subset)
{
	(void)name, (void)sysid, (void)pubid, (void)has_internal_subset;
	xml_stop(ud, -EPROTO); /* XMPP forbids DTDs; never expand entities */
}

static bool is_stanza_ns(const char *uri, size_t len)
{
	return (len == sizeof NS_CLIENT - 1 && memcmp(uri, NS_CLIENT, len) == 0) ||
	       (len == sizeof NS_COMPONENT - 1 && memcmp(uri, NS_COMPONENT, len) == 0);
}

/* Called before the start handler of the element that declares it: the
 * stream's own default namespace is declared at depth 0. */
static void XMLCALL xml_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct lg_xml *x = ud;

	if (x->depth == 0 && !prefix)
		x->stream_ns_ok = uri && is_stanza_ns(uri, strlen(uri));
}

static void xml_setup(struct lg_xml *x)
{
	XML_SetUserData(x->parser, x);
	XML_SetElementHandler(x->parser, xml_start, xml_end);
	XML_SetCharacterDataHandler(x->parser, xml_chars);
	XML_SetStartDoctypeDeclHandler(x->parser, xml_doctype);
	XML_SetStartNamespaceDeclHandler(x->parser, xml_ns_decl);
	/* Reparse deferral holds a stanza back until more bytes arrive; a load
	 * generator must see each stanza the moment it is complete, or the
	 * latency it reports includes expat waiting. The servers it talks to
	 * are test targets, not attackers. */
	XML_SetReparseDeferralEnabled(x->parser, XML_FALSE);
	x->result = 0;
	x->depth = 0;
	x->collect_depth = 0;
	x->text_len = 0;
	x->text[0] = '\0';
	x->sp_state = SP_TEXT;
	x->sp_depth = 0;
	x->stream_ns_ok = false;
}

int lg_xml_init(struct lg_xml *x, lg_xml_handler handler, void *arg)
{
	memset(x, 0, sizeof *x);
	/* namespace-aware: names arrive as "URI local", whatever the prefixes */
	x->parser = XML_ParserCreateNS(NULL, ' ');
	if (!x->parser)
		return -ENOMEM;
	x->handler = handler;
	x->arg = arg;
	xml_setup(x);
	return 0;
}

void lg_xml_reset(struct lg_xml *x)
{
	XML_ParserReset(x->parser, NULL);
	xml_setup(x);
}

void lg_xml_free(struct lg_xml *x)
{
	if (x->parser)
		XML_ParserFree(x->parser);
	x->parser = NULL;
}

/* ---- the splitter: messages without expat ----------------------------------
 *
 * In chat and component runs nearly every byte a connection receives is a
 * message, and parsing each one with expat took a fifth of the generator's
 * core, as much as the server under test spends on it. So a splitter looks at
 * the bytes first. It follows only tags, quoted attribute values and depth,
 * which tells it where each child of the stream element begins and ends. A
 * message that lies whole in one read and has the plain shape servers send
 * (the stream's namespace, no prefixes, children that hold only text, no
 * entity references in the body or the sender) is read right there;
 * everything else, including any message it does not fully understand, goes
 * to expat in stream order. Expat therefore always stops at the boundary
 * between two children of the stream when the splitter takes one, and its
 * state is what it would be had it read that message itself. Comments, CDATA
 * and DTDs ("<!") switch the splitter off for the rest of the stream.
 */


static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_name_end(char c)
{
	return is_space(c) || c == '>' || c == '/';
}

static const char *skip_space(const char *p, const char *end)
{
	while (p < end && is_space(*p))
		p++;
	return p;
}

struct fx_attr {
	const char *name, *value;
	size_t name_len, value_len;
};

/* The next attribute of a start tag: 1 with A filled, 0 at the tag's end
 * ('>' or '/' at *PP), -1 for anything else. */
static int fx_attr_next(const char **pp, const char *end, struct fx_attr *a)
{
	const char *p = skip_space(*pp, end);

	if (p >= end)
		return -1;
	if (*p == '>' || *p == '/') {
		*pp = p;
		return 0;
	}
	a->name = p;
	while (p < end && *p != '=' && !is_name_end(*p))
		p++;
	a->name_len = (size_t)(p - a->name);
	p = skip_space(p, end);
	if (a->name_len == 0 || p >= end || *p != '=')
		return -1;
	p = skip_space(p + 1, end);
	if (p >= end || (*p != '\'' && *p != '"'))
		return -1;
	const char *close = memchr(p + 1, *p, (size_t)(end - p - 1));
	if (!close)
		return -1;
	a->value = p + 1;
	a->value_len = (size_t)(close - a->value);
	if (memchr(a->value, '<', a->value_len))
		return -1; /* not well-formed: expat says so */
	*pp = close + 1;
	return 1;
}

static bool attr_is(const struct fx_attr *a, const char *name)
{
	size_t n = strlen(name);

	return a->name_len == n && memcmp(a->name, name, n) == 0;
}

static bool prefix_is(const struct fx_attr *a, const char *prefix)
{
	size_t n = strlen(prefix);

	return a->name_len > n + 1 && memcmp(a->name, prefix, n) == 0 && a->name[n] == ':';
}

/* An attribute of the message or its body that the splitter may pass over:
 * no namespace but the stanza one, no prefix but xml:. */
static bool attr_harmless(const struct fx_attr *a)
{
	if (attr_is(a, "xmlns"))
		return is_stanza_ns(a->value, a->value_len);
	return !memchr(a->name, ':', a->name_len) || prefix_is(a, "xml");
}

/* An attribute of another child (skipped whole): it may also declare
 * namespaces, which end with it. */
static bool attr_child_ok(const struct fx_attr *a)
{
	return attr_is(a, "xmlns") || prefix_is(a, "xmlns") || attr_harmless(a);
}

/* Text the splitter copies must mean what it says: no references, no CR
 * (which XML turns into LF). */
static bool text_literal(const char *s, size_t len)
{
	return !memchr(s, '&', len) && !memchr(s, '\r', len);
}

/* A child of the message, from just after its '<' to just past its end tag,
 * holding text only: *PP moves past it. BODY: collect its text into X. */
static bool fx_child(struct lg_xml *x, const char **pp, const char *end, bool *body_done)
{
	const char *p = *pp, *name = p;
	struct fx_attr a;
	int r;

	while (p < end && !is_name_end(*p))
		p++;
	size_t name_len = (size_t)(p - name);
	if (name_len == 0 || memchr(name, ':', name_len))
		return false;
	bool body = !*body_done && name_len == 4 && memcmp(name, "body", 4) == 0;
	while ((r = fx_attr_next(&p, end, &a)) > 0)
		if (!(body ? attr_harmless(&a) : attr_child_ok(&a)))
			return false;
	if (r < 0)
		return false;
	if (*p == '/') {
		if (p + 1 >= end || p[1] != '>')
			return false;
		*pp = p + 2;
		if (body)
			*body_done = true; /* an empty body: empty text */
		return true;
	}
	const char *text = p + 1, *lt = memchr(text, '<', (size_t)(end - text));
	if (!lt)
		return false;
	size_t text_len = (size_t)(lt - text);
	p = lt + 1;
	if (p >= end || *p != '/' || (size_t)(end - p - 1) < name_len ||
	    memcmp(p + 1, name, name_len) != 0)
		return false;
	p = skip_space(p + 1 + name_len, end);
	if (p >= end || *p != '>')
		return false;
	*pp = p + 1;
	if (body) {
		if (!text_literal(text, text_len))
			return false;
		size_t n = text_len < sizeof x->text - 1 ? text_len : sizeof x->text - 1;
		memcpy(x->text, text, n);
		x->text[n] = '\0';
		x->text_len = n;
		x->overflow = n < text_len;
		*body_done = true;
	}
	return true;
}

/* The message at [S, END), whole: filled into X as expat's handlers would
 * have, or false when it is for expat. */
static bool fx_message(struct lg_xml *x, const char *s, const char *end)
{
	const char *p = s + 8; /* past "<message" */
	struct fx_attr a;
	bool body_done = false, error = false, from_ok = false;
	int r;

	if (p >= end || !is_name_end(*p))
		return false;
	x->text_len = 0;
	x->text[0] = '\0';
	x->overflow = false;
	while ((r = fx_attr_next(&p, end, &a)) > 0) {
		if (attr_is(&a, "type")) {
			error = a.value_len == 5 && memcmp(a.value, "error", 5) == 0;
		} else if (attr_is(&a, "from")) {
			if (!text_literal(a.value, a.value_len) || memchr(a.value, '\n', a.value_len) ||
			    memchr(a.value, '\t', a.value_len))
				return false;
			from_ok = a.value_len < sizeof x->from; /* as copy_attr: too long, none */
			if (from_ok) {
				memcpy(x->from, a.value, a.value_len);
				x->from[a.value_len] = '\0';
			}
		} else if (!attr_harmless(&a)) {
			return false;
		}
	}
	if (r < 0)
		return false;
	if (*p == '/') {
		if (p + 2 != end || p[1] != '>')
			return false;
	} else {
		p++;
		for (;;) {
			const char *lt = memchr(p, '<', (size_t)(end - p));
			if (!lt || lt + 1 >= end)
				return false;
			p = lt + 1;
			if (*p == '/')
				break;
			if (*p == '!' || *p == '?' || !fx_child(x, &p, end, &body_done))
				return false;
		}
		/* the splitter ended the unit at this '>': nothing may follow */
		if (end - p < 9 || memcmp(p, "/message", 8) != 0)
			return false;
		p = skip_space(p + 8, end);
		if (p + 1 != end || *p != '>')
			return false;
	}
	x->top = LG_EV_MESSAGE;
	x->error = error;
	x->from_ok = from_ok;
	x->id_ok = x->ping = false;
	x->iq_type = LG_IQ_NONE;
	return true;
}

/* Expat reads [S, S + LEN): 0, the handler's answer, or -EPROTO. */
static int expat_feed(struct lg_xml *x, const char *s, size_t len)
{
	if (len && XML_Parse(x->parser, s, (int)len, XML_FALSE) == XML_STATUS_ERROR &&
	    x->result == 0)
		return -EPROTO;
	return x->result;
}

/* A child of the stream ended at END; it began at UNIT in this read. Expat
 * first reads what came before it. 0 to go on, else lg_xml_feed's answer. */
static int sp_unit(struct lg_xml *x, const char **done, const char *unit, const char *end)
{
	if (!x->stream_ns_ok || end - unit < 10 || memcmp(unit, "<message", 8) != 0)
		return 0;
	int r = expat_feed(x, *done, (size_t)(unit - *done));
	*done = unit;
	if (r != 0 || !fx_message(x, unit, end))
		return r;
	*done = end;
	x->fast_messages++;
	struct lg_xml_event ev = top_event(x);
	/* not xml_emit: expat is not parsing, there is nothing to stop */
	return x->result = x->handler(x->arg, &ev);
}

/* A tag just ended at END. */
static int sp_tag_end(struct lg_xml *x, const char **done, const char **unit, const char *end)
{
	x->sp_state = SP_TEXT;
	if (x->sp_pi)
		return 0;
	if (x->sp_closing) {
		if (x->sp_depth == 0) {
			x->sp_state = SP_OFF; /* an end tag with nothing open: expat's to judge */
			return 0;
		}
		x->sp_depth--;
	} else if (!x->sp_slash) {
		x->sp_depth++;
	}
	if (x->sp_depth != 1 || !*unit || !(x->sp_closing || x->sp_slash))
		return 0;
	const char *u = *unit;
	*unit = NULL;
	return sp_unit(x, done, u, end);
}

int lg_xml_feed(struct lg_xml *x, const char *data, size_t len)
{
	const char *p = data, *end = data + len, *done = data, *unit = NULL;
	int r = 0;

	x->result = 0;
	while (p < end && r == 0) {
		switch (x->sp_state) {
		case SP_TEXT: {
			const char *lt = memchr(p, '<', (size_t)(end - p));
			if (!lt) {
				p = end;
				break;
			}
			if (x->sp_depth == 1)
				unit = lt; /* a child of the stream begins */
			x->sp_state = SP_OPEN;
			p = lt + 1;
			break;
		}
		case SP_OPEN:
			if (*p == '!') {
				x->sp_state = SP_OFF;
				break;
			}
			x->sp_closing = *p == '/';
			x->sp_pi = *p == '?';
			x->sp_slash = false;
			x->sp_state = SP_TAG;
			if (x->sp_closing || x->sp_pi)
				p++;
			break;
		case SP_TAG:
			for (; p < end; p++) {
				char ch = *p;
				if (ch == '\'' || ch == '"') {
					x->sp_quote = ch;
					x->sp_state = SP_QUOTE;
					p++;
					break;
				}
				if (ch == '>') {
					p++;
					r = sp_tag_end(x, &done, &unit, p);
					break;
				}
				x->sp_slash = ch == '/';
			}
			break;
		case SP_QUOTE: {
			const char *q = memchr(p, x->sp_quote, (size_t)(end - p));
			if (!q) {
				p = end;
				break;
			}
			x->sp_state = SP_TAG;
			x->sp_slash = false;
			p = q + 1;
			break;
		}
		default: /* SP_OFF: expat alone from here */
			p = end;
			break;
		}
	}
	if (r == 0)
		r = expat_feed(x, done, (size_t)(end - done));
	if (r == LG_XML_RESTART)
		lg_xml_reset(x);
	return r;
}
