/*
 * xmlstream unit tests: stanzas as raw bytes, trees, RFC 6120 restrictions,
 * limits, chunking, reparse deferral, reset, close, memory, hibernation.
 *
 * XML_Parse is interposed below (this program defines it and forwards to
 * libexpat's) to count how often and how the wrapper calls expat, and
 * XML_ParserCreate_MM to make creating a parser fail.
 */
#include "tests/unit/check.h"
#include "workers/xmlstream.h"

#include <dlfcn.h>
#include <errno.h>
#include <expat.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- counting XML_Parse --------------------------------------------- */

static unsigned long parse_calls, parse_empty_calls;

enum XML_Status XMLCALL XML_Parse(XML_Parser p, const char *s, int len, int is_final)
{
	static enum XML_Status(XMLCALL * real)(XML_Parser, const char *, int, int);

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "XML_Parse");
	parse_calls++;
	if (len == 0)
		parse_empty_calls++;
	return real(p, s, len, is_final);
}

static bool fail_parser_create;

XML_Parser XMLCALL XML_ParserCreate_MM(const XML_Char *encoding,
				       const XML_Memory_Handling_Suite *suite,
				       const XML_Char *sep)
{
	static XML_Parser(XMLCALL * real)(const XML_Char *, const XML_Memory_Handling_Suite *,
					  const XML_Char *);

	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "XML_ParserCreate_MM");
	return fail_parser_create ? NULL : real(encoding, suite, sep);
}

/* ---- a recording client --------------------------------------------- */

#define MAX_STANZAS 128

struct stanza_rec {
	char *raw;
	size_t raw_len, start_tag_len;
	bool self_closing;
	char ns[64], name[64], to[64], from[64], type[32], id[32];
	char tree[2048]; /* dump of the tree, "" without one */
};

struct rec {
	struct xmlstream *xs;
	bool want_tree;
	int reset_on; /* request a reset in the stanza with this index, -1 none */
	int fail_on;  /* return non-zero from the stanza with this index */
	int open_rc;
	bool hibernate_in_cb;  /* try xmlstream_hibernate() from on_stanza */
	int hibernated_in_cb;  /* ...and it changed the stream's memory */
	int opens, closes, nstanzas;
	char open_ns[64], open_name[64], default_ns[64], open_to[64];
	struct stanza_rec st[MAX_STANZAS];
};

static void copy_str(char *dst, size_t cap, const char *s)
{
	snprintf(dst, cap, "%s", s ? s : "(null)");
}

static void appendf(char *buf, size_t cap, const char *fmt, ...)
{
	size_t n = strlen(buf);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + n, cap - n, fmt, ap);
	va_end(ap);
}

/* {ns}name @{ns}attr=value "text" [children] */
static void dump_node(char *buf, size_t cap, const struct xml_node *n)
{
	appendf(buf, cap, "{%s}%s", n->ns, n->name);
	for (int i = 0; i < n->attr_count; i++)
		appendf(buf, cap, " @{%s}%s=%s", n->attrs[i].ns, n->attrs[i].name,
			n->attrs[i].value);
	if (n->text_len)
		appendf(buf, cap, " \"%s\"", n->text);
	if (strlen(n->text) != n->text_len)
		appendf(buf, cap, " BADLEN");
	if (n->first_child) {
		appendf(buf, cap, " [");
		for (const struct xml_node *c = n->first_child; c; c = c->next) {
			if (c->parent != n)
				appendf(buf, cap, " BADPARENT");
			dump_node(buf, cap, c);
			if (c->next)
				appendf(buf, cap, ", ");
		}
		appendf(buf, cap, "]");
	}
}

static int rec_open(void *ctx, const char *ns, const char *name, const char *default_ns,
		    const struct xml_attr *attrs, int attr_count)
{
	struct rec *r = ctx;

	r->opens++;
	copy_str(r->open_ns, sizeof r->open_ns, ns);
	copy_str(r->open_name, sizeof r->open_name, name);
	copy_str(r->default_ns, sizeof r->default_ns, default_ns);
	r->open_to[0] = '\0';
	for (int i = 0; i < attr_count; i++)
		if (!attrs[i].ns[0] && strcmp(attrs[i].name, "to") == 0)
			copy_str(r->open_to, sizeof r->open_to, attrs[i].value);
	return r->open_rc;
}

static bool rec_stanza_start(void *ctx, const struct xml_stanza_head *head)
{
	struct rec *r = ctx;

	(void)head;
	return r->want_tree;
}

static int rec_stanza(void *ctx, const struct xml_stanza *st)
{
	struct rec *r = ctx;
	int i = r->nstanzas;

	if (i >= MAX_STANZAS)
		return -1;
	struct stanza_rec *s = &r->st[i];
	s->raw = malloc(st->raw_len + 1);
	memcpy(s->raw, st->raw, st->raw_len);
	s->raw[st->raw_len] = '\0';
	s->raw_len = st->raw_len;
	s->start_tag_len = st->start_tag_len;
	s->self_closing = st->self_closing;
	copy_str(s->ns, sizeof s->ns, st->head.ns);
	copy_str(s->name, sizeof s->name, st->head.name);
	copy_str(s->to, sizeof s->to, st->head.to);
	copy_str(s->from, sizeof s->from, st->head.from);
	copy_str(s->type, sizeof s->type, st->head.type);
	copy_str(s->id, sizeof s->id, st->head.id);
	s->tree[0] = '\0';
	if (st->tree)
		dump_node(s->tree, sizeof s->tree, st->tree);
	r->nstanzas++;
	if (r->hibernate_in_cb) {
		size_t before = xmlstream_memory(r->xs);

		xmlstream_hibernate(r->xs);
		r->hibernated_in_cb += xmlstream_memory(r->xs) != before;
	}
	if (i == r->reset_on)
		xmlstream_request_reset(r->xs);
	return i == r->fail_on ? 1 : 0;
}

static void rec_close(void *ctx)
{
	((struct rec *)ctx)->closes++;
}

static const struct xmlstream_callbacks rec_cb = {
	.on_stream_open = rec_open,
	.on_stanza_start = rec_stanza_start,
	.on_stanza = rec_stanza,
	.on_stream_close = rec_close,
};

static struct rec *rec_new(uint32_t max_size, uint32_t max_depth)
{
	struct rec *r = calloc(1, sizeof *r);

	r->reset_on = -1;
	r->fail_on = -1;
	r->xs = xmlstream_new(&rec_cb, r, max_size, max_depth);
	return r;
}

static void rec_free(struct rec *r)
{
	for (int i = 0; i < r->nstanzas; i++)
		free(r->st[i].raw);
	xmlstream_free(r->xs);
	free(r);
}

static enum xs_error feed_str(struct rec *r, const char *s)
{
	return xmlstream_feed(r->xs, s, strlen(s), NULL);
}

/* Feed S in pieces of CHUNK bytes; stop at the first error. */
static enum xs_error feed_chunked(struct rec *r, const char *s, size_t len, size_t chunk)
{
	enum xs_error e = XS_OK;

	for (size_t off = 0; off < len && e == XS_OK; off += chunk)
		e = xmlstream_feed(r->xs, s + off, len - off < chunk ? len - off : chunk, NULL);
	return e;
}

#define HEADER                                                                        \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "                  \
	"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0'>"

#define BIG 1000000
#define DEPTH 32

/* ---- tests ---------------------------------------------------------- */

static const char *const basic_stanzas[] = {
	"<message to='a@b' from='c@d/r' type='chat' id='m1'><body>hi &amp; bye</body></message>",
	"<presence/>",
	"<presence />",
	"<iq type='get' id='a>b'><query xmlns='jabber:iq:roster'/></iq>",
	"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>",
};

