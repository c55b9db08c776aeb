/*
 * xmlstream: expat under RFC 6120's restrictions, reporting each stanza as
 * the bytes it arrived as.
 *
 * Byte tracking. Every event expat reports (start tag, end tag, character
 * data, and through the default handler everything else) has an absolute
 * offset in the stream (XML_GetCurrentByteIndex) and a length
 * (XML_GetCurrentByteCount). Two offsets drive what we keep:
 *   fed       bytes handed to expat so far;
 *   reported  end of the last event expat reported.
 * Bytes in [reported, fed) are inside expat but not reported yet: a partial
 * token, or a complete one held back by reparse deferral. A stanza's RAW is
 * [start of its start tag, end of its end tag). When a stanza lies wholly in
 * the piece being fed, RAW points into the caller's bytes and nothing is
 * copied; otherwise `buf` keeps, across feeds, the bytes from the start of
 * the open stanza (or, between stanzas, from `reported`) up to `fed`, and a
 * stanza that started in `buf` is completed there from the current piece.
 * So after a feed the only bytes we hold are those of an unfinished stanza.
 *
 * Limits. A stanza may not need more than max_stanza_size bytes: what we
 * keep for it (reported or not) is checked after every slice and in the
 * handlers, so a stanza is refused as soon as it grows too large, not when
 * it ends. All memory of the stream (expat's through a counting memory
 * suite, ours through the same counters) is limited to XS_MEM_LIMIT: expat
 * interns every distinct element and attribute name for the life of the
 * parser and its attribute arrays grow with the widest tag, so a hostile
 * stanza within the size limit can still cost many times its size.
 *
 * Reparse deferral. expat (2.6, or Debian's 2.5.0-1+deb12u5) does not
 * re-scan a partial token until the unparsed bytes have doubled, which keeps
 * a huge token fed in small pieces linear (CVE-2023-52425) but can also hold
 * back a complete stanza until the peer sends more. After each feed, if at
 * most XS_UNDEFER_MAX bytes are unreported, we parse once more with deferral
 * off; larger pending tokens keep expat's rule, with one exception: when
 * the pending token is a start or end tag and a quote-aware scan of the new
 * bytes (each byte scanned once) finds its closing '>', we parse it then,
 * so a stanza with a huge start tag is not held back either. When what we
 * keep exceeds max_stanza_size we also parse with deferral off before
 * refusing, so bytes expat merely held back never count against a stanza.
 * Every such extra parse either completes a token or ends the stream, so
 * the total work stays linear.
 *
 * Idle memory. expat copies every byte into its own buffer, which grows to
 * the largest piece ever parsed and never shrinks, and its name tables only
 * grow: we feed it in slices of XS_PARSE_SLICE bytes, and xmlstream_trim()
 * replaces a parser that has grown beyond XS_PARSER_IDLE_MAX with a fresh
 * one that is brought to the same point by parsing the stream header again
 * (its raw start tag is kept for this), with callbacks off. Byte offsets and
 * error positions are translated so the replacement is invisible.
 * xmlstream_hibernate() goes further for a stream that has been idle a
 * while: it frees the parser and everything else but the saved header, and
 * the next feed builds the replacement then (the same replay). Both happen
 * only between stanzas with every fed byte reported (fed == reported): then
 * expat holds no partial token, and the header is all the state it needs,
 * since prefixes a stanza declared went out of scope with the stanza.
 *
 * Choices the header leaves open:
 *   - max_depth counts the stanza element as depth 1.
 *   - Character data between stanzas must be whitespace (RFC 6120 4.6.1
 *     keepalives); anything else is not-well-formed.
 *   - An encoding other than UTF-8 (declared, or a UTF-16/32 byte order
 *     detected in the first two bytes) is not-well-formed.
 *   - After </stream:stream> the stream is closed: later bytes are ignored
 *     (xmlstream_feed() returns XS_OK and consumes nothing).
 *   - Callbacks must not free, feed or reset their own stream: feeding
 *     returns XS_ERR_INTERNAL, xmlstream_reset() returns -EBUSY. Feeding
 *     after a reset request without xmlstream_reset() is XS_ERR_INTERNAL.
 *   - The whole stream (expat, buffers, tree) may use XS_MEM_LIMIT bytes;
 *     beyond that it is a policy-violation.
 *   - xml_escape() NUL-terminates (CAP must leave room for it); xml_child()
 *     with a NULL name matches any element.
 */
#include "workers/xmlstream.h"
#include "common/slab.h"

#include <assert.h>
#include <errno.h>
#include <expat.h>
#include <limits.h>
#include <malloc.h>
#include <stdalign.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* expat names are "URI<sep>local". U+0001 cannot appear in an XML 1.0
 * document, not even as a character reference, so it cannot be part of a
 * namespace URI or a name. */
#define NS_SEP '\x01'
#define NS_SEP_STR "\x01"

#define XS_UNDEFER_MAX 4096
#define XS_PARSE_SLICE 4096
#define XS_PARSER_IDLE_MAX (12 * 1024)
#define XS_ARENA_BLOCK 1024
#define XS_MEM_LIMIT(max_stanza) (8 * (size_t)(max_stanza) + 64 * 1024)

#define NO_OFFSET UINT64_MAX

struct arena_block {
	struct arena_block *older;
	size_t size;
	size_t used;
	max_align_t data[];
};

/* A tree node and what only the builder needs. */
struct tree_node {
	struct xml_node node; /* first: a struct xml_node * is a struct tree_node * */
	size_t text_cap;
	char text_inline[16]; /* most elements have no or little text */
};

struct xmlstream {
	XML_Parser parser; /* NULL while hibernating */
	struct xmlstream_callbacks cb;
	void *ctx;
	uint32_t max_stanza_size;
	uint32_t max_depth;

