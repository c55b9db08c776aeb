/*
 * check: the unit tests' few macros. Each test case is a function; RUN()
 * prints "ok NAME" or "FAIL NAME: file:line: expression" and the program
 * exits non-zero if any case failed (check_exit()). tests/run counts these
 * lines into the suite's "N passed, M failed".
 */
#ifndef XMPPD_CHECK_H
#define XMPPD_CHECK_H

#include <stdio.h>
#include <string.h>

static int check_failed_cases, check_passed_cases;
static int check_case_failed;
static char check_case_why[512];

#define CHECK(expr)                                                                   \
	do {                                                                          \
		if (!(expr)) {                                                        \
			if (!check_case_failed)                                       \
				snprintf(check_case_why, sizeof check_case_why,       \
					 "%s:%d: %s", __FILE__, __LINE__, #expr);     \
			check_case_failed = 1;                                        \
		}                                                                     \
	} while (0)

#define CHECK_STR(a, b) CHECK(strcmp((a), (b)) == 0)

#define RUN(fn)                                                                       \
	do {                                                                          \
		check_case_failed = 0;                                                \
		fn();                                                                 \
		if (check_case_failed) {                                              \
			check_failed_cases++;                                         \
			printf("FAIL %s: %s\n", #fn, check_case_why);                 \
		} else {                                                              \
			check_passed_cases++;                                         \
			printf("ok %s\n", #fn);                                       \
		}                                                                     \
		fflush(stdout);                                                       \
	} while (0)

static inline int check_exit(void)
{
	return check_failed_cases ? 1 : 0;
}

#endif