static void test_stream_basic(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	size_t n = sizeof basic_stanzas / sizeof basic_stanzas[0];

	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(r->opens == 1);
	CHECK_STR(r->open_ns, XMLNS_STREAMS);
	CHECK_STR(r->open_name, "stream");
	CHECK_STR(r->default_ns, XMLNS_CLIENT);
	CHECK_STR(r->open_to, "example.com");
	for (size_t i = 0; i < n; i++)
		CHECK(feed_str(r, basic_stanzas[i]) == XS_OK);
	CHECK(r->nstanzas == (int)n);
	for (size_t i = 0; i < n && (int)i < r->nstanzas; i++)
		CHECK_STR(r->st[i].raw, basic_stanzas[i]);
	if (r->nstanzas == (int)n) {
		struct stanza_rec *m = &r->st[0];
		CHECK(m->start_tag_len == strlen("<message to='a@b' from='c@d/r' type='chat' id='m1'>"));
		CHECK(!m->self_closing);
		CHECK_STR(m->ns, XMLNS_CLIENT);
		CHECK_STR(m->name, "message");
		CHECK_STR(m->to, "a@b");
		CHECK_STR(m->from, "c@d/r");
		CHECK_STR(m->type, "chat");
		CHECK_STR(m->id, "m1");
		CHECK_STR(m->tree, ""); /* not asked for */
		CHECK(r->st[1].self_closing && r->st[1].start_tag_len == r->st[1].raw_len);
		CHECK_STR(r->st[1].to, "(null)");
		CHECK(r->st[2].self_closing && r->st[2].start_tag_len == strlen("<presence />"));
		/* '>' inside an attribute value does not end the start tag */
		CHECK(r->st[3].start_tag_len == strlen("<iq type='get' id='a>b'>"));
		CHECK(!r->st[3].self_closing);
		CHECK_STR(r->st[3].id, "a>b");
		CHECK_STR(r->st[4].ns, XMLNS_STREAMS);
		CHECK_STR(r->st[4].name, "features");
	}
	rec_free(r);
}

static void test_stanzas_in_one_feed(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	char all[2048] = HEADER;
	size_t n = sizeof basic_stanzas / sizeof basic_stanzas[0];

	for (size_t i = 0; i < n; i++) {
		strcat(all, basic_stanzas[i]);
		strcat(all, "\n ");
	}
	CHECK(feed_str(r, all) == XS_OK);
	CHECK(r->nstanzas == (int)n);
	for (size_t i = 0; i < n && (int)i < r->nstanzas; i++)
		CHECK_STR(r->st[i].raw, basic_stanzas[i]);
	rec_free(r);
}

static void test_tree(void)
{
	struct rec *r = rec_new(BIG, DEPTH);

	r->want_tree = true;
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(feed_str(r, "<iq type='set' id='b1' xml:lang='en'>"
			  "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			  "<resource>ph&#x41;ne &lt;1&gt;</resource><x:y xmlns:x='urn:x' x:a='1' b='2'/>"
			  "</bind>tail</iq>") == XS_OK);
	CHECK(r->nstanzas == 1);
	CHECK_STR(r->st[0].tree,
		  "{jabber:client}iq @{}type=set @{}id=b1 @{" XMLNS_XML "}lang=en \"tail\" ["
		  "{urn:ietf:params:xml:ns:xmpp-bind}bind ["
		  "{urn:ietf:params:xml:ns:xmpp-bind}resource \"phAne <1>\", "
		  "{urn:x}y @{urn:x}a=1 @{}b=2]]");
	rec_free(r);
}

/* Text split over many feeds and interleaved with children ends up whole. */
static void test_tree_text_pieces(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	char expect[1024] = "{jabber:client}message [{jabber:client}body \"";
	const char *s = "<message><body>0123456789<br/>abcdefghij<br/>&amp;&#66;</body></message>";

	r->want_tree = true;
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(feed_chunked(r, s, strlen(s), 1) == XS_OK);
	CHECK(r->nstanzas == 1);
	strcat(expect, "0123456789abcdefghij&B\" [{jabber:client}br, {jabber:client}br]]");
	CHECK_STR(r->st[0].tree, expect);
	rec_free(r);
}

static void test_tree_helpers(void)
{
	struct xml_node root = { .ns = "jabber:client", .name = "iq", .text = "" };
	struct xml_node a = { .ns = "urn:a", .name = "query", .text = "", .parent = &root };
	struct xml_node b = { .ns = "urn:b", .name = "query", .text = "", .parent = &root };
	struct xml_attr attrs[] = { { XMLNS_XML, "lang", "en" }, { "", "lang", "de" },
				    { "", "id", "7" } };

	root.first_child = &a;
	a.next = &b;
	root.last_child = &b;
	root.attrs = attrs;
	root.attr_count = 3;
	CHECK(xml_child(&root, NULL, "query") == &a);
	CHECK(xml_child(&root, "urn:b", "query") == &b);
	CHECK(xml_child(&root, "urn:c", "query") == NULL);
	CHECK(xml_child(&root, NULL, "nope") == NULL);
	CHECK(xml_child(&a, NULL, "query") == NULL);
	CHECK_STR(xml_attr(&root, "lang"), "de"); /* xml:lang is namespaced */
	CHECK_STR(xml_attr(&root, "id"), "7");
	CHECK(xml_attr(&root, "to") == NULL);
}

static enum xs_error run_error(const char *input, char *text, size_t cap)
{
	struct rec *r = rec_new(4096, DEPTH);
	enum xs_error e = feed_str(r, input);

	if (text)
		snprintf(text, cap, "%s", xmlstream_error_text(r->xs));
	/* sticky: more bytes give the same error */
	if (e != XS_OK && xmlstream_feed(r->xs, "<a/>", 4, NULL) != e)
		e = XS_ERR_INTERNAL;
	rec_free(r);
	return e;
}

static void test_restricted(void)
{
	static const char *const bad[] = {
		"<?xml version='1.0'?><!DOCTYPE stream:stream><stream:stream xmlns:stream='"
		XMLNS_STREAMS "'>",
		"<!DOCTYPE x [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]><x>&b;</x>",
		"<!DOCTYPE x SYSTEM 'http://example.com/x.dtd'><x/>",
		HEADER "<?foo bar?>",
		HEADER "<message><?foo bar?></message>",
		"<?foo bar?>" HEADER,
		HEADER "<!-- hello -->",
		HEADER "<message><!-- hello --></message>",
		"<!-- x -->" HEADER,
		HEADER "<message><body>&foo;</body></message>",
		HEADER "<message to='&foo;'/>",
		HEADER "&foo;",
	};
	char text[256];

	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		enum xs_error e = run_error(bad[i], text, sizeof text);

		CHECK(e == XS_ERR_RESTRICTED_XML);
		if (e != XS_ERR_RESTRICTED_XML)
			printf("  input %zu: %d %s\n", i, e, text);
	}
	CHECK(run_error(HEADER "<message><body>&amp;&lt;&gt;&apos;&quot;&#65;&#x41;</body>"
			       "<x a='&amp;&#65;'/></message>", NULL, 0) == XS_OK);
}