	/* Memory: all of it, the part expat holds, and the limit. */
	size_t mem_used;
	size_t mem_parser;
	size_t mem_limit;
	bool mem_limit_hit;

	enum xs_error err;
	char *err_text;
	bool in_feed;
	bool stopped; /* XML_StopParser() was called: error, close or reset */
	bool closed;
	bool reset_requested;
	uint32_t depth; /* open elements, the stream header included */

	/* Offsets in the stream (since the last reset), see the top. */
	uint64_t fed;
	uint64_t reported;
	uint64_t scan_token; /* start of the pending tag being scanned for '>' */
	uint64_t scan_pos;   /* scanned up to here */
	char scan_quote;     /* inside an attribute value quoted with this */
	uint64_t stanza_start;
	uint64_t stanza_tag_end;
	uint64_t stop_at;   /* end of the stanza or close tag we stopped after */
	int64_t index_base; /* stream offset = expat byte index + index_base */

	/* Positions for messages: while the parser is on line replay_line,
	 * stream column = col_base + (parser column - replay_col); later lines
	 * are offset by line_base - replay_line. Only a replacement parser
	 * (trim) makes these differ from the identity. */
	unsigned long line_base, col_base, replay_line, replay_col;

	/* Bytes kept across feeds: [buf_start, buf_start + buf_len). */
	char *buf;
	size_t buf_len, buf_cap;
	uint64_t buf_start;
	/* The piece being fed starts at stream offset feed_start. */
	const char *feed;
	uint64_t feed_start;

	/* The stream header's raw start tag, to prime a replacement parser. */
	char *header;
	size_t header_len;
	const char *default_ns; /* while the header is parsed */

	/* Per stanza (and header): head, tree, and the arena holding them. */
	struct arena_block *arena;
	struct xml_stanza_head head;
	struct xml_node *tree;
	struct xml_node *cur; /* innermost open element of the tree */
};

/* ---- memory accounting ---------------------------------------------- */

static void *mem_alloc_unlimited(struct xmlstream *xs, size_t n)
{
	void *p = malloc(n);

	if (p)
		xs->mem_used += malloc_usable_size(p);
	return p;
}

static void *mem_alloc(struct xmlstream *xs, size_t n)
{
	if (n > xs->mem_limit - xs->mem_used) {
		xs->mem_limit_hit = true;
		return NULL;
	}
	return mem_alloc_unlimited(xs, n);
}

static void *mem_realloc(struct xmlstream *xs, void *old, size_t n)
{
	size_t old_size = old ? malloc_usable_size(old) : 0;
	void *p;

	if (n > old_size && n - old_size > xs->mem_limit - xs->mem_used) {
		xs->mem_limit_hit = true;
		return NULL;
	}
	p = realloc(old, n);
	if (p)
		xs->mem_used = xs->mem_used - old_size + malloc_usable_size(p);
	return p;
}

static void mem_free(struct xmlstream *xs, void *p)
{
	if (p) {
		xs->mem_used -= malloc_usable_size(p);
		free(p);
	}
}

/* The saved header outlives the parser (it is all a hibernating stream
 * keeps), so it comes from the long-lived pools, not the heap the parser
 * churns (common/slab.h). */
static char *header_alloc(struct xmlstream *xs, size_t n)
{
	if (slab_size(n) > xs->mem_limit - xs->mem_used) {
		xs->mem_limit_hit = true;
		return NULL;
	}
	char *p = slab_alloc(n);
	if (p) {
		xs->mem_used += slab_size(n);
		xs->header_len = n;
	}
	return p;
}

static void header_free(struct xmlstream *xs)
{
	if (xs->header) {
		xs->mem_used -= slab_size(xs->header_len);
		slab_free(xs->header, xs->header_len);
	}
	xs->header = NULL;
	xs->header_len = 0;
}

/* expat's memory suite has no context argument: the stream whose parser
 * is being called is set around every expat call that may allocate
 * (create, parse, reset, free). Saved and restored, so a callback may feed
 * another stream. */
static _Thread_local struct xmlstream *expat_owner;

static struct xmlstream *owner_enter(struct xmlstream *xs)
{
	struct xmlstream *prev = expat_owner;

	expat_owner = xs;
	return prev;
}

static void owner_leave(struct xmlstream *prev)
{
	expat_owner = prev;
}

static void *expat_malloc(size_t n)
{
	struct xmlstream *xs = expat_owner;
	void *p;

	assert(xs);
	p = mem_alloc(xs, n);
	if (p)
		xs->mem_parser += malloc_usable_size(p);
	return p;
}

static void *expat_realloc(void *old, size_t n)
{
	struct xmlstream *xs = expat_owner;
	size_t old_size = old ? malloc_usable_size(old) : 0;
	void *p;

	assert(xs);
	p = mem_realloc(xs, old, n);
	if (p)
		xs->mem_parser = xs->mem_parser - old_size + malloc_usable_size(p);
	return p;
}

static void expat_free(void *p)
{
	struct xmlstream *xs = expat_owner;

	assert(xs);
	if (p)
		xs->mem_parser -= malloc_usable_size(p);
	mem_free(xs, p);
}

static const XML_Memory_Handling_Suite expat_memsuite = {
	.malloc_fcn = expat_malloc,
	.realloc_fcn = expat_realloc,
	.free_fcn = expat_free,
};

/* ---- arena ---------------------------------------------------------- */

static void *arena_alloc(struct xmlstream *xs, size_t n, size_t align)
{
	struct arena_block *b = xs->arena;
	size_t at;

	if (b) {
		at = (b->used + align - 1) & ~(align - 1);
		if (at <= b->size && n <= b->size - at) {
			b->used = at + n;
			return (char *)b->data + at;
		}
	}
	/* a big stanza gets fewer, larger blocks */
	size_t size = b ? 2 * b->size : XS_ARENA_BLOCK;
	if (size < n)
		size = n;
	struct arena_block *nb = mem_alloc(xs, sizeof *nb + size);
	if (!nb)
		return NULL;
	nb->older = b;
	nb->size = size;
	nb->used = n;
	xs->arena = nb;
	return nb->data;
}

