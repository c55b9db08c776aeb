/*
 * jid unit tests: RFC 7622 split, normalisation, strict UTF-8, limits.
 */
#include "tests/unit/check.h"
#include "common/jid.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct valid_case {
	const char *in;
	const char *local, *domain, *resource;
};

static const struct valid_case valid[] = {
	{ "example.com", "", "example.com", "" },
	{ "User@Example.COM", "user", "example.com", "" },
	{ "juliet@example.com/Balcony", "juliet", "example.com", "Balcony" },
	{ "example.com/Res", "", "example.com", "Res" },
	{ "a@b/c/d@e", "a", "b", "c/d@e" },              /* resource after the first '/' */
	{ "a/b@c", "", "a", "b@c" },                     /* '@' after '/' is resource */
	{ "a@b/ spaced out ", "a", "b", " spaced out " },
	{ "juliet@example.com./x", "juliet", "example.com", "x" }, /* one trailing dot */
	{ "[::1]", "", "[::1]", "" },
	{ "u@[0:0:0:0:0:0:0:1]/r", "u", "[::1]", "r" },
	{ "[2001:DB8::1].", "", "[2001:db8::1]", "" },
	{ "127.0.0.1", "", "127.0.0.1", "" },
	{ "x_y.Example-1.com", "", "x_y.example-1.com", "" },
	{ "\xc3\x91" "ame@ex\xc3\xa1mple.com/r\xc3\xa9sum\xc3\xa9", "\xc3\x91" "ame",
	  "ex\xc3\xa1mple.com", "r\xc3\xa9sum\xc3\xa9" },   /* non-ASCII kept as is */
	{ "\xe6\x97\xa5\xe6\x9c\xac@\xe4\xbe\x8b.jp", "\xe6\x97\xa5\xe6\x9c\xac",
	  "\xe4\xbe\x8b.jp", "" },
	{ "a@b/\xf0\x9f\x98\x80", "a", "b", "\xf0\x9f\x98\x80" }, /* 4-byte UTF-8 */
	{ "a@b/\xef\xbf\xbd", "a", "b", "\xef\xbf\xbd" },
	{ "a!#$%()*+,;=?[\\]^_`{|}~@b", "a!#$%()*+,;=?[\\]^_`{|}~", "b", "" },
	{ "a@b/<&'\">:", "a", "b", "<&'\">:" },          /* the resource may hold them */
};

static const char *const invalid[] = {
	"", "@", "/", "@b", "a@", "a@/x", "b/", "/x", "a@b/", "@/", "a@b@c",
	".", "a@.", "a@b..c", "a@.b", "a@b.c..", "a@b:5222", "a b@c", "a&b@c", "a'b@c",
	"a\"b@c", "a:b@c", "a<b@c", "a>b@c", "a@b c", "a@b/c\n", "a@b\t", "\x01@b",
	"a\x7f@b",
	"a@b/\xc2\x80",          /* C1 control */
	"a@b/\xc0\xaf",          /* overlong '/' */
	"a@b/\xe0\x80\xaf",      /* overlong, 3 bytes */
	"a@b/\xf0\x80\x80\xaf",  /* overlong, 4 bytes */
	"a@b/\xed\xa0\x80",      /* surrogate */
	"a@b/\xe2\x82",          /* truncated */
	"a@b/\x80",              /* lone continuation */
	"a@b/\xf4\x90\x80\x80",  /* above U+10FFFF */
	"a@b/\xf5\x80\x80\x80",
	"a@b/\xfe", "a@b/\xff",
	"\xc3@b",
	"a@\xc3\x28",
	"[::1", "[]", "[1.2.3.4]", "[::1%eth0]", "[zz::1]", "[::1]x", "a@[::1]/",
};

static void test_valid(void)
{
	for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		struct jid j;
		int rc = jid_parse(&j, valid[i].in, strlen(valid[i].in));

		CHECK(rc == 0);
		if (rc != 0) {
			printf("  rejected: %s\n", valid[i].in);
			continue;
		}
		CHECK_STR(j.local, valid[i].local);
		CHECK_STR(j.domain, valid[i].domain);
		CHECK_STR(j.resource, valid[i].resource);
	}
}

static void test_invalid(void)
{
	for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
		struct jid j;
		int rc = jid_parse(&j, invalid[i], strlen(invalid[i]));

		CHECK(rc == -EINVAL);
		if (rc != -EINVAL)
			printf("  accepted: \"%s\"\n", invalid[i]);
		else
			CHECK(!j.local[0] && !j.domain[0] && !j.resource[0]);
	}
	/* a NUL inside the given length is a control character */
	struct jid j;
	CHECK(jid_parse(&j, "a\0b@c", 5) == -EINVAL);
	CHECK(jid_parse(&j, "a@b/c\0", 6) == -EINVAL);
	/* LEN is honoured: the bytes after it do not matter */
	CHECK(jid_parse(&j, "a@b/cd", 5) == 0 && strcmp(j.resource, "c") == 0);
	CHECK(jid_parse(&j, "a@b/", 3) == 0 && strcmp(j.domain, "b") == 0 && !j.resource[0]);
}

