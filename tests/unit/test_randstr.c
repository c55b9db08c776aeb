/* Unit tests: common/randstr.c (uniform random strings). */
#include <errno.h>
#include <string.h>

#include "common/randstr.h"
#include "tests/unit/check.h"

static void test_length_and_alphabet(void)
{
	char out[65];
	for (size_t len = 0; len <= 64; len++) {
		memset(out, 'X', sizeof out);
		CHECK(randstr(out, len, RANDSTR_UNAMBIGUOUS) == 0);
		CHECK(strlen(out) == len);
		for (size_t i = 0; i < len; i++)
			CHECK(strchr(RANDSTR_UNAMBIGUOUS, out[i]) != NULL);
	}
	CHECK(randstr(out, 8, "a") == -EINVAL);
	CHECK(randstr(out, 8, "") == -EINVAL);
}

/* 57 symbols do not divide 256: a plain modulo would draw each of the
 * first 28 symbols 5/256 of the time and the rest 4/256, i.e. 25% more.
 * Over 570,000 draws (10,000 per symbol) that is ~11,100 against ~8,900,
 * while a uniform draw stays within ~500 of 10,000 (5 standard
 * deviations); so the two halves' means tell them apart for certain. */
static void test_uniform(void)
{
	enum { SYMBOLS = 57, PER = 10000 };
	static char buf[SYMBOLS * PER + 1];
	unsigned long count[256] = { 0 };
	CHECK(sizeof RANDSTR_UNAMBIGUOUS - 1 == SYMBOLS);
	CHECK(randstr(buf, sizeof buf - 1, RANDSTR_UNAMBIGUOUS) == 0);
	for (size_t i = 0; i + 1 < sizeof buf; i++)
		count[(unsigned char)buf[i]]++;
	double first = 0, rest = 0;
	for (int k = 0; k < SYMBOLS; k++) {
		unsigned long c = count[(unsigned char)RANDSTR_UNAMBIGUOUS[k]];
		CHECK(c > PER - 600 && c < PER + 600);
		if (k < 28)
			first += (double)c / 28;
		else
			rest += (double)c / 29;
	}
	CHECK(first / rest < 1.03 && rest / first < 1.03);
}

static void test_distinct(void)
{
	char a[25], b[25];
	CHECK(randstr(a, 24, RANDSTR_ALNUM) == 0);
	CHECK(randstr(b, 24, RANDSTR_ALNUM) == 0);
	CHECK(strcmp(a, b) != 0);
}

int main(void)
{
	RUN(test_length_and_alphabet);
	RUN(test_uniform);
	RUN(test_distinct);
	return check_exit();
}