/* Drop everything allocated; keep one standard block for the next stanza
 * unless RELEASE_ALL. */
static void arena_reset(struct xmlstream *xs, bool release_all)
{
	struct arena_block *b = xs->arena, *older;

	xs->arena = NULL;
	for (; b; b = older) {
		older = b->older;
		if (!older && !release_all && b->size == XS_ARENA_BLOCK) {
			b->used = 0;
			xs->arena = b;
		} else {
			mem_free(xs, b);
		}
	}
}

static char *arena_strdup(struct xmlstream *xs, const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = arena_alloc(xs, n, 1);

	if (p)
		memcpy(p, s, n);
	return p;
}

/* ---- errors --------------------------------------------------------- */

/* Where the parser is now, in the stream's terms (1-based line, 0-based
 * column). */
static void stream_position(const struct xmlstream *xs, unsigned long *line, unsigned long *col)
{
	if (!xs->parser) { /* hibernating: the position was saved */
		*line = xs->line_base;
		*col = xs->col_base;
		return;
	}
	unsigned long l = XML_GetCurrentLineNumber(xs->parser);
	unsigned long c = XML_GetCurrentColumnNumber(xs->parser);

	if (l == xs->replay_line) {
		*line = xs->line_base;
		*col = xs->col_base + (c - xs->replay_col);
	} else {
		*line = xs->line_base + (l - xs->replay_line);
		*col = c;
	}
}

static void stop(struct xmlstream *xs)
{
	if (!xs->stopped) {
		xs->stopped = true;
		if (xs->parser)
			XML_StopParser(xs->parser, XML_FALSE);
	}
}

/* Record the first error (later ones are consequences) and stop parsing. */
static void fail(struct xmlstream *xs, enum xs_error err, const char *reason)
{
	unsigned long line, col;
	char text[192];
	int n;

	if (xs->err != XS_OK)
		return;
	xs->err = err;
	stop(xs);
	stream_position(xs, &line, &col);
	n = snprintf(text, sizeof text, "line %lu, column %lu: %s", line, col + 1, reason);
	if (n < 0)
		return;
	/* The message must survive a stream that ran out of its memory. */
	xs->err_text = mem_alloc_unlimited(xs, (size_t)n + 1);
	if (xs->err_text)
		memcpy(xs->err_text, text, (size_t)n + 1);
}

static void fail_nomem(struct xmlstream *xs)
{
	if (xs->mem_limit_hit)
		fail(xs, XS_ERR_POLICY_VIOLATION, "stream memory limit exceeded");
	else
		fail(xs, XS_ERR_INTERNAL, "out of memory");
}

/* ---- bytes ---------------------------------------------------------- */

static uint64_t event_start(const struct xmlstream *xs)
{
	return (uint64_t)((int64_t)XML_GetCurrentByteIndex(xs->parser) + xs->index_base);
}

static uint64_t event_end(const struct xmlstream *xs)
{
	return event_start(xs) + (uint64_t)XML_GetCurrentByteCount(xs->parser);
}

static int buf_reserve(struct xmlstream *xs, size_t need)
{
	size_t cap;
	char *p;

	if (need <= xs->buf_cap)
		return 0;
	cap = xs->buf_cap ? xs->buf_cap : 256;
	while (cap < need)
		cap *= 2;
	p = mem_realloc(xs, xs->buf, cap);
	if (!p)
		return -ENOMEM;
	xs->buf = p;
	xs->buf_cap = cap;
	return 0;
}

static void buf_release(struct xmlstream *xs)
{
	mem_free(xs, xs->buf);
	xs->buf = NULL;
	xs->buf_len = 0;
	xs->buf_cap = 0;
	xs->buf_start = xs->fed;
}

/* Stream bytes [FROM, TO) as one run, during a feed. They lie either in the
 * current piece (returned in place) or start in the kept bytes, which are
 * then extended from the piece. NULL when out of memory. */
static const char *stream_bytes(struct xmlstream *xs, uint64_t from, uint64_t to)
{
	uint64_t have_end = xs->buf_start + xs->buf_len;
	size_t add;

	if (from >= xs->feed_start)
		return xs->feed + (from - xs->feed_start);
	assert(from >= xs->buf_start && have_end >= xs->feed_start);
	if (to > have_end) {
		add = (size_t)(to - have_end);
		if (buf_reserve(xs, xs->buf_len + add) < 0)
			return NULL;
		memcpy(xs->buf + xs->buf_len, xs->feed + (have_end - xs->feed_start), add);
		xs->buf_len += add;
	}
	return xs->buf + (from - xs->buf_start);
}

/* First stream offset that must survive this feed. */
static uint64_t keep_from(const struct xmlstream *xs)
{
	if (xs->stopped)
		return xs->fed;
	return xs->depth >= 2 ? xs->stanza_start : xs->reported;
}

/* At the end of a feed: keep [keep_from, fed), drop the rest. */
static int retain(struct xmlstream *xs)
{
	uint64_t from = keep_from(xs);
	size_t keep = (size_t)(xs->fed - from);
	uint64_t have_end;

	if (keep == 0) {
		buf_release(xs);
		return 0;
	}
	if (from >= xs->feed_start) {
		/* none of the old bytes is needed: do not let realloc copy them */
		if (keep > xs->buf_cap)
			buf_release(xs);
		xs->buf_len = 0;
	} else {
		size_t drop = (size_t)(from - xs->buf_start);

		memmove(xs->buf, xs->buf + drop, xs->buf_len - drop);
		xs->buf_len -= drop;
	}
	xs->buf_start = from;
	have_end = from + xs->buf_len; /* the rest comes from the piece */
	if (buf_reserve(xs, keep) < 0)
		return -ENOMEM;
	memcpy(xs->buf + xs->buf_len, xs->feed + (have_end - xs->feed_start),
	       (size_t)(xs->fed - have_end));
	xs->buf_len = keep;
	return 0;
}

