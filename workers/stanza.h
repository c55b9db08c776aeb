/*
 * stanza: growable byte buffers, and stamping a stanza's 'from'.
 *
 * Routing keeps a stanza as the bytes it arrived as; the one change the
 * server makes to a client's stanza is its 'from', which must be the
 * sender's full JID (RFC 6120 8.1.2.1). stanza_set_from() rewrites only
 * the start tag, so namespace declarations, attribute order and the payload
 * reach the recipient byte for byte.
 */
#ifndef XMPPD_STANZA_H
#define XMPPD_STANZA_H

#include <stddef.h>

struct buf {
	char *data;
	size_t len, cap;
};

/* Grow B to hold NEED bytes. 0 or -ENOMEM. */
int buf_reserve(struct buf *b, size_t need);
/* Append LEN bytes (kept NUL-terminated). 0 or -ENOMEM. */
int buf_add(struct buf *b, const char *s, size_t len);
int buf_add_str(struct buf *b, const char *s);
/* Append S escaped for XML character data and attribute values. */
int buf_add_esc(struct buf *b, const char *s);
void buf_free(struct buf *b);

/* A random id of LEN - 1 letters and digits (stream ids, resources). */
void stanza_random_id(char *out, size_t len);

/* Copy stanza RAW into OUT (replacing OUT's content) with its start tag's
 * 'from' set to FROM; any 'from' the sender put there is dropped, the rest
 * is kept byte for byte. START_TAG_LEN is the length of RAW's start tag,
 * which must be well-formed (the parser has checked it). 0 or -errno. */
int stanza_set_from(struct buf *out, const char *raw, size_t raw_len, size_t start_tag_len,
		    const char *from);

#endif
