/*
 * libFuzzer harness for workers/xmlstream.c (not part of build.ninja).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *         -std=gnu11 -I. -D_GNU_SOURCE tests/fuzz/fuzz_xmlstream.c workers/xmlstream.c \
 *         -lexpat -o /tmp/fuzz_xmlstream
 *   mkdir -p /tmp/fuzz-corpus && /tmp/fuzz_xmlstream -max_total_time=30 /tmp/fuzz-corpus
 *
 * Input: byte 0 picks the options (prefix a stream header, build trees,
 * trim between pieces, piece sizes), the rest is the stream. Each input is
 * parsed twice, whole and in pieces, and the runs must agree: same stanzas
 * (raw bytes, start tags, trees) and the same outcome, except where the
 * stream's memory limit decides (it depends on how expat's buffer grew) or
 * a policy violation is found before another error.
 * Every stanza is checked for the invariants of struct xml_stanza. A stanza
 * named "starttls" requests a reset, and the rest is fed as a new stream.
 */
#include "workers/xmlstream.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_STANZA 1500
#define MAX_DEPTH 6

static const char header[] = "<stream:stream xmlns='jabber:client' "
			     "xmlns:stream='http://etherx.jabber.org/streams' to='x'>";

struct run {
	struct xmlstream *xs;
	bool trees;
	uint64_t hash; /* of every stanza, in order */
	unsigned stanzas, opens, closes;
};

static void hash_bytes(uint64_t *h, const void *p, size_t len)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < len; i++)
		*h = (*h ^ s[i]) * 0x100000001b3ull;
}

static void hash_str(uint64_t *h, const char *s)
{
	hash_bytes(h, s, strlen(s) + 1);
}

static unsigned check_tree(uint64_t *h, const struct xml_node *n, unsigned depth)
{
	unsigned deepest = depth;

	if (strlen(n->text) != n->text_len)
		abort();
	hash_str(h, n->ns);
	hash_str(h, n->name);
	hash_str(h, n->text);
	for (int i = 0; i < n->attr_count; i++) {
		hash_str(h, n->attrs[i].ns);
		hash_str(h, n->attrs[i].name);
		hash_str(h, n->attrs[i].value);
	}
	for (const struct xml_node *c = n->first_child; c; c = c->next) {
		if (c->parent != n || (!c->next && n->last_child != c))
			abort();
		unsigned d = check_tree(h, c, depth + 1);
		if (d > deepest)
			deepest = d;
	}
	return deepest;
}

static int on_open(void *ctx, const char *ns, const char *name, const char *default_ns,
		   const struct xml_attr *attrs, int attr_count)
{
	struct run *r = ctx;

	r->opens++;
	hash_str(&r->hash, ns);
	hash_str(&r->hash, name);
	hash_str(&r->hash, default_ns);
	for (int i = 0; i < attr_count; i++)
		hash_str(&r->hash, attrs[i].value);
	return 0;
}

static bool on_stanza_start(void *ctx, const struct xml_stanza_head *head)
{
	struct run *r = ctx;

	if (!head->ns || !head->name || head->attr_count < 0)
		abort();
	return r->trees;
}

static int on_stanza(void *ctx, const struct xml_stanza *st)
{
	struct run *r = ctx;
	const char *raw = st->raw;

	if (st->raw_len > MAX_STANZA || st->start_tag_len < 3 ||
	    st->start_tag_len > st->raw_len || raw[0] != '<' || raw[st->raw_len - 1] != '>' ||
	    raw[st->start_tag_len - 1] != '>' ||
	    st->self_closing != (st->raw_len == st->start_tag_len) ||
	    (st->self_closing && raw[st->raw_len - 2] != '/') ||
	    (!st->self_closing && raw[st->start_tag_len - 2] == '/'))
		abort();
	if (r->trees != (st->tree != NULL))
		abort();
	if (st->tree && (strcmp(st->tree->name, st->head.name) != 0 ||
			 check_tree(&r->hash, st->tree, 1) > MAX_DEPTH))
		abort();
	r->stanzas++;
	hash_bytes(&r->hash, raw, st->raw_len);
	hash_bytes(&r->hash, &st->start_tag_len, sizeof st->start_tag_len);
	hash_str(&r->hash, st->head.to ? st->head.to : "-");
	if (strcmp(st->head.name, "starttls") == 0)
		xmlstream_request_reset(r->xs);
	return 0;
}