/* ---- names and attributes ------------------------------------------- */

/* Split expat's "URI<sep>local" into the arena. PARENT_NS, when equal to
 * the URI, is shared instead of copied (children mostly share it). */
static int split_name(struct xmlstream *xs, const XML_Char *qname, const char *parent_ns,
		      const char **ns, const char **local)
{
	const char *sep = strrchr(qname, NS_SEP);
	char *copy;

	if (!sep) {
		*ns = "";
		*local = arena_strdup(xs, qname);
		return *local ? 0 : -ENOMEM;
	}
	size_t ns_len = (size_t)(sep - qname);
	if (parent_ns && strlen(parent_ns) == ns_len && memcmp(parent_ns, qname, ns_len) == 0) {
		*ns = parent_ns;
		*local = arena_strdup(xs, sep + 1);
		return *local ? 0 : -ENOMEM;
	}
	copy = arena_strdup(xs, qname);
	if (!copy)
		return -ENOMEM;
	copy[ns_len] = '\0';
	*ns = copy;
	*local = copy + ns_len + 1;
	return 0;
}

static int copy_attrs(struct xmlstream *xs, const XML_Char **atts, struct xml_attr **out,
		      int *count)
{
	int n = 0;

	while (atts[2 * n])
		n++;
	*out = NULL;
	*count = n;
	if (n == 0)
		return 0;
	struct xml_attr *a = arena_alloc(xs, (size_t)n * sizeof *a, alignof(struct xml_attr));
	if (!a)
		return -ENOMEM;
	for (int i = 0; i < n; i++) {
		if (split_name(xs, atts[2 * i], NULL, &a[i].ns, &a[i].name) < 0)
			return -ENOMEM;
		a[i].value = arena_strdup(xs, atts[2 * i + 1]);
		if (!a[i].value)
			return -ENOMEM;
	}
	*out = a;
	return 0;
}

/* ---- tree ----------------------------------------------------------- */

static struct xml_node *node_new(struct xmlstream *xs, struct xml_node *parent, const char *ns,
				 const char *name, struct xml_attr *attrs, int attr_count)
{
	struct tree_node *t = arena_alloc(xs, sizeof *t, alignof(struct tree_node));

	if (!t)
		return NULL;
	memset(t, 0, sizeof *t);
	t->node.ns = ns;
	t->node.name = name;
	t->node.attrs = attrs;
	t->node.attr_count = attr_count;
	t->node.text = t->text_inline;
	t->text_cap = sizeof t->text_inline;
	t->node.parent = parent;
	if (parent) {
		if (parent->last_child)
			parent->last_child->next = &t->node;
		else
			parent->first_child = &t->node;
		parent->last_child = &t->node;
	}
	return &t->node;
}

static int node_add_text(struct xmlstream *xs, struct xml_node *n, const char *s, size_t len)
{
	struct tree_node *t = (struct tree_node *)n;
	size_t need = n->text_len + len + 1;

	if (need > t->text_cap) {
		/* double, so text arriving in many pieces costs linear space */
		size_t cap = 2 * t->text_cap > need ? 2 * t->text_cap : need;
		char *p = arena_alloc(xs, cap, 1);

		if (!p)
			return -ENOMEM;
		memcpy(p, n->text, n->text_len);
		n->text = p;
		t->text_cap = cap;
	}
	memcpy(n->text + n->text_len, s, len);
	n->text_len += len;
	n->text[n->text_len] = '\0';
	return 0;
}

/* ---- expat handlers ------------------------------------------------- */

static void stream_open(struct xmlstream *xs, const XML_Char *qname, const XML_Char **atts,
			uint64_t start, uint64_t end)
{
	const char *ns, *name, *raw;
	struct xml_attr *attrs;
	int count, rc = 0;

	if (end - start > xs->max_stanza_size) {
		fail(xs, XS_ERR_POLICY_VIOLATION, "stream header too large");
		return;
	}
	raw = stream_bytes(xs, start, end);
	xs->header = raw ? header_alloc(xs, (size_t)(end - start)) : NULL;
	if (!xs->header || split_name(xs, qname, NULL, &ns, &name) < 0 ||
	    copy_attrs(xs, atts, &attrs, &count) < 0) {
		fail_nomem(xs);
		return;
	}
	memcpy(xs->header, raw, (size_t)(end - start));
	xs->depth = 1;
	if (xs->cb.on_stream_open)
		rc = xs->cb.on_stream_open(xs->ctx, ns, name, xs->default_ns ? xs->default_ns : "",
					   attrs, count);
	xs->default_ns = NULL;
	arena_reset(xs, false);
	if (rc)
		fail(xs, XS_ERR_CALLBACK, "stopped by the stream-open callback");
}

static void stanza_open(struct xmlstream *xs, const XML_Char *qname, const XML_Char **atts)
{
	struct xml_stanza_head *h = &xs->head;
	struct xml_attr *attrs;
	int count;

	memset(h, 0, sizeof *h);
	if (split_name(xs, qname, NULL, &h->ns, &h->name) < 0 ||
	    copy_attrs(xs, atts, &attrs, &count) < 0) {
		fail_nomem(xs);
		return;
	}
	h->attrs = attrs;
	h->attr_count = count;
	for (int i = 0; i < count; i++) {
		if (attrs[i].ns[0] != '\0')
			continue;
		if (strcmp(attrs[i].name, "to") == 0)
			h->to = attrs[i].value;
		else if (strcmp(attrs[i].name, "from") == 0)
			h->from = attrs[i].value;
		else if (strcmp(attrs[i].name, "type") == 0)
			h->type = attrs[i].value;
		else if (strcmp(attrs[i].name, "id") == 0)
			h->id = attrs[i].value;
	}
	if (xs->cb.on_stanza_start && xs->cb.on_stanza_start(xs->ctx, h)) {
		xs->tree = node_new(xs, NULL, h->ns, h->name, attrs, count);
		if (!xs->tree)
			fail_nomem(xs);
		xs->cur = xs->tree;
	}
}

