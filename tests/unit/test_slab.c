/* Unit tests: common/slab.c (size-class pools for long-lived objects). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/slab.h"
#include "tests/unit/check.h"

static void test_sizes(void)
{
	/* every size up to SLAB_MAX rounds up to a class no more than 25%
	 * bigger (or 16 bytes for the small ones) and never below the request */
	for (size_t n = 1; n <= SLAB_MAX; n++) {
		size_t s = slab_size(n);
		CHECK(s >= n);
		CHECK(s - n < 16 || (s - n) * 4 <= n);
		CHECK(s % 16 == 0);
		CHECK(slab_size(s) == s); /* a class size is its own class */
	}
	CHECK(slab_size(SLAB_MAX + 1) == SLAB_MAX + 1);
	CHECK(slab_size(0) == 0);
}

static void test_zeroed_and_reused(void)
{
	struct slab_stats a, b;
	slab_stats(&a);
	unsigned char *p = slab_alloc(100);
	CHECK(p != NULL);
	for (int i = 0; i < 100; i++)
		CHECK(p[i] == 0);
	memset(p, 0xAB, 100);
	slab_stats(&b);
	CHECK(b.in_use == a.in_use + slab_size(100));
	slab_free(p, 100);
	/* the same class hands the freed object out again, zeroed */
	unsigned char *q = slab_alloc(97);
	CHECK(q == p);
	for (int i = 0; i < 97; i++)
		CHECK(q[i] == 0);
	slab_free(q, 97);
	slab_stats(&b);
	CHECK(b.in_use == a.in_use);
}

static void test_distinct_and_packed(void)
{
	/* many live objects of one class: no two overlap, and they are packed
	 * (a 64 KiB block holds 64 KiB / size of them) */
	enum { N = 5000, SZ = 48 };
	struct slab_stats a, b;
	slab_stats(&a);
	unsigned char **v = calloc(N, sizeof *v);
	CHECK(v != NULL);
	for (int i = 0; i < N; i++) {
		v[i] = slab_alloc(SZ);
		CHECK(v[i] != NULL);
		memset(v[i], i & 0xff, SZ);
	}
	for (int i = 0; i < N; i++)
		for (int j = 0; j < SZ; j++)
			if (v[i][j] != (unsigned char)(i & 0xff)) {
				CHECK(!"an object was overwritten by another");
				i = N;
				break;
			}
	slab_stats(&b);
	CHECK(b.in_use - a.in_use == (size_t)N * SZ);
	CHECK(b.mapped - a.mapped <= ((size_t)N * SZ / 65536 + 1) * 65536);
	/* free every other one, then allocate as many: no new block */
	for (int i = 0; i < N; i += 2)
		slab_free(v[i], SZ);
	struct slab_stats c;
	slab_stats(&c);
	for (int i = 0; i < N; i += 2)
		v[i] = slab_alloc(SZ);
	struct slab_stats d;
	slab_stats(&d);
	CHECK(d.mapped == c.mapped);
	for (int i = 0; i < N; i++)
		slab_free(v[i], SZ);
	free(v);
}

static void test_strings_and_large(void)
{
	char *s = slab_strdup("user1@localhost/res");
	CHECK(s != NULL);
	CHECK_STR(s, "user1@localhost/res");
	slab_free_str(s);
	slab_free_str(NULL);
	slab_free(NULL, 10);
	/* above SLAB_MAX: plain calloc/free, still zeroed */
	unsigned char *big = slab_alloc(SLAB_MAX + 100);
	CHECK(big != NULL);
	CHECK(big[0] == 0 && big[SLAB_MAX + 99] == 0);
	slab_free(big, SLAB_MAX + 100);
	CHECK(slab_alloc(0) == NULL);
}

int main(void)
{
	RUN(test_sizes);
	RUN(test_zeroed_and_reused);
	RUN(test_distinct_and_packed);
	RUN(test_strings_and_large);
	return check_exit();
}