static void test_not_well_formed(void)
{
	static const char *const bad[] = {
		HEADER "<message></presence>",
		HEADER "<message><body>\xc3\x28</body></message>",  /* bad continuation */
		HEADER "<message><body>\xc0\xaf</body></message>",  /* overlong */
		HEADER "<message><body>\xed\xa0\x80</body></message>", /* surrogate */
		HEADER "<message><body>\xf4\x90\x80\x80</body></message>", /* > U+10FFFF */
		HEADER "<<",
		HEADER "hello",               /* text between stanzas */
		HEADER "<foo:bar/>",          /* unbound prefix */
		HEADER "<a x='1' x='2'/>",    /* duplicate attribute */
		HEADER "<a>&#1;</a>",        /* not an XML 1.0 character */
		"<?xml version='1.0' encoding='ISO-8859-1'?><stream/>",
		"<?xml version='1.0' encoding='UTF-16'?><stream/>",
		"\xfe\xff\x00<",
		"<\x00s\x00",
		"junk<a/>",
		HEADER "</stream:stream><more/>", /* fine: ignored after the close */
	};
	char text[256];
	size_t n = sizeof bad / sizeof bad[0];

	for (size_t i = 0; i + 1 < n; i++) {
		size_t len = strlen(bad[i]);
		struct rec *r = rec_new(4096, DEPTH);
		enum xs_error e;

		if (bad[i][0] == '<' && bad[i][1] == '\0')
			len = 4; /* the UTF-16LE one holds NULs */
		if ((unsigned char)bad[i][0] == 0xfe)
			len = 4;
		e = xmlstream_feed(r->xs, bad[i], len, NULL);
		CHECK(e == XS_ERR_NOT_WELL_FORMED);
		if (e != XS_ERR_NOT_WELL_FORMED)
			printf("  input %zu: %d %s\n", i, e, xmlstream_error_text(r->xs));
		rec_free(r);
	}
	CHECK(run_error(bad[n - 1], NULL, 0) == XS_OK);
	CHECK(run_error("\xef\xbb\xbf" HEADER "<a/>", NULL, 0) == XS_OK); /* UTF-8 BOM */
	CHECK(run_error("<?xml version='1.0' encoding='utf-8'?><stream:stream xmlns:stream='"
			XMLNS_STREAMS "'><a/>", NULL, 0) == XS_OK);

	/* the message names the place and expat's reason */
	CHECK(run_error("<stream:stream xmlns:stream='" XMLNS_STREAMS "'>\n <a></b>", text,
			sizeof text) == XS_ERR_NOT_WELL_FORMED);
	CHECK_STR(text, "line 2, column 7: mismatched tag"); /* at the name */
	CHECK(run_error("<s>\n\n  <!-- c -->", text, sizeof text) == XS_ERR_RESTRICTED_XML);
	CHECK_STR(text, "line 3, column 3: comment not allowed");
}

static void test_error_conditions(void)
{
	CHECK_STR(xs_error_condition(XS_ERR_NOT_WELL_FORMED), "not-well-formed");
	CHECK_STR(xs_error_condition(XS_ERR_RESTRICTED_XML), "restricted-xml");
	CHECK_STR(xs_error_condition(XS_ERR_POLICY_VIOLATION), "policy-violation");
	CHECK_STR(xs_error_condition(XS_ERR_INTERNAL), "internal-server-error");
	CHECK_STR(xs_error_condition(XS_ERR_CALLBACK), "internal-server-error");
}

/* A stanza of exactly LEN bytes: <message><body>xxx</body></message>. */
static char *make_stanza(size_t len)
{
	const char *pre = "<message><body>", *post = "</body></message>";
	size_t fixed = strlen(pre) + strlen(post);
	char *s = malloc(len + 1);

	memcpy(s, pre, strlen(pre));
	memset(s + strlen(pre), 'x', len - fixed);
	memcpy(s + len - strlen(post), post, strlen(post) + 1);
	return s;
}

static void test_size_limit(void)
{
	const uint32_t max = 2000;
	size_t chunks[] = { 1, 7, 100, 4096, 100000 };

	for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
		for (size_t len = max - 1; len <= max + 1; len++) {
			char *s = make_stanza(len);
			struct rec *r = rec_new(max, DEPTH);
			enum xs_error e;

			CHECK(feed_str(r, HEADER) == XS_OK);
			e = feed_chunked(r, s, len, chunks[c]);
			if (len <= max) {
				CHECK(e == XS_OK && r->nstanzas == 1);
				CHECK(r->nstanzas == 1 && r->st[0].raw_len == len);
			} else {
				CHECK(e == XS_ERR_POLICY_VIOLATION && r->nstanzas == 0);
			}
			/* and again, with the stanza's end and the next in one piece */
			if (e == XS_OK)
				CHECK(feed_str(r, "<a/>") == XS_OK && r->nstanzas == 2);
			rec_free(r);
			free(s);
		}
	}
}

static void test_header_limit(void)
{
	char hdr[3000];
	struct rec *r = rec_new(1024, DEPTH);

	snprintf(hdr, sizeof hdr, "<stream:stream xmlns:stream='%s' id='%0*d'>", XMLNS_STREAMS,
		 1000, 0);
	CHECK(feed_str(r, hdr) == XS_ERR_POLICY_VIOLATION);
	CHECK(r->opens == 0);
	rec_free(r);
	r = rec_new(1024, DEPTH);
	CHECK(feed_chunked(r, hdr, strlen(hdr), 10) == XS_ERR_POLICY_VIOLATION);
	rec_free(r);
}

/* Complete stanzas that expat held back behind a large token do not count
 * as one oversized stanza. */
static void test_limit_counts_held_back_bytes_fairly(void)
{
	const uint32_t max = 1024;
	struct rec *r = rec_new(max, DEPTH);
	char big[4096], spaces[4000];
	size_t n = 0;

	n += (size_t)snprintf(big, sizeof big, "<message id='");
	memset(big + n, 'v', 1000);
	n += 1000;
	n += (size_t)snprintf(big + n, sizeof big - n, "'/>");
	for (int i = 0; i < 22; i++)
		n += (size_t)snprintf(big + n, sizeof big - n, "<presence id='%05d'/>", i);
	CHECK(feed_str(r, HEADER) == XS_OK);
	/* grow expat's buffer (4000 bytes of keepalive), so that it does not
	 * parse early to avoid a reallocation */
	memset(spaces, ' ', sizeof spaces);
	CHECK(xmlstream_feed(r->xs, spaces, sizeof spaces, NULL) == XS_OK);
	/* most of the tag first, so expat has a large partial token; then the
	 * rest: over the limit in all, yet below expat's doubling rule */
	CHECK(xmlstream_feed(r->xs, big, 990, NULL) == XS_OK);
	CHECK(n - 990 < 990 && n > max + 100);
	CHECK(xmlstream_feed(r->xs, big + 990, n - 990, NULL) == XS_OK);
	CHECK(r->nstanzas == 23);
	rec_free(r);
}

static char *make_nested(int depth)
{
	char *s = malloc((size_t)depth * 10 + 1);

	s[0] = '\0';
	for (int i = 0; i < depth; i++)
		strcat(s, "<a>");
	for (int i = 0; i < depth; i++)
		strcat(s, "</a>");
	return s;
}

static void test_depth_limit(void)
{
	for (int d = 1; d <= 6; d++) {
		char *s = make_nested(d);
		struct rec *r = rec_new(BIG, 4);
		enum xs_error e;

		r->want_tree = d % 2; /* the limit holds with or without a tree */
		CHECK(feed_str(r, HEADER) == XS_OK);
		e = feed_str(r, s);
		CHECK(d <= 4 ? e == XS_OK && r->nstanzas == 1 :
			       e == XS_ERR_POLICY_VIOLATION && r->nstanzas == 0);
		rec_free(r);
		free(s);
	}
}

static const char split_stream[] =
	HEADER "<message to='x@y' id='1'><body>a&amp;b</body></message> "
	"<presence/><iq type='get' id='q'><query xmlns='jabber:iq:version'/></iq>\n"
	"</stream:stream>";

