/*
 * jid: RFC 7622 addresses, split and normalised (the ASCII subset of PRECIS,
 * see jid.h).
 *
 * Split (RFC 7622 3.2): the resourcepart is everything after the first '/';
 * in what precedes it, the localpart is everything before the first '@'.
 * A separator with nothing on one side is an error (a@/x, @b, b/).
 *
 * Domainpart: an IPv6 literal in brackets (written back in inet_ntop's
 * canonical form, so [0:0::1] and [::1] are one JID), or dot-separated
 * labels of ASCII letters, digits, '-' and '_' (seen in real deployments)
 * or non-ASCII UTF-8 (IDN U-labels, taken as they are). One trailing dot is
 * removed; empty labels are refused; an all-ASCII label is at most 63 bytes
 * as in DNS. IPv4 addresses pass as labels of digits.
 *
 * UTF-8 is checked strictly (RFC 3629): no overlong forms, no surrogates,
 * nothing above U+10FFFF. Control characters (C0, DEL, C1) are refused in
 * every part.
 */
#include "common/jid.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#define LABEL_MAX 63

/* Length of the well-formed UTF-8 sequence at S (LEN bytes available) and
 * its code point in *CP; 0 if not well-formed. */
static size_t utf8_decode(const unsigned char *s, size_t len, uint32_t *cp)
{
	uint32_t c = s[0], min;
	size_t n;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c < 0xc2) /* a continuation byte, or an overlong 2-byte lead */
		return 0;
	if (c < 0xe0) {
		n = 2;
		c &= 0x1f;
		min = 0x80;
	} else if (c < 0xf0) {
		n = 3;
		c &= 0x0f;
		min = 0x800;
	} else if (c < 0xf5) {
		n = 4;
		c &= 0x07;
		min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return n;
}

static bool is_control(uint32_t c)
{
	return c < 0x20 || (c >= 0x7f && c <= 0x9f);
}

static char ascii_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* Valid UTF-8 without control characters, 1..JID_PART_MAX bytes. */
static bool text_valid(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	uint32_t c;

	if (len == 0 || len > JID_PART_MAX)
		return false;
	for (size_t i = 0, n; i < len; i += n) {
		n = utf8_decode(p + i, len - i, &c);
		if (n == 0 || is_control(c))
			return false;
	}
	return true;
}

static int local_normalise(char *out, const char *s, size_t len)
{
	if (!text_valid(s, len))
		return -EINVAL;
	for (size_t i = 0; i < len; i++) {
		if (strchr("\"&'/:<>@ ", s[i]) && s[i] != '\0')
			return -EINVAL;
		out[i] = ascii_lower(s[i]);
	}
	out[len] = '\0';
	return 0;
}

static int ip_literal_normalise(char *out, const char *s, size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned char bin[16];

	if (len < 3 || s[len - 1] != ']' || len - 2 >= sizeof addr)
		return -EINVAL;
	memcpy(addr, s + 1, len - 2);
	addr[len - 2] = '\0';
	if (inet_pton(AF_INET6, addr, bin) != 1 || !inet_ntop(AF_INET6, bin, addr, sizeof addr))
		return -EINVAL;
	out[0] = '[';
	strcpy(out + 1, addr);
	strcat(out, "]");
	return 0;
}

static int domain_normalise(char *out, const char *s, size_t len)
{
	size_t label = 0;
	bool label_ascii = true;

	if (len > 0 && s[len - 1] == '.')
		len--;
	if (len > 0 && s[0] == '[')
		return ip_literal_normalise(out, s, len);
	if (!text_valid(s, len))
		return -EINVAL;
	for (size_t i = 0; i <= len; i++) {
		char c = i < len ? s[i] : '.';

		if (c == '.') {
			if (label == 0 || (label_ascii && label > LABEL_MAX))
				return -EINVAL;
			label = 0;
			label_ascii = true;
		} else if ((unsigned char)c >= 0x80) {
			label++;
			label_ascii = false; /* a U-label: its A-label length differs */
		} else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '-' || c == '_') {
			label++;
		} else {
			return -EINVAL;
		}
		if (i < len)
			out[i] = ascii_lower(c);
	}
	out[len] = '\0';
	return 0;
}

int jid_resource_valid(const char *s, size_t len)
{
	return text_valid(s, len) ? 0 : -EINVAL;
}

int jid_parse(struct jid *j, const char *s, size_t len)
{
	const char *slash = memchr(s, '/', len);
	size_t bare_len = slash ? (size_t)(slash - s) : len;
	const char *at = memchr(s, '@', bare_len);
	const char *domain = at ? at + 1 : s;
	int rc = 0;

	j->local[0] = j->domain[0] = j->resource[0] = '\0';
	if (at)
		rc = local_normalise(j->local, s, (size_t)(at - s));
	if (rc == 0)
		rc = domain_normalise(j->domain, domain, (size_t)(s + bare_len - domain));
	if (rc == 0 && slash) {
		size_t rlen = len - bare_len - 1;

		rc = jid_resource_valid(slash + 1, rlen);
		if (rc == 0) {
			memcpy(j->resource, slash + 1, rlen);
			j->resource[rlen] = '\0';
		}
	}
	if (rc < 0)
		j->local[0] = j->domain[0] = j->resource[0] = '\0';
	return rc;
}

/* Concatenate the N strings of PARTS into OUT (CAP bytes, NUL included). */
static int join(char *out, size_t cap, const char *const *parts, int n)
{
	size_t len = 0, part_len;

	for (int i = 0; i < n; i++)
		len += strlen(parts[i]);
	if (len >= cap)
		return -ENAMETOOLONG;
	len = 0;
	for (int i = 0; i < n; i++) {
		part_len = strlen(parts[i]);
		memcpy(out + len, parts[i], part_len);
		len += part_len;
	}
	out[len] = '\0';
	return (int)len;
}

int jid_bare(const struct jid *j, char *out, size_t cap)
{
	const char *parts[] = { j->local, "@", j->domain };

	return j->local[0] ? join(out, cap, parts, 3) : join(out, cap, parts + 2, 1);
}

int jid_full(const struct jid *j, char *out, size_t cap)
{
	const char *parts[] = { j->local, "@", j->domain, "/", j->resource };
	const char *const *first = j->local[0] ? parts : parts + 2;
	int n = j->local[0] ? 3 : 1;

	return join(out, cap, first, j->resource[0] ? n + 2 : n);
}
