/*
 * stanza.c: growable byte buffers and the one rewrite routing does to a
 * stanza (see stanza.h).
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

#include "common/randstr.h"

#include "workers/stanza.h"
#include "workers/xmlstream.h"

int buf_reserve(struct buf *b, size_t need)
{
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		return -ENOMEM;
	b->data = p;
	b->cap = cap;
	return 0;
}

int buf_add(struct buf *b, const char *s, size_t len)
{
	if (buf_reserve(b, b->len + len + 1) < 0)
		return -ENOMEM;
	memcpy(b->data + b->len, s, len);
	b->len += len;
	b->data[b->len] = '\0';
	return 0;
}

int buf_add_str(struct buf *b, const char *s)
{
	return buf_add(b, s, strlen(s));
}

/* Append S escaped for XML. */
int buf_add_esc(struct buf *b, const char *s)
{
	size_t len = strlen(s);
	if (buf_reserve(b, b->len + len * 6 + 1) < 0)
		return -ENOMEM;
	int n = xml_escape(b->data + b->len, b->cap - b->len, s, len);
	if (n < 0)
		return n;
	b->len += (size_t)n;
	b->data[b->len] = '\0';
	return 0;
}

void buf_free(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

/*
 * Rewrite the start tag of RAW so that its 'from' is FROM: the element name
 * is followed by from='FROM', every other attribute (and namespace
 * declaration) is kept byte for byte, any 'from' the client sent is left
 * out, and the rest of the stanza is copied unchanged. RAW was accepted by
 * the parser, so its start tag is well-formed and this scan can be simple.
 */
int stanza_set_from(struct buf *out, const char *raw, size_t raw_len, size_t start_tag_len,
		    const char *from)
{
	out->len = 0;
	if (start_tag_len < 2 || start_tag_len > raw_len || raw[0] != '<')
		return -EINVAL;
	size_t i = 1;
	while (i < start_tag_len && !strchr(" \t\r\n/>", raw[i]))
		i++;
	if (buf_add(out, raw, i) < 0 || buf_add_str(out, " from='") < 0 ||
	    buf_add_esc(out, from) < 0 || buf_add_str(out, "'") < 0)
		return -ENOMEM;
	while (i < start_tag_len) {
		size_t ws = i;
		while (i < start_tag_len && strchr(" \t\r\n", raw[i]))
			i++;
		if (i >= start_tag_len || raw[i] == '/' || raw[i] == '>') {
			if (buf_add(out, raw + ws, start_tag_len - ws) < 0)
				return -ENOMEM;
			break;
		}
		size_t name = i;
		while (i < start_tag_len && !strchr(" \t\r\n=", raw[i]))
			i++;
		size_t name_len = i - name;
		while (i < start_tag_len && raw[i] != '\'' && raw[i] != '"')
			i++;
		if (i >= start_tag_len)
			return -EINVAL;
		char quote = raw[i++];
		while (i < start_tag_len && raw[i] != quote)
			i++;
		if (i >= start_tag_len)
			return -EINVAL;
		i++;
		bool is_from = name_len == 4 && memcmp(raw + name, "from", 4) == 0;
		if (!is_from && buf_add(out, raw + ws, i - ws) < 0)
			return -ENOMEM;
	}
	if (buf_add(out, raw + start_tag_len, raw_len - start_tag_len) < 0)
		return -ENOMEM;
	return 0;
}

void stanza_random_id(char *out, size_t len)
{
	if (len == 0)
		return;
	if (randstr(out, len - 1, RANDSTR_ALNUM) < 0) {
		/* ids need to be unique, not secret: never fail a stream for them */
		static unsigned long long counter;
		snprintf(out, len, "id%llx", ++counter);
	}
}