static void check_same_stanzas(const struct rec *a, const struct rec *b)
{
	CHECK(a->nstanzas == b->nstanzas);
	for (int i = 0; i < a->nstanzas && i < b->nstanzas; i++) {
		CHECK(a->st[i].raw_len == b->st[i].raw_len);
		CHECK_STR(a->st[i].raw, b->st[i].raw);
		CHECK(a->st[i].start_tag_len == b->st[i].start_tag_len);
		CHECK(a->st[i].self_closing == b->st[i].self_closing);
		CHECK_STR(a->st[i].tree, b->st[i].tree);
		CHECK_STR(a->st[i].ns, b->st[i].ns);
		CHECK_STR(a->st[i].name, b->st[i].name);
		CHECK_STR(a->st[i].to, b->st[i].to);
		CHECK_STR(a->st[i].from, b->st[i].from);
		CHECK_STR(a->st[i].type, b->st[i].type);
		CHECK_STR(a->st[i].id, b->st[i].id);
	}
}

/* Everything a client saw: headers, stanzas, closes. */
static void check_same_run(const struct rec *a, const struct rec *b)
{
	check_same_stanzas(a, b);
	CHECK(a->opens == b->opens);
	CHECK(a->closes == b->closes);
	CHECK_STR(a->open_ns, b->open_ns);
	CHECK_STR(a->open_name, b->open_name);
	CHECK_STR(a->default_ns, b->default_ns);
	CHECK_STR(a->open_to, b->open_to);
}

static void test_every_split(void)
{
	size_t len = strlen(split_stream);
	struct rec *ref = rec_new(BIG, DEPTH);

	ref->want_tree = true;
	CHECK(feed_str(ref, split_stream) == XS_OK);
	CHECK(ref->nstanzas == 3 && ref->closes == 1);
	for (size_t i = 0; i <= len; i++) {
		struct rec *r = rec_new(BIG, DEPTH);

		r->want_tree = true;
		CHECK(xmlstream_feed(r->xs, split_stream, i, NULL) == XS_OK);
		CHECK(xmlstream_feed(r->xs, split_stream + i, len - i, NULL) == XS_OK);
		check_same_stanzas(ref, r);
		CHECK(r->closes == 1);
		rec_free(r);
	}
	/* three pieces, every pair of split points inside the first stanza */
	size_t from = strlen(HEADER), to = from + 55;
	for (size_t i = from; i < to; i++) {
		for (size_t j = i; j < to; j++) {
			struct rec *r = rec_new(BIG, DEPTH);

			r->want_tree = true;
			CHECK(xmlstream_feed(r->xs, split_stream, i, NULL) == XS_OK);
			CHECK(xmlstream_feed(r->xs, split_stream + i, j - i, NULL) == XS_OK);
			CHECK(xmlstream_feed(r->xs, split_stream + j, len - j, NULL) == XS_OK);
			check_same_stanzas(ref, r);
			rec_free(r);
		}
	}
	rec_free(ref);
}

/* Fed a byte at a time, a stanza is reported exactly when its last byte
 * arrives: reparse deferral does not hold it back. */
static void test_one_byte_chunks(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	const char *s = "<message to='a@b'><body>hello</body></message>";
	size_t len = strlen(s);

	CHECK(feed_str(r, HEADER) == XS_OK);
	for (int round = 0; round < 3; round++) {
		for (size_t i = 0; i < len; i++) {
			CHECK(xmlstream_feed(r->xs, s + i, 1, NULL) == XS_OK);
			CHECK(r->nstanzas == round + (i + 1 == len));
		}
	}
	CHECK(r->nstanzas == 3);
	if (r->nstanzas == 3)
		CHECK_STR(r->st[2].raw, s);
	rec_free(r);
}

/* A 200 KiB attribute value fed in 100-byte pieces: the stanza is reported
 * when it is complete, and expat re-scans the pending token only a bounded
 * number of times (not once per piece: that was CVE-2023-52425). */
