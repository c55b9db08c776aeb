/*
 * randstr.h: random strings from an alphabet, for secrets, generated
 * passwords and stream ids.
 *
 * Each symbol is drawn uniformly: bytes from getrandom() at or above the
 * largest multiple of the alphabet's size are drawn again (rejection
 * sampling), where a plain modulo would favour the alphabet's first symbols.
 */
#ifndef XMPPD_COMMON_RANDSTR_H
#define XMPPD_COMMON_RANDSTR_H

#include <stddef.h>

/* Letters and digits (62 symbols). */
#define RANDSTR_ALNUM "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
/* Letters and digits a person cannot mix up when reading one aloud or
 * typing it (no 0/O, 1/l/I). 57 symbols. */
#define RANDSTR_UNAMBIGUOUS "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"

/* LEN symbols of ALPHABET (2..256 distinct characters) into OUT, then a
 * NUL (OUT holds LEN + 1 bytes). Returns 0, or -errno when the kernel
 * gives no random bytes (OUT is then wiped). Blocks only until the
 * kernel's pool is first seeded. */
int randstr(char *out, size_t len, const char *alphabet);

#endif
