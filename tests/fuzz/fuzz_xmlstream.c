/*
 * libFuzzer harness for workers/xmlstream.c (not part of build.ninja).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
 *         -std=gnu11 -I. -D_GNU_SOURCE tests/fuzz/fuzz_xmlstream.c workers/xmlstream.c \
 *         -lexpat -o /tmp/fuzz_xmlstream
 *   mkdir -p /tmp/fuzz-corpus && /tmp/fuzz_xmlstream -max_total_time=30 -max_len=16384 \
 *         /tmp/fuzz-corpus
 *
 * Input: bytes 0 and 1 pick the options (prefix a stream header, build
 * trees, trim between pieces, piece sizes, limits, hibernate after random
 * pieces); the rest is the stream. A hibernation that happens must leave
 * the stream holding less, and one tried from a callback must not happen.
 * Every stanza is checked against the invariants of struct xml_stanza. A
 * stanza named "starttls" requests a reset, and the rest is fed as a new
 * stream. Each input is parsed twice, whole and in pieces, and the runs
 * must agree:
 *   - the stanzas (raw bytes, start tags, trees, headers) of one run are a
 *     prefix of the other's: with reparse deferral a run may not yet have
 *     re-scanned a large pending token, nor found an error inside it, when
 *     the input ends;
 *   - a run that ends with its stream closed has parsed everything, so the
 *     other has the same stanzas and no error;
 *   - two errors are the same error;
 * unless a policy violation decides: which limit or error is met first may
 * depend on the pieces, and the memory limit on how expat's buffer grew.
 */
#include "workers/xmlstream.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_RECORDED 8192

static const char header[] = "<stream:stream xmlns='jabber:client' "
			     "xmlns:stream='http://etherx.jabber.org/streams' to='x'>";

struct run {
	struct xmlstream *xs;
	bool trees;
	bool hibernate;
	uint32_t max_stanza, max_depth;
	uint64_t hash; /* of the stream header or stanza being recorded */
	uint64_t recorded[MAX_RECORDED];
	unsigned count;
	bool closed; /* the last stream opened was closed */
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

static void record(struct run *r)
{
	if (r->count < MAX_RECORDED)
		r->recorded[r->count++] = r->hash;
	r->hash = 0xcbf29ce484222325ull;
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

	r->closed = false;
	hash_str(&r->hash, ns);
	hash_str(&r->hash, name);
	hash_str(&r->hash, default_ns);
	for (int i = 0; i < attr_count; i++)
		hash_str(&r->hash, attrs[i].value);
	record(r);
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

	if (st->raw_len > r->max_stanza || st->start_tag_len < 3 ||
	    st->start_tag_len > st->raw_len || raw[0] != '<' || raw[st->raw_len - 1] != '>' ||
	    raw[st->start_tag_len - 1] != '>' ||
	    st->self_closing != (st->raw_len == st->start_tag_len) ||
	    (st->self_closing && raw[st->raw_len - 2] != '/') ||
	    (!st->self_closing && raw[st->start_tag_len - 2] == '/'))
		abort();
	if (r->trees != (st->tree != NULL))
		abort();
	if (st->tree && (strcmp(st->tree->name, st->head.name) != 0 ||
			 check_tree(&r->hash, st->tree, 1) > r->max_depth))
		abort();
	hash_bytes(&r->hash, raw, st->raw_len);
	hash_bytes(&r->hash, &st->start_tag_len, sizeof st->start_tag_len);
	hash_str(&r->hash, st->head.to ? st->head.to : "-");
	record(r);
	if (r->hibernate) {
		size_t before = xmlstream_memory(r->xs);

		xmlstream_hibernate(r->xs); /* inside a callback: must do nothing */
		if (xmlstream_memory(r->xs) != before)
			abort();
	}
	if (strcmp(st->head.name, "starttls") == 0)
		xmlstream_request_reset(r->xs);
	return 0;
}

static void on_close(void *ctx)
{
	((struct run *)ctx)->closed = true;
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
		if (r->hibernate && (rnd >> 8) % 3 == 0) {
			size_t before = xmlstream_memory(r->xs);

			xmlstream_hibernate(r->xs);
			if (xmlstream_memory(r->xs) > before)
				abort();
		}
	}
	if (xmlstream_memory(r->xs) == 0)
		abort();
	return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct run runs[2];
	enum xs_error err[2];
	uint8_t opt, opt2;
	uint8_t *input;
	size_t len = 0;

	if (size < 2)
		return 0;
	opt = data[0];
	opt2 = data[1];
	data += 2;
	size -= 2;
	input = malloc(sizeof header + size);
	if (!input)
		return 0;
	if (opt & 1) {
		memcpy(input, header, sizeof header - 1);
		len = sizeof header - 1;
	}
	memcpy(input + len, data, size);
	len += size;

	for (int i = 0; i < 2; i++) {
		struct run *r = &runs[i];

		memset(r, 0, sizeof *r);
		r->hash = 0xcbf29ce484222325ull;
		r->trees = opt & 2;
		/* small limits reach the checks; large ones the big-token paths */
		r->max_stanza = opt2 & 1 ? 64 * 1024 : 1500;
		r->max_depth = 2 + (opt2 >> 1) % 8;
		r->hibernate = i == 1 && (opt2 & 16);
		r->xs = xmlstream_new(&callbacks, r, r->max_stanza, r->max_depth);
		if (!r->xs)
			abort();
		err[i] = feed_all(r, input, len, i == 0 ? 0 : 1 + (opt >> 3), i == 1 && (opt & 4));
		if (err[i] != XS_OK && !strstr(xmlstream_error_text(r->xs), "line "))
			abort();
	}
	if (err[0] != XS_ERR_POLICY_VIOLATION && err[1] != XS_ERR_POLICY_VIOLATION) {
		unsigned common = runs[0].count < runs[1].count ? runs[0].count : runs[1].count;

		if (memcmp(runs[0].recorded, runs[1].recorded, common * sizeof(uint64_t)) != 0)
			abort();
		for (int i = 0; i < 2; i++) {
			if (err[i] == XS_OK && runs[i].closed &&
			    (err[!i] != XS_OK || runs[i].count != runs[!i].count)) {
				fprintf(stderr, "run %d closed with %u records; the other: %u, %s\n", i,
					runs[i].count, runs[!i].count,
					xmlstream_error_text(runs[!i].xs));
				abort();
			}
		}
		if (err[0] != XS_OK && err[1] != XS_OK && err[0] != err[1]) {
			fprintf(stderr, "whole: %s\npieces: %s\n", xmlstream_error_text(runs[0].xs),
				xmlstream_error_text(runs[1].xs));
			abort();
		}
	}
	for (int i = 0; i < 2; i++)
		xmlstream_free(runs[i].xs);
	free(input);
	return 0;
}