static void tree_open(struct xmlstream *xs, const XML_Char *qname, const XML_Char **atts)
{
	const char *ns, *name;
	struct xml_attr *attrs;
	struct xml_node *n;
	int count;

	if (split_name(xs, qname, xs->cur->ns, &ns, &name) < 0 ||
	    copy_attrs(xs, atts, &attrs, &count) < 0 ||
	    !(n = node_new(xs, xs->cur, ns, name, attrs, count))) {
		fail_nomem(xs);
		return;
	}
	xs->cur = n;
}

static void XMLCALL on_start(void *ud, const XML_Char *qname, const XML_Char **atts)
{
	struct xmlstream *xs = ud;
	uint64_t start, end;

	if (xs->stopped)
		return;
	start = event_start(xs);
	end = event_end(xs);
	xs->reported = end;
	if (xs->depth == 0) {
		stream_open(xs, qname, atts, start, end);
		return;
	}
	if (xs->depth == 1) {
		xs->stanza_start = start;
		xs->stanza_tag_end = end;
	} else if (xs->depth > xs->max_depth) {
		/* the new element is at stanza depth xs->depth */
		fail(xs, XS_ERR_POLICY_VIOLATION, "stanza nested too deeply");
		return;
	}
	if (end - xs->stanza_start > xs->max_stanza_size) {
		fail(xs, XS_ERR_POLICY_VIOLATION, "stanza too large");
		return;
	}
	xs->depth++;
	if (xs->depth == 2)
		stanza_open(xs, qname, atts);
	else if (xs->cur)
		tree_open(xs, qname, atts);
}

static void stanza_close(struct xmlstream *xs, uint64_t end)
{
	struct xml_stanza st;
	int rc = 0;

	if (end - xs->stanza_start > xs->max_stanza_size) {
		fail(xs, XS_ERR_POLICY_VIOLATION, "stanza too large");
		return;
	}
	st.raw = stream_bytes(xs, xs->stanza_start, end);
	if (!st.raw) {
		fail_nomem(xs);
		return;
	}
	st.head = xs->head;
	st.raw_len = (size_t)(end - xs->stanza_start);
	st.start_tag_len = (size_t)(xs->stanza_tag_end - xs->stanza_start);
	st.self_closing = end == xs->stanza_tag_end; /* <x/>: the tag is all */
	st.tree = xs->tree;
	if (xs->cb.on_stanza)
		rc = xs->cb.on_stanza(xs->ctx, &st);
	xs->tree = xs->cur = NULL;
	memset(&xs->head, 0, sizeof xs->head);
	arena_reset(xs, false);
	if (rc) {
		fail(xs, XS_ERR_CALLBACK, "stopped by the stanza callback");
	} else if (xs->reset_requested) {
		xs->stop_at = end;
		stop(xs);
	}
}

static void XMLCALL on_end(void *ud, const XML_Char *qname)
{
	struct xmlstream *xs = ud;
	uint64_t end;

	(void)qname;
	if (xs->stopped)
		return;
	end = event_end(xs); /* for <x/> expat reports the end of the tag */
	xs->reported = end;
	xs->depth--;
	if (xs->depth == 0) {
		xs->closed = true;
		xs->stop_at = end;
		stop(xs);
		if (xs->cb.on_stream_close)
			xs->cb.on_stream_close(xs->ctx);
	} else if (xs->depth == 1) {
		stanza_close(xs, end);
	} else if (xs->cur) {
		xs->cur = xs->cur->parent;
	}
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct xmlstream *xs = ud;
	uint64_t end;

	if (xs->stopped)
		return;
	end = event_end(xs);
	xs->reported = end;
	if (xs->depth == 1) {
		for (int i = 0; i < len; i++) {
			if (s[i] != ' ' && s[i] != '\t' && s[i] != '\n' && s[i] != '\r') {
				fail(xs, XS_ERR_NOT_WELL_FORMED, "text between stanzas");
				return;
			}
		}
		return;
	}
	if (end - xs->stanza_start > xs->max_stanza_size) {
		fail(xs, XS_ERR_POLICY_VIOLATION, "stanza too large");
		return;
	}
	if (xs->cur && node_add_text(xs, xs->cur, s, (size_t)len) < 0)
		fail_nomem(xs);
}

/* Everything expat reports nowhere else (prolog whitespace, CDATA
 * markers...): only to know how far it has read. This is the "Expand"
 * variant, which leaves entity expansion on. */
static void XMLCALL on_other(void *ud, const XML_Char *s, int len)
{
	struct xmlstream *xs = ud;

	(void)s;
	(void)len;
	if (!xs->stopped)
		xs->reported = event_end(xs);
}

static void XMLCALL on_ns_decl(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xmlstream *xs = ud;

	if (xs->stopped || xs->depth != 0 || prefix)
		return;
	xs->default_ns = arena_strdup(xs, uri ? uri : "");
	if (!xs->default_ns)
		fail_nomem(xs);
}

static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
				int standalone)
{
	struct xmlstream *xs = ud;

	(void)version;
	(void)standalone;
	if (xs->stopped)
		return;
	xs->reported = event_end(xs);
	if (encoding && strcasecmp(encoding, "UTF-8") != 0)
		fail(xs, XS_ERR_NOT_WELL_FORMED, "encoding other than UTF-8");
}