static void test_huge_token_linear(void)
{
	const size_t vlen = 200 * 1024;
	struct rec *r = rec_new(256 * 1024, DEPTH);
	size_t len;
	char *s = malloc(vlen + 64);
	struct timespec t0, t1;

	len = (size_t)sprintf(s, "<message id='");
	memset(s + len, 'v', vlen);
	for (size_t i = 50; i < vlen; i += 100)
		s[len + i] = '>'; /* legal in a value: must not end the tag */
	len += vlen;
	len += (size_t)sprintf(s + len, "'/>");
	CHECK(feed_str(r, HEADER) == XS_OK);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	parse_calls = parse_empty_calls = 0;
	for (size_t off = 0; off < len; off += 100) {
		size_t n = len - off < 100 ? len - off : 100;

		CHECK(xmlstream_feed(r->xs, s + off, n, NULL) == XS_OK);
		CHECK(r->nstanzas == (off + n == len));
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* one parse per piece, plus deferral-off parses while the pending
	 * token is small (4 KiB / 100 bytes) and one when it is complete */
	CHECK(parse_calls - parse_empty_calls == (len + 99) / 100);
	CHECK(parse_empty_calls <= 4096 / 100 + 3);
	printf("# 200 KiB attribute in 100-byte pieces: %.1f ms, %lu parses, %lu without deferral\n",
	       (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
	       parse_calls, parse_empty_calls);
	if (r->nstanzas == 1)
		CHECK(r->st[0].raw_len == len && memcmp(r->st[0].raw, s, len) == 0);
	rec_free(r);
	free(s);
}

static void test_reset(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	const char *starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
	char in[1024];
	size_t consumed = 0;

	snprintf(in, sizeof in, "%s<presence/>%s%s<message/>", HEADER, starttls, HEADER);
	r->reset_on = 1; /* the starttls */
	CHECK(xmlstream_feed(r->xs, in, strlen(in), &consumed) == XS_OK);
	CHECK(xmlstream_reset_requested(r->xs));
	CHECK(r->nstanzas == 2);
	CHECK(consumed == strlen(HEADER) + strlen("<presence/>") + strlen(starttls));
	CHECK(xmlstream_reset(r->xs) == 0);
	CHECK(!xmlstream_reset_requested(r->xs));
	r->reset_on = -1;
	CHECK(xmlstream_feed(r->xs, in + consumed, strlen(in) - consumed, &consumed) == XS_OK);
	CHECK(consumed == strlen(HEADER) + strlen("<message/>"));
	CHECK(r->opens == 2);
	CHECK(r->nstanzas == 3);
	if (r->nstanzas == 3)
		CHECK_STR(r->st[2].raw, "<message/>");
	rec_free(r);

	/* the reset stanza arriving across feeds, and the new stream with an
	 * XML declaration */
	r = rec_new(BIG, DEPTH);
	r->reset_on = 0;
	CHECK(feed_str(r, HEADER "<auth mechanism='PLAIN'>AGFAYg") == XS_OK);
	CHECK(xmlstream_feed(r->xs, "==</auth><junk", 14, &consumed) == XS_OK);
	CHECK(consumed == strlen("==</auth>"));
	/* feeding without the reset is a caller's error */
	CHECK(xmlstream_feed(r->xs, "x", 1, NULL) == XS_ERR_INTERNAL);
	CHECK(xmlstream_reset(r->xs) == 0);
	CHECK(feed_str(r, HEADER "<iq/>") == XS_OK);
	CHECK(r->nstanzas == 2 && r->opens == 2);
	if (r->nstanzas == 2)
		CHECK_STR(r->st[0].raw, "<auth mechanism='PLAIN'>AGFAYg==</auth>");
	rec_free(r);
}

static void test_keepalives(void)
{
	struct rec *r = rec_new(1024, DEPTH);

	CHECK(feed_str(r, HEADER) == XS_OK);
	for (int i = 0; i < 5000; i++) /* far more than max_stanza_size in total */
		CHECK(feed_str(r, i % 2 ? " " : "\r\n\t ") == XS_OK);
	CHECK(feed_str(r, "<presence/>  ") == XS_OK);
	CHECK(r->nstanzas == 1);
	CHECK(feed_str(r, " x ") == XS_ERR_NOT_WELL_FORMED);
	rec_free(r);
}

static void test_stream_close(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	const char *tail = "<presence/></stream:stream>";
	size_t consumed = 99;

	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(xmlstream_feed(r->xs, "<presence/></stream:stream>  <x/>", 33, &consumed) == XS_OK);
	CHECK(consumed == strlen(tail));
	CHECK(r->closes == 1 && r->nstanzas == 1);
	CHECK(xmlstream_feed(r->xs, "junk", 4, &consumed) == XS_OK);
	CHECK(consumed == 0 && r->closes == 1 && r->nstanzas == 1);
	rec_free(r);

	/* an open stanza at the close is not-well-formed */
	r = rec_new(BIG, DEPTH);
	CHECK(feed_str(r, HEADER "<message></stream:stream>") == XS_ERR_NOT_WELL_FORMED);
	CHECK(r->closes == 0);
	rec_free(r);
}

static void test_callback_stops(void)
{
	struct rec *r = rec_new(BIG, DEPTH);

	r->open_rc = 1;
	CHECK(feed_str(r, HEADER "<a/>") == XS_ERR_CALLBACK);
	CHECK(r->nstanzas == 0);
	rec_free(r);
	r = rec_new(BIG, DEPTH);
	r->fail_on = 0;
	CHECK(feed_str(r, HEADER "<a/><b/>") == XS_ERR_CALLBACK);
	CHECK(r->nstanzas == 1);
	CHECK(strstr(xmlstream_error_text(r->xs), "line 1, column ") != NULL);
	rec_free(r);
}

/* An error in one stream leaves another, fed in between, untouched. */
static void test_streams_independent(void)
{
	struct rec *a = rec_new(BIG, DEPTH), *b = rec_new(BIG, DEPTH);

	CHECK(feed_str(a, HEADER "<message><body>") == XS_OK);
	CHECK(feed_str(b, HEADER "<message><body>") == XS_OK);
	CHECK(feed_str(a, "x</bo") == XS_OK);
	CHECK(feed_str(b, "y</body></message><!-- -->") == XS_ERR_RESTRICTED_XML);
	CHECK(feed_str(a, "dy></message><presence/>") == XS_OK);
	CHECK(a->nstanzas == 2 && b->nstanzas == 1);
	if (a->nstanzas == 2)
		CHECK_STR(a->st[0].raw, "<message><body>x</body></message>");
	CHECK(feed_str(b, "<presence/>") == XS_ERR_RESTRICTED_XML);
	CHECK(feed_str(a, "<presence/>") == XS_OK);
	CHECK(a->nstanzas == 3);
	rec_free(a);
	rec_free(b);
}

static void test_memory_trim(void)
{
	struct rec *r = rec_new(256 * 1024, DEPTH);
	size_t idle, after_big, trimmed;
	char *s = malloc(100 * 1024);
	size_t len;

	CHECK(feed_str(r, HEADER "<presence/><message><body>hi</body></message>") == XS_OK);
	xmlstream_trim(r->xs);
	idle = xmlstream_memory(r->xs);
	printf("# idle stream after trim: %zu bytes\n", idle);
	CHECK(idle < 16 * 1024);

	/* a stanza with a big start tag, fed in pieces, grows expat's buffer */
	len = (size_t)sprintf(s, "<stream:features id='");
	memset(s + len, 'v', 60 * 1024);
	len += 60 * 1024;
	len += (size_t)sprintf(s + len, "'/>");
	CHECK(feed_chunked(r, s, len - 1, 1000) == XS_OK);
	CHECK(xmlstream_memory(r->xs) > 60 * 1024); /* we keep the partial stanza */
	CHECK(feed_chunked(r, s + len - 1, 1, 1) == XS_OK);
	CHECK(r->nstanzas == 3);
	after_big = xmlstream_memory(r->xs);
	xmlstream_trim(r->xs);
	trimmed = xmlstream_memory(r->xs);
	printf("# after a 60 KiB start tag: %zu bytes, after trim %zu\n", after_big, trimmed);
	CHECK(trimmed < after_big);
	CHECK(trimmed < 16 * 1024);

	/* the stream goes on: prefixes declared on the header still work */
	CHECK(feed_str(r, "<stream:features><x/></stream:features>") == XS_OK);
	CHECK(r->nstanzas == 4);
	if (r->nstanzas == 4) {
		CHECK_STR(r->st[3].ns, XMLNS_STREAMS);
		CHECK_STR(r->st[3].raw, "<stream:features><x/></stream:features>");
	}
	CHECK(feed_str(r, "</stream:stream>") == XS_OK);
	CHECK(r->closes == 1);
	rec_free(r);
	free(s);
}

/* After a trim replaced the parser, or a hibernated stream woke up with a
 * new one, error positions are those of the stream, not of the
 * replacement: on a later line, and on the line where the replacement took
 * over. */
static void test_trim_keeps_positions(void)
{
	static const char *const tails[] = { "<a>\n<b></c>", "<a></c>" };
	static const char *const want[] = { "line 5, column 6: mismatched tag",
					    "line 4, column 19: mismatched tag" };
	char big[40000];
	char text[3][256];

	snprintf(big, sizeof big, "<iq id='%0*d'/>", 30000, 7);
	for (int t = 0; t < 2; t++) {
		const char *parts[] = {
			"<stream:stream xmlns='jabber:client'\n xmlns:stream='" XMLNS_STREAMS "'>\n",
			"<message>", big, "</message>\n  <presence/>", tails[t],
		};
		/* 0: as is, 1: trimmed, 2: hibernating between the parts */
		for (int mode = 0; mode < 3; mode++) {
			struct rec *r = rec_new(64 * 1024, DEPTH);
			enum xs_error e = XS_OK;
			int slept = 0;

			for (size_t i = 0; i < sizeof parts / sizeof parts[0] && e == XS_OK; i++) {
				e = feed_chunked(r, parts[i], strlen(parts[i]), 500);
				if (mode == 1)
					xmlstream_trim(r->xs);
				if (mode == 2) {
					size_t before = xmlstream_memory(r->xs);

					xmlstream_hibernate(r->xs);
					slept += xmlstream_memory(r->xs) < before;
				}
			}
			CHECK(e == XS_ERR_NOT_WELL_FORMED);
			CHECK(r->nstanzas == 2);
			CHECK(mode != 2 || slept == 2); /* after the header and the presence */
			snprintf(text[mode], sizeof text[mode], "%s", xmlstream_error_text(r->xs));
			rec_free(r);
		}
		for (int mode = 0; mode < 3; mode++) {
			CHECK_STR(text[mode], want[t]);
			if (strcmp(text[mode], want[t]))
				printf("  mode %d: %s\n", mode, text[mode]);
		}
	}
}

/* expat keeps every distinct name for the life of the parser: a stream of
 * made-up names hits the stream's memory limit... */
static void test_memory_limit_names(void)
{
	char *s = malloc(64 * 1024);
	enum xs_error e[3] = { XS_OK, XS_OK, XS_OK };

	for (int mode = 0; mode < 3; mode++) {
		/* 0: distinct names, 1: the same names, 2: distinct with trims */
		struct rec *r = rec_new(32 * 1024, DEPTH);
		int name = 0;

		e[mode] = feed_str(r, HEADER);
		for (int st = 0; st < 40 && e[mode] == XS_OK; st++) {
			size_t len = (size_t)sprintf(s, "<m>");
			for (int i = 0; i < 1500; i++, name++)
				len += (size_t)sprintf(s + len, "<n%d/>", mode == 1 ? i : name);
			len += (size_t)sprintf(s + len, "</m>");
			e[mode] = xmlstream_feed(r->xs, s, len, NULL);
			if (mode == 2)
				xmlstream_trim(r->xs);
		}
		if (mode == 0)
			CHECK(r->nstanzas < 40);
		else
			CHECK(r->nstanzas == 40);
		rec_free(r);
	}
	CHECK(e[0] == XS_ERR_POLICY_VIOLATION);
	CHECK(e[1] == XS_OK);
	CHECK(e[2] == XS_OK);
	free(s);
}

/* ...and so does a tag with very many attributes or a tree of tiny
 * elements, which cost far more than their bytes. */
static void test_memory_limit_tree(void)
{
	const uint32_t max = 64 * 1024;
	char *s = malloc(max + 64);
	struct rec *r = rec_new(max, DEPTH);
	size_t len = (size_t)sprintf(s, "<iq>");

	while (len < max - 16)
		len += (size_t)sprintf(s + len, "<a/>");
	len += (size_t)sprintf(s + len, "</iq>");
	r->want_tree = true;
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(xmlstream_feed(r->xs, s, len, NULL) == XS_ERR_POLICY_VIOLATION);
	CHECK(strstr(xmlstream_error_text(r->xs), "memory limit") != NULL);
	rec_free(r);

	/* without a tree the same stanza is fine */
	r = rec_new(max, DEPTH);
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(xmlstream_feed(r->xs, s, len, NULL) == XS_OK);
	CHECK(r->nstanzas == 1);
	rec_free(r);
	free(s);
}

/* ---- hibernation ---------------------------------------------------- */

/* Try to hibernate; whether it happened, seen in the stream's memory. */
static bool hibernate(struct rec *r)
{
	size_t before = xmlstream_memory(r->xs);

	xmlstream_hibernate(r->xs);
	return xmlstream_memory(r->xs) < before;
}

/* What a client sends in its first minutes: on several lines, with an XML
 * declaration, prefixes declared on the header and on a stanza, entities,
 * CDATA, non-ASCII text, and whitespace keepalives (CR LF among them). */
static const char client_stream[] =
	"<?xml version='1.0' encoding='UTF-8'?>\n"
	"<stream:stream xmlns='jabber:client' xmlns:stream='" XMLNS_STREAMS "'\n"
	"  to='example.com' version='1.0' xml:lang='en'>\n"
	"<iq type='set' id='bind_1'><bind xmlns='" XMLNS_BIND "'>"
	"<resource>balcony</resource></bind></iq>\n"
	"<presence><show>away</show><status>Gr\xc3\xbc\xc3\x9f" "e &amp; \xe2\x98\x95</status>"
	"<priority>5</priority></presence>\r\n"
	"<message to='juliet@example.com/balcony' from='romeo@example.net/orchard' type='chat' "
	"id='m_1' xml:lang='de'><body>Wherefore art thou? &lt;3 &#x263A;</body>"
	"<active xmlns='http://jabber.org/protocol/chatstates'/></message>  \t "
	"<iq type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>"
	"<message to='a@b'><x:data xmlns:x='urn:x' x:a='1'>one</x:data>"
	"<body><![CDATA[<not a tag>]]></body></message>\n"
	"<stream:features/><r xmlns='urn:xmpp:sm:3'/> \n"
	"</stream:stream>";

#define CLIENT_STANZAS 7

/* Where hibernating must work in client_stream: before any byte, and from
 * the end of the header to the close tag wherever no stanza is open (but
 * not after a CR: expat holds it back until it sees whether LF follows). */
static bool client_stream_safe(const struct rec *ref, size_t at)
{
	const char *s = client_stream, *from = s;
	const char *header_end = strstr(s, "'en'>") + strlen("'en'>");

	if (at == 0)
		return true;
	if (at < (size_t)(header_end - s) || s[at - 1] == '\r' || at > strlen(s) - 16)
		return false;
	for (int i = 0; i < ref->nstanzas; i++) {
		const char *st = strstr(from, ref->st[i].raw);

		if (!st)
			return false;
		from = st + ref->st[i].raw_len;
		if (at > (size_t)(st - s) && at < (size_t)(from - s))
			return false;
	}
	return true;
}

/* Hibernating at any point of a stream, then feeding the rest, gives what
 * the stream gives uninterrupted; and it works exactly at the safe points. */
static void test_hibernate_every_point(void)
{
	const char *s = client_stream;
	size_t len = strlen(s);
	struct rec *ref = rec_new(BIG, DEPTH), *r;
	int safe = 0, slept;

	ref->want_tree = true;
	CHECK(feed_str(ref, s) == XS_OK);
	CHECK(ref->nstanzas == CLIENT_STANZAS && ref->closes == 1);
	for (size_t i = 0; i <= len; i++) {
		bool expect = client_stream_safe(ref, i), did;

		r = rec_new(BIG, DEPTH);
		r->want_tree = true;
		CHECK(xmlstream_feed(r->xs, s, i, NULL) == XS_OK);
		did = hibernate(r);
		CHECK(did == expect);
		if (did != expect)
			printf("  at %zu (after '%.10s'): %s\n", i, s + (i > 10 ? i - 10 : 0),
			       did ? "hibernated" : "did not hibernate");
		safe += expect;
		if (did) {
			CHECK(xmlstream_memory(r->xs) < 1024);
			CHECK(!hibernate(r)); /* once is enough */
		}
		CHECK(xmlstream_feed(r->xs, s + i, len - i, NULL) == XS_OK);
		check_same_run(ref, r);
		rec_free(r);
	}
	/* at least: before the first byte, after the header, after each stanza */
	CHECK(safe >= 2 + CLIENT_STANZAS);

	/* a byte at a time, hibernating wherever possible: many wake-ups */
	r = rec_new(BIG, DEPTH);
	r->want_tree = true;
	slept = hibernate(r);
	for (size_t i = 0; i < len; i++) {
		CHECK(xmlstream_feed(r->xs, s + i, 1, NULL) == XS_OK);
		slept += hibernate(r);
	}
	CHECK(slept == safe);
	check_same_run(ref, r);
	rec_free(r);
	rec_free(ref);
}

static void test_hibernate_only_when_safe(void)
{
	static const struct {
		const char *before, *after;
		int stanzas;
	} cases[] = {
		{ HEADER "<message><body>hi", "</body></message>", 1 }, /* in a stanza */
		{ HEADER "<message><body>hi</body></message", "><a/>", 2 }, /* in its end tag */
		{ HEADER "<a/><", "b/>", 2 },                      /* a tag begins */
		{ HEADER "<a/>\r", "\n<b/>", 2 },                  /* expat holds the CR */
		{ "<stream:stream xmlns='jabber:client' ", "xmlns:stream='" XMLNS_STREAMS "'><a/>",
		  1 },                                             /* in the header */
		{ "<?xml version='1.0'?>", strstr(HEADER, "<stream:"), 0 }, /* before it */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct rec *r = rec_new(BIG, DEPTH);

		CHECK(feed_str(r, cases[i].before) == XS_OK);
		CHECK(!hibernate(r));
		CHECK(feed_str(r, cases[i].after) == XS_OK);
		CHECK(r->nstanzas == cases[i].stanzas);
		CHECK(hibernate(r)); /* and now it can */
		rec_free(r);
	}

	/* not after an error, a close, or a reset request */
	struct rec *r = rec_new(BIG, DEPTH);
	char text[256];
	CHECK(feed_str(r, HEADER "<a></b>") == XS_ERR_NOT_WELL_FORMED);
	snprintf(text, sizeof text, "%s", xmlstream_error_text(r->xs));
	CHECK(!hibernate(r));
	CHECK_STR(xmlstream_error_text(r->xs), text);
	rec_free(r);
	r = rec_new(BIG, DEPTH);
	CHECK(feed_str(r, HEADER "<a/></stream:stream>") == XS_OK);
	CHECK(r->closes == 1 && !hibernate(r));
	rec_free(r);
	r = rec_new(BIG, DEPTH);
	r->reset_on = 0;
	CHECK(feed_str(r, HEADER "<starttls/>") == XS_OK);
	CHECK(xmlstream_reset_requested(r->xs) && !hibernate(r));
	rec_free(r);

	/* nor from inside its own callbacks */
	r = rec_new(BIG, DEPTH);
	r->hibernate_in_cb = true;
	CHECK(feed_str(r, HEADER "<a/><b/>") == XS_OK);
	CHECK(r->nstanzas == 2 && r->hibernated_in_cb == 0);
	rec_free(r);
}

/* Feed in CHUNK pieces, hibernating after every piece. */
static enum xs_error feed_chunked_hibernating(struct rec *r, const char *s, size_t len,
					      size_t chunk)
{
	enum xs_error e = XS_OK;

	for (size_t off = 0; off < len && e == XS_OK; off += chunk) {
		e = xmlstream_feed(r->xs, s + off, len - off < chunk ? len - off : chunk, NULL);
		xmlstream_hibernate(r->xs);
	}
	return e;
}

/* The size, depth and memory limits hold across a wake-up. */
static void test_hibernate_limits(void)
{
	const uint32_t max = 2000;

	for (size_t len = max - 1; len <= max + 1; len++) {
		char *s = make_stanza(len);

		for (size_t chunk = 7; chunk <= 7000; chunk *= 1000) {
			struct rec *r = rec_new(max, DEPTH);
			enum xs_error e;

			CHECK(feed_str(r, HEADER) == XS_OK);
			CHECK(hibernate(r));
			e = feed_chunked_hibernating(r, s, len, chunk);
			CHECK(len <= max ? e == XS_OK && r->nstanzas == 1 :
					   e == XS_ERR_POLICY_VIOLATION && r->nstanzas == 0);
			rec_free(r);
		}
		free(s);
	}
	for (int d = 4; d <= 5; d++) {
		char *s = make_nested(d);
		struct rec *r = rec_new(BIG, 4);

		CHECK(feed_str(r, HEADER "<a/>") == XS_OK);
		CHECK(hibernate(r));
		CHECK(feed_str(r, s) == (d <= 4 ? XS_OK : XS_ERR_POLICY_VIOLATION));
		CHECK(r->nstanzas == (d <= 4 ? 2 : 1));
		rec_free(r);
		free(s);
	}

	/* the stream's memory limit applies to what it builds after waking */
	const uint32_t mmax = 64 * 1024;
	char *s = malloc(mmax + 64);
	size_t len = (size_t)sprintf(s, "<iq>");
	while (len < mmax - 16)
		len += (size_t)sprintf(s + len, "<a/>");
	len += (size_t)sprintf(s + len, "</iq>");
	struct rec *r = rec_new(mmax, DEPTH);
	r->want_tree = true;
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(hibernate(r));
	CHECK(xmlstream_feed(r->xs, s, len, NULL) == XS_ERR_POLICY_VIOLATION);
	CHECK(strstr(xmlstream_error_text(r->xs), "memory limit") != NULL);
	rec_free(r);
	free(s);
}

/* A stream that ends in an error gives the same error, at the same line and
 * column, whether or not it hibernated on the way, wherever it did. */
static void test_hibernate_same_errors(void)
{
	char big[1400];
	const char *inputs[] = {
		HEADER "\n  <presence/>  <message>\xc3\xa9</mess>",
		HEADER "<presence/>\n\t<a>\n<b></c>",
		HEADER "<presence/>\n x",
		HEADER "<presence/><!-- c -->",
		HEADER "<presence/><?pi x?>",
		HEADER "<presence/>\n&foo;",
		HEADER "<presence/><m>&foo;</m>",
		HEADER "<presence/><m>\xc3\x28</m>",
		HEADER "<presence/><foo:bar/>",
		HEADER "<presence/>\n</stream:streamx>",
		HEADER "<presence/><a><a><a><a><a>x</a></a></a></a></a>", /* too deep */
		HEADER "<presence/><a/><!DOCTYPE x>",
		"<?xml version='1.0'?>\n<stream:stream xmlns='jabber:client'\n xmlns:stream='"
		XMLNS_STREAMS "'>\n <presence/>\xc3\xa9<a/>",
		big, /* too large */
		HEADER "<presence/></stream:stream>junk", /* no error */
	};
	size_t n = (size_t)snprintf(big, sizeof big, "%s<presence/>\n<m>", HEADER);

	memset(big + n, 'x', 1100);
	snprintf(big + n + 1100, sizeof big - n - 1100, "</m>");
	for (size_t k = 0; k < sizeof inputs / sizeof inputs[0]; k++) {
		const char *s = inputs[k];
		size_t len = strlen(s);
		int slept = 0;

		for (size_t i = 0; i <= len; i++) {
			struct rec *r[2];
			enum xs_error e[2];

			for (int h = 0; h < 2; h++) {
				r[h] = rec_new(1024, 4);
				e[h] = xmlstream_feed(r[h]->xs, s, i, NULL);
				if (h)
					slept += hibernate(r[h]);
				if (e[h] == XS_OK)
					e[h] = xmlstream_feed(r[h]->xs, s + i, len - i, NULL);
			}
			CHECK(e[0] == e[1]);
			CHECK(k + 1 == sizeof inputs / sizeof inputs[0] ? e[0] == XS_OK :
									  e[0] != XS_OK);
			CHECK_STR(xmlstream_error_text(r[0]->xs), xmlstream_error_text(r[1]->xs));
			if (strcmp(xmlstream_error_text(r[0]->xs), xmlstream_error_text(r[1]->xs)))
				printf("  input %zu at %zu: %s | %s\n", k, i,
				       xmlstream_error_text(r[0]->xs), xmlstream_error_text(r[1]->xs));
			check_same_run(r[0], r[1]);
			rec_free(r[0]);
			rec_free(r[1]);
		}
		CHECK(slept >= 2); /* at least before the first byte and after the header */
	}
}

/* A reset requested by the first stanza after a wake-up; a new stream that
 * hibernates before its header; a reset while hibernating. */
static void test_hibernate_reset(void)
{
	struct rec *r = rec_new(BIG, DEPTH), *fresh;
	const char *starttls = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
	char in[1024];
	size_t consumed = 0;

	snprintf(in, sizeof in, "%s%s<message/>", starttls, HEADER);
	CHECK(feed_str(r, HEADER "<presence/>") == XS_OK);
	CHECK(hibernate(r));
	r->reset_on = 1;
	CHECK(xmlstream_feed(r->xs, in, strlen(in), &consumed) == XS_OK);
	CHECK(consumed == strlen(starttls));
	CHECK(xmlstream_reset_requested(r->xs) && r->nstanzas == 2);
	CHECK(xmlstream_reset(r->xs) == 0);
	r->reset_on = -1;
	CHECK(hibernate(r)); /* new, nothing fed */
	CHECK(xmlstream_feed(r->xs, in + consumed, strlen(in) - consumed, &consumed) == XS_OK);
	CHECK(consumed == strlen(HEADER "<message/>"));
	CHECK(r->opens == 2 && r->nstanzas == 3);
	if (r->nstanzas == 3)
		CHECK_STR(r->st[2].raw, "<message/>");

	/* reset while hibernating: the next bytes are a new stream, with its
	 * own offsets and positions */
	CHECK(hibernate(r));
	CHECK(xmlstream_reset(r->xs) == 0);
	CHECK(xmlstream_memory(r->xs) < 1024);
	CHECK(feed_str(r, HEADER "<iq/><a></b>") == XS_ERR_NOT_WELL_FORMED);
	CHECK(r->opens == 3 && r->nstanzas == 4);
	fresh = rec_new(BIG, DEPTH);
	CHECK(feed_str(fresh, HEADER "<iq/><a></b>") == XS_ERR_NOT_WELL_FORMED);
	CHECK_STR(xmlstream_error_text(r->xs), xmlstream_error_text(fresh->xs));
	rec_free(fresh);
	rec_free(r);
}

static void test_hibernate_close(void)
{
	struct rec *r = rec_new(BIG, DEPTH);
	size_t consumed = 99;

	CHECK(feed_str(r, HEADER "<presence/>") == XS_OK);
	CHECK(hibernate(r));
	CHECK(xmlstream_feed(r->xs, "</stream:stream>  <x/>", 22, &consumed) == XS_OK);
	CHECK(consumed == strlen("</stream:stream>"));
	CHECK(r->closes == 1 && r->nstanzas == 1);
	CHECK(xmlstream_feed(r->xs, "junk", 4, &consumed) == XS_OK);
	CHECK(consumed == 0 && r->closes == 1);
	rec_free(r);

	r = rec_new(BIG, DEPTH);
	CHECK(feed_str(r, HEADER) == XS_OK);
	CHECK(hibernate(r));
	CHECK(feed_str(r, "<message></stream:stream>") == XS_ERR_NOT_WELL_FORMED);
	CHECK(r->closes == 0);
	rec_free(r);
}

/* No memory for a new parser at the wake-up: the stream fails as out of
 * memory, at the place where it stood, and can still be reset or freed. */
static void test_hibernate_wake_fails(void)
{
	struct rec *r = rec_new(BIG, DEPTH), *ref = rec_new(BIG, DEPTH);

	CHECK(feed_str(r, HEADER "\n <presence/>") == XS_OK);
	CHECK(hibernate(r));
	fail_parser_create = true;
	CHECK(feed_str(r, "<a/>") == XS_ERR_INTERNAL);
	fail_parser_create = false;
	CHECK_STR(xmlstream_error_text(r->xs), "line 2, column 13: out of memory");
	CHECK(feed_str(r, "<a/>") == XS_ERR_INTERNAL); /* sticky */
	CHECK(r->nstanzas == 1);
	CHECK(xmlstream_reset(r->xs) == 0);
	CHECK(feed_str(r, HEADER "<a/><b></c>") == XS_ERR_NOT_WELL_FORMED);
	CHECK(feed_str(ref, HEADER "<a/><b></c>") == XS_ERR_NOT_WELL_FORMED);
	CHECK_STR(xmlstream_error_text(r->xs), xmlstream_error_text(ref->xs));
	CHECK(r->opens == 2 && r->nstanzas == 2);
	rec_free(ref);
	rec_free(r);
}

static int count_stanza(void *ctx, const struct xml_stanza *st)
{
	(void)st;
	++*(int *)ctx;
	return 0;
}

static double seconds_since(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
}

/* What an idle stream holds awake (trimmed) and hibernating, and what a
 * wake-up costs: a stanza fed to a hibernating stream against one fed to an
 * awake stream. */
static void test_hibernate_memory_and_cost(void)
{
	static const struct xmlstream_callbacks cb = { .on_stanza = count_stanza };
	const char *header_end = strstr(client_stream, "'en'>") + strlen("'en'>");
	const char *stanza = "<presence/>";
	const int rounds = 20000;
	int count = 0, other_count = 0;
	struct xmlstream *xs = xmlstream_new(&cb, &count, 64 * 1024, DEPTH);
	struct xmlstream *other = xmlstream_new(&cb, &other_count, 64 * 1024, DEPTH);
	size_t awake, asleep, other_mem;
	struct timespec t0;
	double t_awake, t_wake;

	/* the client stream but for its close tag */
	CHECK(xmlstream_feed(xs, client_stream, strlen(client_stream) - 16, NULL) == XS_OK);
	CHECK(xmlstream_feed(other, HEADER "<a/>", strlen(HEADER "<a/>"), NULL) == XS_OK);
	other_mem = xmlstream_memory(other);
	xmlstream_trim(xs);
	awake = xmlstream_memory(xs);
	xmlstream_hibernate(xs);
	asleep = xmlstream_memory(xs);
	printf("# idle stream: %zu bytes trimmed, %zu hibernating (header %zu bytes)\n", awake,
	       asleep, (size_t)(header_end - strstr(client_stream, "<stream:")));
	CHECK(asleep < 1024 && awake - asleep > 8 * 1024);
	CHECK(xmlstream_memory(other) == other_mem); /* another stream is untouched */
	CHECK(count == CLIENT_STANZAS);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < rounds; i++)
		CHECK(xmlstream_feed(other, stanza, strlen(stanza), NULL) == XS_OK);
	t_awake = seconds_since(&t0) / rounds;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int i = 0; i < rounds; i++) {
		xmlstream_hibernate(xs);
		CHECK(xmlstream_feed(xs, stanza, strlen(stanza), NULL) == XS_OK);
	}
	t_wake = seconds_since(&t0) / rounds;
	printf("# a stanza: %.2f us awake, %.2f us to a hibernating stream (wake-up %.2f us)\n",
	       t_awake * 1e6, t_wake * 1e6, (t_wake - t_awake) * 1e6);
	CHECK(count == CLIENT_STANZAS + rounds && other_count == 1 + rounds);
	xmlstream_hibernate(xs);
	CHECK(xmlstream_memory(xs) == asleep); /* wake-ups leak nothing */
	xmlstream_free(xs);
	xmlstream_free(other);
}

