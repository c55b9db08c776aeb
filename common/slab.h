/*
 * slab.h: size-class pools for what a session keeps while it lasts.
 *
 * A worker allocates a session's long-lived objects (struct conn, the c2s
 * state, the bound JID, the last presence, the parser's saved stream
 * header) in the middle of a login's short-lived ones (expat parsers, SASL
 * and TLS handshake state). From glibc's one heap, each survivor then pins
 * the page it shares with freed memory: 10,000 idle sessions kept ~8 KB of
 * heap each for ~1.2 KB in use. Objects from these pools live on pages of
 * their own (mmap, never the heap), packed by size, and a closed session's
 * objects serve the next session.
 *
 * Not thread-safe: a worker is one thread. The caller passes the size it
 * asked for again when freeing (no header per object). Memory goes back to
 * the pool, not to the kernel. Sizes above SLAB_MAX go to malloc.
 * Under AddressSanitizer free objects are poisoned, so a use after
 * slab_free is still reported.
 */
#ifndef XMPPD_COMMON_SLAB_H
#define XMPPD_COMMON_SLAB_H

#include <stddef.h>

#define SLAB_MAX 4096

/* Zeroed memory for N bytes (N > 0), or NULL. */
void *slab_alloc(size_t n);
/* P from slab_alloc(N), or NULL. */
void slab_free(void *p, size_t n);
/* A copy of S (strlen + 1 bytes) and its release. */
char *slab_strdup(const char *s);
void slab_free_str(char *s);
/* The bytes an object of N takes in its pool (the rounded size). */
size_t slab_size(size_t n);

struct slab_stats {
	size_t mapped;  /* bytes mapped for pools */
	size_t in_use;  /* bytes handed out (rounded sizes) */
};
void slab_stats(struct slab_stats *st);

#endif