/* RFC 6120 11.1: no DTD, no entities of our own, no comments, no PIs. The
 * DOCTYPE is refused as soon as it starts, before any internal subset. */
static void restricted(struct xmlstream *xs, const char *reason)
{
	if (!xs->stopped)
		fail(xs, XS_ERR_RESTRICTED_XML, reason);
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
			       const XML_Char *pubid, int has_internal_subset)
{
	(void)name;
	(void)sysid;
	(void)pubid;
	(void)has_internal_subset;
	restricted(ud, "DOCTYPE not allowed");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_param,
				   const XML_Char *value, int value_len, const XML_Char *base,
				   const XML_Char *sysid, const XML_Char *pubid,
				   const XML_Char *notation)
{
	(void)name;
	(void)is_param;
	(void)value;
	(void)value_len;
	(void)base;
	(void)sysid;
	(void)pubid;
	(void)notation;
	restricted(ud, "entity declaration not allowed");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target;
	(void)data;
	restricted(ud, "processing instruction not allowed");
}

static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
	(void)data;
	restricted(ud, "comment not allowed");
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_param)
{
	(void)name;
	(void)is_param;
	restricted(ud, "entity reference not allowed");
}

static void parser_setup(struct xmlstream *xs, XML_Parser p)
{
	XML_SetUserData(p, xs);
	XML_SetElementHandler(p, on_start, on_end);
	XML_SetCharacterDataHandler(p, on_text);
	XML_SetDefaultHandlerExpand(p, on_other);
	XML_SetStartNamespaceDeclHandler(p, on_ns_decl);
	XML_SetXmlDeclHandler(p, on_xml_decl);
	XML_SetStartDoctypeDeclHandler(p, on_doctype);
	XML_SetEntityDeclHandler(p, on_entity_decl);
	XML_SetProcessingInstructionHandler(p, on_pi);
	XML_SetCommentHandler(p, on_comment);
	XML_SetSkippedEntityHandler(p, on_skipped_entity);
}

/* ---- parsing -------------------------------------------------------- */

static enum xs_error expat_error(const struct xmlstream *xs, enum XML_Error code)
{
	switch (code) {
	case XML_ERROR_NO_MEMORY:
		return xs->mem_limit_hit ? XS_ERR_POLICY_VIOLATION : XS_ERR_INTERNAL;
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_BINARY_ENTITY_REF:
	case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_NOT_STANDALONE:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		return XS_ERR_RESTRICTED_XML;
	default:
		return XS_ERR_NOT_WELL_FORMED;
	}
}

static void parse(struct xmlstream *xs, const char *data, size_t len)
{
	if (XML_Parse(xs->parser, data, (int)len, XML_FALSE) == XML_STATUS_OK || xs->stopped)
		return;
	enum XML_Error code = XML_GetErrorCode(xs->parser);
	const char *reason = XML_ErrorString(code);

	fail(xs, expat_error(xs, code), reason ? reason : "parse error");
}

/* Parse what expat holds back, ignoring reparse deferral this once. */
static void parse_pending(struct xmlstream *xs)
{
	XML_SetReparseDeferralEnabled(xs->parser, XML_FALSE);
	parse(xs, "", 0);
	XML_SetReparseDeferralEnabled(xs->parser, XML_TRUE);
}

/* Whether the token expat holds back is a start or end tag whose closing
 * '>' has arrived. Quote-aware ('>' may appear in attribute values), and
 * each byte is scanned once per token. */
static bool pending_tag_ended(struct xmlstream *xs)
{
	const char *p;
	size_t n;

	if (xs->scan_token != xs->reported) {
		xs->scan_token = xs->reported;
		xs->scan_pos = xs->reported;
		xs->scan_quote = 0;
	}
	n = (size_t)(xs->fed - xs->scan_token);
	if (n < 2 || xs->scan_pos == xs->fed)
		return false;
	p = stream_bytes(xs, xs->scan_token, xs->fed);
	if (!p || p[0] != '<' || p[1] == '!' || p[1] == '?') {
		xs->scan_pos = xs->fed; /* not a tag: expat's rule applies */
		return false;
	}
	for (size_t i = (size_t)(xs->scan_pos - xs->scan_token); i < n; i++) {
		if (xs->scan_quote) {
			if (p[i] == xs->scan_quote)
				xs->scan_quote = 0;
		} else if (p[i] == '"' || p[i] == '\'') {
			xs->scan_quote = p[i];
		} else if (p[i] == '>') {
			xs->scan_pos = xs->scan_token + i + 1;
			return true;
		}
	}
	xs->scan_pos = xs->fed;
	return false;
}

static int parser_wake(struct xmlstream *xs);