static void test_escape(void)
{
	char out[64];
	const char *in = "a<b>&'\"c";
	const char *want = "a&lt;b&gt;&amp;&apos;&quot;c";
	size_t wl = strlen(want);

	CHECK(xml_escape(out, sizeof out, in, strlen(in)) == (int)wl);
	CHECK_STR(out, want);
	CHECK(xml_escape(out, wl + 1, in, strlen(in)) == (int)wl);
	CHECK(xml_escape(out, wl, in, strlen(in)) == -ENOSPC);
	CHECK(xml_escape(out, 5, "&", 1) == -ENOSPC);
	CHECK(xml_escape(out, 6, "&", 1) == 5);
	CHECK(xml_escape(out, 1, "", 0) == 0 && out[0] == '\0');
	CHECK(xml_escape(out, 0, "", 0) == -ENOSPC);
	CHECK(xml_escape(out, sizeof out, "a\0b", 3) == 3 && memcmp(out, "a\0b", 4) == 0);
}

int main(void)
{
	RUN(test_stream_basic);
	RUN(test_stanzas_in_one_feed);
	RUN(test_tree);
	RUN(test_tree_text_pieces);
	RUN(test_tree_helpers);
	RUN(test_restricted);
	RUN(test_not_well_formed);
	RUN(test_error_conditions);
	RUN(test_size_limit);
	RUN(test_header_limit);
	RUN(test_limit_counts_held_back_bytes_fairly);
	RUN(test_depth_limit);
	RUN(test_every_split);
	RUN(test_one_byte_chunks);
	RUN(test_huge_token_linear);
	RUN(test_reset);
	RUN(test_keepalives);
	RUN(test_stream_close);
	RUN(test_callback_stops);
	RUN(test_streams_independent);
	RUN(test_memory_trim);
	RUN(test_trim_keeps_positions);
	RUN(test_memory_limit_names);
	RUN(test_memory_limit_tree);
	RUN(test_hibernate_every_point);
	RUN(test_hibernate_only_when_safe);
	RUN(test_hibernate_limits);
	RUN(test_hibernate_same_errors);
	RUN(test_hibernate_reset);
	RUN(test_hibernate_close);
	RUN(test_hibernate_wake_fails);
	RUN(test_hibernate_memory_and_cost);
	RUN(test_escape);
	return check_exit();
}