/* One part of LEN bytes in a JID: 1023 fits, 1024 does not. */
static void test_lengths(void)
{
	char *buf = malloc(4000), *part = malloc(1100);
	struct jid j;

	for (size_t len = 1022; len <= 1024; len++) {
		int want = len <= JID_PART_MAX ? 0 : -EINVAL;

		memset(part, 'x', len);
		part[len] = '\0';
		snprintf(buf, 4000, "%s@b/r", part);
		CHECK(jid_parse(&j, buf, strlen(buf)) == want);
		snprintf(buf, 4000, "a@b/%s", part);
		CHECK(jid_parse(&j, buf, strlen(buf)) == want);
		CHECK(jid_resource_valid(part, len) == want);
		/* a domain of labels: 63-byte labels with dots, LEN bytes */
		for (size_t i = 0; i < len; i++)
			part[i] = i % 64 == 63 ? '.' : 'd';
		if (part[len - 1] == '.')
			part[len - 1] = 'd';
		CHECK(jid_parse(&j, part, len) == want);
		if (want == 0)
			CHECK(strlen(j.domain) == len);
	}
	/* the trailing dot does not count */
	memset(part, 'd', 1023);
	for (size_t i = 63; i < 1023; i += 64)
		part[i] = '.';
	part[1023] = '.';
	CHECK(jid_parse(&j, part, 1024) == 0 && strlen(j.domain) == 1023);
	/* DNS labels are at most 63 bytes */
	memset(part, 'l', 64);
	CHECK(jid_parse(&j, part, 63) == 0);
	CHECK(jid_parse(&j, part, 64) == -EINVAL);
	free(buf);
	free(part);
}

static void test_resource_valid(void)
{
	CHECK(jid_resource_valid("phone", 5) == 0);
	CHECK(jid_resource_valid("a/b@c d", 7) == 0);
	CHECK(jid_resource_valid("\xe2\x98\x83", 3) == 0);
	CHECK(jid_resource_valid("", 0) == -EINVAL);
	CHECK(jid_resource_valid("a\nb", 3) == -EINVAL);
	CHECK(jid_resource_valid("\xed\xbf\xbf", 3) == -EINVAL);
	CHECK(jid_resource_valid("\xe2\x98", 2) == -EINVAL);
	CHECK(jid_resource_valid("\xc2\x9f", 2) == -EINVAL);
	CHECK(jid_resource_valid("\xc2\xa0", 2) == 0); /* NBSP is not a control */
}

static void test_format(void)
{
	struct jid j;
	char out[64];

	CHECK(jid_parse(&j, "Romeo@Example.net/Orchard", 25) == 0);
	CHECK(jid_bare(&j, out, sizeof out) == 17 && strcmp(out, "romeo@example.net") == 0);
	CHECK(jid_full(&j, out, sizeof out) == 25 && strcmp(out, "romeo@example.net/Orchard") == 0);
	/* CAP counts the NUL */
	CHECK(jid_full(&j, out, 26) == 25);
	CHECK(jid_full(&j, out, 25) == -ENAMETOOLONG);
	CHECK(jid_bare(&j, out, 18) == 17);
	CHECK(jid_bare(&j, out, 17) == -ENAMETOOLONG);
	CHECK(jid_bare(&j, out, 0) == -ENAMETOOLONG);

	CHECK(jid_parse(&j, "example.net", 11) == 0);
	CHECK(jid_bare(&j, out, sizeof out) == 11 && strcmp(out, "example.net") == 0);
	CHECK(jid_full(&j, out, sizeof out) == 11 && strcmp(out, "example.net") == 0);
	CHECK(jid_parse(&j, "example.net/x", 13) == 0);
	CHECK(jid_bare(&j, out, sizeof out) == 11 && strcmp(out, "example.net") == 0);
	CHECK(jid_full(&j, out, sizeof out) == 13 && strcmp(out, "example.net/x") == 0);
}

/* Parsing the full form of a parsed JID gives the same JID. */
static void test_round_trip(void)
{
	char out[3 * JID_PART_MAX + 3];

	for (size_t i = 0; i < sizeof valid / sizeof valid[0]; i++) {
		struct jid a, b;
		int n;

		if (jid_parse(&a, valid[i].in, strlen(valid[i].in)) != 0)
			continue;
		n = jid_full(&a, out, sizeof out);
		CHECK(n > 0);
		CHECK(n > 0 && jid_parse(&b, out, (size_t)n) == 0);
		CHECK_STR(a.local, b.local);
		CHECK_STR(a.domain, b.domain);
		CHECK_STR(a.resource, b.resource);
	}
}

/* Every 1- and 2-byte string: no crash, and what is accepted is UTF-8
 * without controls and formats back to itself (after lowercasing). */
static void test_exhaustive_short(void)
{
	unsigned char s[2];
	char out[16];
	struct jid j;
	int accepted = 0;

	for (int a = 0; a < 256; a++) {
		for (int b = -1; b < 256; b++) {
			size_t len = b < 0 ? 1 : 2;
			int n;

			s[0] = (unsigned char)a;
			s[1] = (unsigned char)(b < 0 ? 0 : b);
			if (jid_parse(&j, (const char *)s, len) != 0)
				continue;
			accepted++;
			n = jid_full(&j, out, sizeof out);
			CHECK(n == (int)len || (n == (int)len - 1 && s[len - 1] == '.'));
			for (int i = 0; i < n; i++)
				CHECK((unsigned char)out[i] >= 0x20 && out[i] != 0x7f &&
				      !(out[i] >= 'A' && out[i] <= 'Z'));
		}
	}
	CHECK(accepted > 1000);
}

int main(void)
{
	RUN(test_valid);
	RUN(test_invalid);
	RUN(test_lengths);
	RUN(test_resource_valid);
	RUN(test_format);
	RUN(test_round_trip);
	RUN(test_exhaustive_short);
	return check_exit();
}