enum xs_error xmlstream_feed(struct xmlstream *xs, const char *data, size_t len,
			     size_t *consumed)
{
	struct xmlstream *prev;

	if (consumed)
		*consumed = 0;
	if (xs->in_feed)
		return XS_ERR_INTERNAL; /* from a callback: leave the outer feed alone */
	if (xs->err != XS_OK)
		return xs->err;
	if (xs->reset_requested) {
		fail(xs, XS_ERR_INTERNAL, "fed after a reset request without xmlstream_reset()");
		return xs->err;
	}
	if (xs->closed || len == 0)
		return XS_OK;

	/* expat would detect UTF-16/32 from a BOM or a NUL byte; XMPP is UTF-8
	 * only, and these bytes are never valid UTF-8 at the start anyway. */
	for (size_t i = 0; i < len && xs->fed + i < 2; i++) {
		unsigned char c = (unsigned char)data[i];

		if (c == 0x00 || c == 0xfe || c == 0xff) {
			fail(xs, XS_ERR_NOT_WELL_FORMED, "encoding other than UTF-8");
			return xs->err;
		}
	}
	if (!xs->parser && parser_wake(xs) < 0) {
		fail_nomem(xs);
		return xs->err;
	}

	xs->feed = data;
	xs->feed_start = xs->fed;
	xs->in_feed = true;
	prev = owner_enter(xs);
	for (size_t off = 0, n; off < len && !xs->stopped; off += n) {
		n = len - off < XS_PARSE_SLICE ? len - off : XS_PARSE_SLICE;
		xs->fed += n;
		parse(xs, data + off, n);
		if (!xs->stopped && xs->fed - keep_from(xs) > xs->max_stanza_size) {
			/* maybe complete tokens held back: parse them before judging */
			parse_pending(xs);
			if (!xs->stopped && xs->fed - keep_from(xs) > xs->max_stanza_size)
				fail(xs, XS_ERR_POLICY_VIOLATION,
				     xs->depth == 0 ? "stream header too large" : "stanza too large");
		}
	}
	if (!xs->stopped && xs->fed > xs->reported &&
	    (xs->fed - xs->reported <= XS_UNDEFER_MAX || pending_tag_ended(xs)))
		parse_pending(xs);
	owner_leave(prev);
	if (retain(xs) < 0)
		fail_nomem(xs);
	xs->feed = NULL;
	xs->in_feed = false;

	if (consumed) {
		if (xs->err == XS_OK && xs->stop_at != NO_OFFSET && xs->stop_at >= xs->feed_start)
			*consumed = (size_t)(xs->stop_at - xs->feed_start);
		else
			*consumed = len;
	}
	return xs->err;
}

/* ---- life cycle ----------------------------------------------------- */

static void state_init(struct xmlstream *xs)
{
	xs->err = XS_OK;
	mem_free(xs, xs->err_text);
	xs->err_text = NULL;
	xs->mem_limit_hit = false;
	xs->stopped = false;
	xs->closed = false;
	xs->reset_requested = false;
	xs->depth = 0;
	xs->fed = 0;
	xs->reported = 0;
	xs->scan_token = NO_OFFSET;
	xs->scan_pos = 0;
	xs->scan_quote = 0;
	xs->stanza_start = 0;
	xs->stanza_tag_end = 0;
	xs->stop_at = NO_OFFSET;
	xs->index_base = 0;
	xs->line_base = 1;
	xs->col_base = 0;
	xs->replay_line = 1;
	xs->replay_col = 0;
	buf_release(xs);
	header_free(xs);
	xs->default_ns = NULL;
	xs->tree = xs->cur = NULL;
	memset(&xs->head, 0, sizeof xs->head);
	arena_reset(xs, false);
}

static XML_Parser parser_create(struct xmlstream *xs)
{
	struct xmlstream *prev = owner_enter(xs);
	XML_Parser p = XML_ParserCreate_MM(NULL, &expat_memsuite, NS_SEP_STR);

	owner_leave(prev);
	return p;
}

static void parser_free(struct xmlstream *xs, XML_Parser p)
{
	struct xmlstream *prev = owner_enter(xs);

	XML_ParserFree(p);
	owner_leave(prev);
}

struct xmlstream *xmlstream_new(const struct xmlstream_callbacks *cb, void *ctx,
				uint32_t max_stanza_size, uint32_t max_depth)
{
	struct xmlstream *xs;

	if (!cb) {
		errno = EINVAL;
		return NULL;
	}
	xs = slab_alloc(sizeof *xs);
	if (!xs)
		return NULL;
	xs->mem_used = slab_size(sizeof *xs);
	xs->mem_limit = XS_MEM_LIMIT(max_stanza_size);
	xs->cb = *cb;
	xs->ctx = ctx;
	xs->max_stanza_size = max_stanza_size;
	xs->max_depth = max_depth;
	state_init(xs);
	xs->parser = parser_create(xs);
	if (!xs->parser) {
		slab_free(xs, sizeof *xs);
		errno = ENOMEM;
		return NULL;
	}
	parser_setup(xs, xs->parser);
	return xs;
}

void xmlstream_free(struct xmlstream *xs)
{
	if (!xs)
		return;
	if (xs->parser)
		parser_free(xs, xs->parser);
	arena_reset(xs, true);
	mem_free(xs, xs->buf);
	header_free(xs);
	mem_free(xs, xs->err_text);
	slab_free(xs, sizeof *xs);
}

void xmlstream_request_reset(struct xmlstream *xs)
{
	xs->reset_requested = true;
}

bool xmlstream_reset_requested(const struct xmlstream *xs)
{
	return xs->reset_requested;
}

int xmlstream_reset(struct xmlstream *xs)
{
	struct xmlstream *prev;
	XML_Parser fresh = NULL;

	if (xs->in_feed)
		return -EBUSY;
	state_init(xs);
	if (!xs->parser)
		return 0; /* hibernating: the next feed makes a fresh parser */
	/* A parser that grew (big stanzas, many names) is not worth keeping:
	 * XML_ParserReset keeps its buffer and table sizes. */
	if (xs->mem_parser > XS_PARSER_IDLE_MAX)
		fresh = parser_create(xs);
	if (fresh) {
		parser_free(xs, xs->parser);
		xs->parser = fresh;
	} else {
		prev = owner_enter(xs);
		/* fails only for external-entity parsers, which we never create */
		(void)XML_ParserReset(xs->parser, NULL);
		owner_leave(prev);
	}
	parser_setup(xs, xs->parser);
	return 0;
}

static void XMLCALL on_replay_start(void *ud, const XML_Char *qname, const XML_Char **atts)
{
	(void)qname;
	(void)atts;
	*(bool *)ud = true;
}

/* A new parser brought to where the stream is, callbacks off: past the
 * stream header, parsed again so the prefixes it declared are in scope, or
 * at the start if no header has been parsed yet. NULL when out of memory
 * (or if the header, which parsed before, failed to: not expected). */
