/* randstr.c: uniform random strings (see randstr.h). */
#include "common/randstr.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

int randstr(char *out, size_t len, const char *alphabet)
{
	size_t symbols = strlen(alphabet);
	if (symbols < 2 || symbols > 256)
		return -EINVAL;
	/* a byte below LIMIT maps uniformly onto the alphabet by modulo */
	unsigned limit = 256 - 256 % (unsigned)symbols;
	unsigned char rnd[64];
	size_t have = 0, used = 0, n = 0;
	int rc = 0;

	while (n < len) {
		if (used == have) {
			ssize_t got = getrandom(rnd, sizeof rnd, 0);
			if (got < 0 && errno == EINTR)
				continue;
			if (got <= 0) {
				rc = got < 0 ? -errno : -EIO;
				break;
			}
			have = (size_t)got;
			used = 0;
		}
		if (rnd[used] < limit)
			out[n++] = alphabet[rnd[used] % symbols];
		used++;
	}
	explicit_bzero(rnd, sizeof rnd);
	if (rc < 0) {
		explicit_bzero(out, len + 1);
		return rc;
	}
	out[n] = '\0';
	return 0;
}