static void on_close(void *ctx)
{
	((struct run *)ctx)->closes++;
}

static const struct xmlstream_callbacks callbacks = {
	.on_stream_open = on_open,
	.on_stanza_start = on_stanza_start,
	.on_stanza = on_stanza,
	.on_stream_close = on_close,
};

/* Feed DATA in pieces (PIECE 0: whole), following resets. */
static enum xs_error feed_all(struct run *r, const uint8_t *data, size_t len, unsigned piece,
			      bool trim)
{
	enum xs_error e = XS_OK;
	uint32_t rnd = piece;
	size_t off = 0;

	while (off < len && e == XS_OK) {
		size_t n = len - off, consumed;

		if (piece) {
			rnd = rnd * 1103515245u + 12345u;
			n = 1 + (rnd >> 16) % (piece * piece * 8); /* up to 8 KiB */
			if (n > len - off)
				n = len - off;
		}
		e = xmlstream_feed(r->xs, (const char *)data + off, n, &consumed);
		if (e != XS_OK)
			break;
		if (consumed > n)
			abort();
		off += xmlstream_reset_requested(r->xs) ? consumed : n;
		if (xmlstream_reset_requested(r->xs) && xmlstream_reset(r->xs) != 0)
			abort();
		if (trim)
			xmlstream_trim(r->xs);
	}
	if (xmlstream_memory(r->xs) == 0)
		abort();
	return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run runs[2];
	enum xs_error err[2];
	bool memory_limited[2];
	uint8_t opt;
	uint8_t *input;
	size_t len = 0;

	if (size < 1)
		return 0;
	opt = data[0];
	input = malloc(sizeof header + size);
	if (!input)
		return 0;
	if (opt & 1) {
		memcpy(input, header, sizeof header - 1);
		len = sizeof header - 1;
	}
	memcpy(input + len, data + 1, size - 1);
	len += size - 1;

	for (int i = 0; i < 2; i++) {
		memset(&runs[i], 0, sizeof runs[i]);
		runs[i].trees = opt & 2;
		runs[i].xs = xmlstream_new(&callbacks, &runs[i], MAX_STANZA, MAX_DEPTH);
		if (!runs[i].xs)
			abort();
		err[i] = feed_all(&runs[i], input, len, i == 0 ? 0 : 1 + (opt >> 3),
				  i == 1 && (opt & 4));
		if (err[i] != XS_OK && !strstr(xmlstream_error_text(runs[i].xs), "line "))
			abort();
		memory_limited[i] = strstr(xmlstream_error_text(runs[i].xs), "memory limit") != NULL;
	}
	/* Which limit or error is met first may depend on the pieces (a size
	 * check runs after each piece), so a policy violation may stand in for
	 * another error; it may never stand in for success. */
	if (!memory_limited[0] && !memory_limited[1]) {
		if (err[0] != err[1] && (err[0] == XS_OK || err[1] == XS_OK ||
					 (err[0] != XS_ERR_POLICY_VIOLATION &&
					  err[1] != XS_ERR_POLICY_VIOLATION))) {
			fprintf(stderr, "whole: %s\npieces: %s\n", xmlstream_error_text(runs[0].xs),
				xmlstream_error_text(runs[1].xs));
			abort();
		}
		if (err[0] == XS_OK &&
		    (runs[0].hash != runs[1].hash || runs[0].stanzas != runs[1].stanzas ||
		     runs[0].opens != runs[1].opens || runs[0].closes != runs[1].closes))
			abort();
	}
	for (int i = 0; i < 2; i++)
		xmlstream_free(runs[i].xs);
	free(input);
	return 0;
}