static XML_Parser parser_replay(struct xmlstream *xs)
{
	bool started = false;
	XML_Parser p = parser_create(xs);

	if (!p || !xs->header)
		return p;
	struct xmlstream *prev = owner_enter(xs);
	XML_SetUserData(p, &started);
	XML_SetStartElementHandler(p, on_replay_start);
	enum XML_Status st = XML_Parse(p, xs->header, (int)xs->header_len, XML_FALSE);
	owner_leave(prev);
	if (st != XML_STATUS_OK || !started) {
		parser_free(xs, p);
		return NULL;
	}
	return p;
}

/* Make P (from parser_replay) the stream's parser, now at stream offset
 * `fed` and at stream position (LINE, COL). */
static void parser_adopt(struct xmlstream *xs, XML_Parser p, unsigned long line,
			 unsigned long col)
{
	xs->line_base = line;
	xs->col_base = col;
	xs->replay_line = XML_GetCurrentLineNumber(p);
	xs->replay_col = XML_GetCurrentColumnNumber(p);
	xs->index_base = (int64_t)xs->fed - (int64_t)xs->header_len;
	xs->parser = p;
	parser_setup(xs, p);
}

/* Swap in a fresh parser (trim). Best effort: on failure the old parser
 * stays. */
static void parser_renew(struct xmlstream *xs)
{
	size_t limit = xs->mem_limit;
	unsigned long line, col;
	XML_Parser p;

	xs->mem_limit = SIZE_MAX; /* both parsers exist for a moment */
	p = parser_replay(xs);
	if (p) {
		stream_position(xs, &line, &col);
		parser_free(xs, xs->parser);
		parser_adopt(xs, p, line, col);
	}
	xs->mem_limit = limit;
}

/* Leave hibernation, from xmlstream_feed(); the position was saved by
 * xmlstream_hibernate() (or is the start, after a reset). The stream's
 * memory limit holds: a fresh parser is small. */
static int parser_wake(struct xmlstream *xs)
{
	XML_Parser p = parser_replay(xs);

	if (!p)
		return -ENOMEM;
	parser_adopt(xs, p, xs->line_base, xs->col_base);
	return 0;
}

void xmlstream_trim(struct xmlstream *xs)
{
	if (xs->in_feed)
		return;
	if (xs->depth < 2)
		arena_reset(xs, true);
	if (xs->buf_len == 0) {
		buf_release(xs);
	} else if (xs->buf_len < xs->buf_cap) {
		char *p = mem_realloc(xs, xs->buf, xs->buf_len);

		if (p) {
			xs->buf = p;
			xs->buf_cap = xs->buf_len;
		}
	}
	if (xs->parser && xs->err == XS_OK && !xs->stopped && xs->depth == 1 &&
	    xs->fed == xs->reported && xs->mem_parser > XS_PARSER_IDLE_MAX)
		parser_renew(xs);
}

void xmlstream_hibernate(struct xmlstream *xs)
{
	unsigned long line, col;

	/* fed == reported: expat holds no byte we have not seen as an event,
	 * so the saved header is all a replacement needs (see the top) */
	if (!xs->parser || xs->in_feed || xs->err != XS_OK || xs->stopped ||
	    xs->reset_requested || xs->fed != xs->reported ||
	    !(xs->depth == 1 || (xs->depth == 0 && xs->fed == 0)))
		return;
	stream_position(xs, &line, &col);
	parser_free(xs, xs->parser);
	xs->parser = NULL;
	xs->line_base = line;
	xs->col_base = col;
	arena_reset(xs, true);
	buf_release(xs);
}

size_t xmlstream_memory(const struct xmlstream *xs)
{
	return xs->mem_used;
}

const char *xmlstream_error_text(const struct xmlstream *xs)
{
	if (xs->err == XS_OK)
		return "no error";
	return xs->err_text ? xs->err_text : xs_error_condition(xs->err);
}

const char *xs_error_condition(enum xs_error e)
{
	switch (e) {
	case XS_OK:
		return "";
	case XS_ERR_NOT_WELL_FORMED:
		return "not-well-formed";
	case XS_ERR_RESTRICTED_XML:
		return "restricted-xml";
	case XS_ERR_POLICY_VIOLATION:
		return "policy-violation";
	case XS_ERR_INTERNAL:
	case XS_ERR_CALLBACK:
		break;
	}
	return "internal-server-error";
}

/* ---- tree helpers --------------------------------------------------- */

struct xml_node *xml_child(const struct xml_node *n, const char *ns, const char *name)
{
	for (struct xml_node *c = n ? n->first_child : NULL; c; c = c->next) {
		if ((!name || strcmp(c->name, name) == 0) && (!ns || strcmp(c->ns, ns) == 0))
			return c;
	}
	return NULL;
}

const char *xml_attr(const struct xml_node *n, const char *name)
{
	for (int i = 0; n && i < n->attr_count; i++) {
		if (n->attrs[i].ns[0] == '\0' && strcmp(n->attrs[i].name, name) == 0)
			return n->attrs[i].value;
	}
	return NULL;
}

int xml_escape(char *out, size_t cap, const char *s, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		const char *rep;

		switch (s[i]) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '\'': rep = "&apos;"; break;
		case '"': rep = "&quot;"; break;
		default: rep = NULL; break;
		}
		size_t rlen = rep ? strlen(rep) : 1;
		if (cap - o <= rlen) /* o < cap holds; keep room for the NUL */
			return -ENOSPC;
		if (rep)
			memcpy(out + o, rep, rlen);
		else
			out[o] = s[i];
		o += rlen;
	}
	if (o >= cap || o > INT_MAX)
		return -ENOSPC;
	out[o] = '\0';
	return (int)o;
}
