/*
 * slab.c: size-class pools (see slab.h).
 *
 * Classes: 16-byte steps to 256, 64-byte steps to 1024, 256-byte steps to
 * SLAB_MAX: at most 25% lost to rounding above 256 and 50% below it for the
 * tiniest strings. Each class carves objects from its current 64 KiB
 * block, front to back, so only the pages that objects reached are ever
 * touched; freed objects go on the class's free list (the link in their
 * first word) and are handed out first.
 */
#include "common/slab.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define BLOCK_SIZE (64u * 1024)
#define CLASSES (16 + 12 + 12)

struct pool {
	void *free_list;
	char *next; /* carving point in the current block */
	char *end;
};

static struct pool pools[CLASSES];
static size_t mapped, in_use;

static unsigned class_of(size_t n)
{
	if (n <= 256)
		return (unsigned)((n + 15) / 16) - 1; /* 0..15 */
	if (n <= 1024)
		return 16 + (unsigned)((n - 256 + 63) / 64) - 1; /* 16..27 */
	return 28 + (unsigned)((n - 1024 + 255) / 256) - 1;    /* 28..39 */
}

static size_t class_size(unsigned k)
{
	if (k < 16)
		return (k + 1) * 16;
	if (k < 28)
		return 256 + (k - 15) * 64;
	return 1024 + (k - 27) * 256;
}

size_t slab_size(size_t n)
{
	return n == 0 || n > SLAB_MAX ? n : class_size(class_of(n));
}

void *slab_alloc(size_t n)
{
	if (n == 0 || n > SLAB_MAX)
		return n ? calloc(1, n) : NULL;
	unsigned k = class_of(n);
	size_t sz = class_size(k);
	struct pool *pl = &pools[k];
	void *p = pl->free_list;
	if (p) {
		UNPOISON(p, sz);
		memcpy(&pl->free_list, p, sizeof(void *));
	} else {
		if ((size_t)(pl->end - pl->next) < sz) {
			/* the tail of the old block too small for one object stays unused */
			char *b = mmap(NULL, BLOCK_SIZE, PROT_READ | PROT_WRITE,
				       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (b == MAP_FAILED)
				return NULL;
			mapped += BLOCK_SIZE;
			pl->next = b;
			pl->end = b + BLOCK_SIZE;
		}
		p = pl->next;
		pl->next += sz;
	}
	in_use += sz;
	memset(p, 0, sz);
	return p;
}

void slab_free(void *p, size_t n)
{
	if (!p)
		return;
	if (n == 0 || n > SLAB_MAX) {
		free(p);
		return;
	}
	unsigned k = class_of(n);
	size_t sz = class_size(k);
	struct pool *pl = &pools[k];
	memcpy(p, &pl->free_list, sizeof(void *));
	pl->free_list = p;
	in_use -= sz;
	POISON(p, sz);
}

char *slab_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = slab_alloc(n);
	if (p)
		memcpy(p, s, n);
	return p;
}

void slab_free_str(char *s)
{
	if (s)
		slab_free(s, strlen(s) + 1);
}

void slab_stats(struct slab_stats *st)
{
	st->mapped = mapped;
	st->in_use = in_use;
}
