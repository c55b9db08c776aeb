/*
 * jid: RFC 7622 addresses, split and normalised.
 *
 * Normalisation here is the ASCII subset of PRECIS: localpart and domainpart
 * are case-folded (ASCII), a trailing dot on the domain is removed, and the
 * characters RFC 7622 excludes from a localpart (" & ' / : < > @ and space)
 * are refused. Non-ASCII UTF-8 is accepted as is (valid UTF-8 only), without
 * PRECIS mapping; each part is limited to 1023 bytes.
 */
#ifndef XMPPD_JID_H
#define XMPPD_JID_H

#include <stdbool.h>
#include <stddef.h>

#define JID_PART_MAX 1023

struct jid {
	char local[JID_PART_MAX + 1];    /* "" when absent */
	char domain[JID_PART_MAX + 1];
	char resource[JID_PART_MAX + 1]; /* "" when absent */
};

/* Parse and normalise S (LEN bytes, not necessarily NUL-terminated).
 * Returns 0 or -EINVAL. */
int jid_parse(struct jid *j, const char *s, size_t len);

/* Write "local@domain" (or "domain") into OUT. Returns length, or -ENAMETOOLONG. */
int jid_bare(const struct jid *j, char *out, size_t cap);
/* Write the full form "local@domain/resource" (parts present only). */
int jid_full(const struct jid *j, char *out, size_t cap);

/* Validate and normalise a resourcepart on its own (for bind). */
int jid_resource_valid(const char *s, size_t len);

#endif
