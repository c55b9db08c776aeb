/*
 * ring: the multi-producer, single-consumer rings (see shm/ring.h).
 *
 * Record layout: a record starts at a cell boundary with a 16-byte header
 * (state, payload length, producer) followed by the payload, and covers
 * ceil((16 + len) / 64) consecutive cells, wrapping from the last cell to the
 * first. Cells are one cache line, so every record header starts a line.
 *
 * Ordering. The state word is (position << 2 | kind): a state left in a cell
 * by an earlier lap carries an older position and never matches. Beyond
 * that, the consumer never even looks at a cell beyond head:
 *   producer, under the mutex:  header fields, state = RESERVED(pos)  (relaxed)
 *                               head = pos + cells                  (release)
 *   producer, unlocked:         payload; state = COMMITTED(pos)     (release)
 *   consumer:                   head (acquire) -> state (acquire) -> payload
 *                               -> tail = pos + cells               (release)
 *   next producer of the cells: tail (acquire, under the mutex) before writing
 * so payload bytes, however crafted, are never read as a record header.
 *
 * Crashes. The head store is the single point where a reservation takes
 * effect, so a producer that dies holding the mutex leaves either nothing or
 * a complete RESERVED record: the next locker only has to mark the mutex
 * consistent. A RESERVED record whose producer died is turned into SKIP by
 * ring_reclaim(). The consumer keeps nothing outside the ring (its cached
 * head lives in the ring and is never ahead of head), so a respawned owner
 * attaches and pops on; a message whose pop was cut short before the tail
 * store is delivered again (at least once, never lost).
 *
 * Each side caches the other side's counter (producers: tail_seen, under the
 * mutex; consumer: head_seen) and re-reads the shared line only when the
 * cached value says full or empty, so in steady state producers and consumer
 * do not bounce each other's cache lines on every message.
 */
#include "shm/ring.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "shm/ring-internal.h"
#include "shm/shm.h"

#define RING_MAGIC 0x58524e4731000000ull /* "XRNG1" */
#define RING_CELL ((uint64_t)SHM_CACHELINE)
#define RING_MIN_CELLS 2u
#define RING_MAX_CELLS (1u << 25) /* 2 GiB of cells: lengths fit in uint32_t */

enum ring_kind {
	RING_RESERVED = 1,
	RING_COMMITTED = 2,
	RING_SKIP = 3,
};

struct ring_record {
	_Atomic uint64_t state; /* position << 2 | enum ring_kind */
	uint32_t len;           /* payload bytes */
	uint16_t producer;
	uint16_t pad;
};

#define RING_HEADER_BYTES ((uint64_t)sizeof(struct ring_record))

struct ring {
	/* Fixed by ring_init(). */
	_Alignas(SHM_CACHELINE) uint64_t magic;
	uint64_t cell_count; /* power of two */
	uint64_t max_payload;

	/* Producers, under lock. */
	_Alignas(SHM_CACHELINE) pthread_mutex_t lock;
	_Atomic uint64_t head; /* next cell to reserve */
	uint64_t tail_seen;    /* a past value of tail */

	/* Consumer. */
	_Alignas(SHM_CACHELINE) _Atomic uint64_t tail; /* next cell to consume */
	uint64_t head_seen;                            /* a past value of head */

	_Alignas(SHM_CACHELINE) unsigned char cells[];
};

_Static_assert(sizeof(struct ring_record) == 16, "record header size");
_Static_assert(sizeof(struct ring_record) <= SHM_CACHELINE, "header fits in one cell");
_Static_assert(offsetof(struct ring, lock) % SHM_CACHELINE == 0, "producer line");
_Static_assert(offsetof(struct ring, tail) % SHM_CACHELINE == 0, "consumer line");
_Static_assert(offsetof(struct ring, tail) - offsetof(struct ring, lock) <= SHM_CACHELINE,
	       "producers' fields in one line");
_Static_assert(offsetof(struct ring, cells) % SHM_CACHELINE == 0, "cells aligned");

static inline uint64_t ring_state(uint64_t pos, enum ring_kind kind)
{
	return pos << 2 | kind;
}

static inline uint64_t ring_cells_for(uint64_t len)
{
	return (RING_HEADER_BYTES + len + RING_CELL - 1) / RING_CELL;
}

static inline struct ring_record *ring_record_at(struct ring *r, uint64_t pos)
{
	return (struct ring_record *)(r->cells + (pos & (r->cell_count - 1)) * RING_CELL);
}

/* Byte index in cells[] of payload byte OFF of the record at POS. */
static inline size_t ring_payload_index(const struct ring *r, uint64_t pos, size_t off)
{
	uint64_t bytes = r->cell_count * RING_CELL;

	return (size_t)((pos * RING_CELL + RING_HEADER_BYTES + off) & (bytes - 1));
}

size_t ring_size(size_t data_bytes)
{
	uint64_t cells = RING_MIN_CELLS;

	if (data_bytes == 0 || data_bytes > (uint64_t)RING_MAX_CELLS * RING_CELL)
		return 0;
	while (cells * RING_CELL < data_bytes)
		cells <<= 1;
	return sizeof(struct ring) + (size_t)(cells * RING_CELL);
}

struct ring *ring_init(void *mem, size_t total_bytes)
{
	struct ring *r = mem;
	uint64_t cells = RING_MIN_CELLS;
	int rc;

	if (!mem || (uintptr_t)mem % SHM_CACHELINE ||
	    total_bytes < sizeof(struct ring) + RING_MIN_CELLS * RING_CELL) {
		errno = EINVAL;
		return NULL;
	}
	while (cells < RING_MAX_CELLS &&
	       sizeof(struct ring) + 2 * cells * RING_CELL <= total_bytes)
		cells <<= 1;

	/* The cells need no clearing: nothing reads a cell beyond head. */
	memset(r, 0, sizeof *r);
	rc = shm_mutex_init(&r->lock);
	if (rc < 0) {
		errno = -rc;
		return NULL;
	}
	r->cell_count = cells;
	r->max_payload = cells * RING_CELL - RING_HEADER_BYTES;
	r->magic = RING_MAGIC;
	return r;
}

struct ring *ring_attach(void *mem)
{
	struct ring *r = mem;

	if (!r || r->magic != RING_MAGIC) {
		errno = EINVAL;
		return NULL;
	}
	return r;
}

size_t ring_max_payload(struct ring *r)
{
	return (size_t)r->max_payload;
}

int ring_lock(struct ring *r)
{
	int rc = shm_mutex_lock(&r->lock);

	/* rc == 1: the holder died; the ring needs no repair (see the top). */
	return rc < 0 ? rc : 0;
}

void ring_unlock(struct ring *r)
{
	shm_mutex_unlock(&r->lock);
}

int ring_reserve(struct ring *r, uint16_t producer, size_t len, struct ring_reservation *res)
{
	struct ring_record *rec;
	uint64_t head, cells;
	int rc;

	if (len > r->max_payload)
		return -EMSGSIZE;
	cells = ring_cells_for(len);

	rc = ring_lock(r);
	if (rc < 0)
		return rc;
	head = atomic_load_explicit(&r->head, memory_order_relaxed);
	if (head + cells - r->tail_seen > r->cell_count) {
		r->tail_seen = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (head + cells - r->tail_seen > r->cell_count) {
			ring_unlock(r);
			return -EAGAIN;
		}
	}
	rec = ring_record_at(r, head);
	rec->len = (uint32_t)len;
	rec->producer = producer;
	rec->pad = 0;
	atomic_store_explicit(&rec->state, ring_state(head, RING_RESERVED), memory_order_relaxed);
	atomic_store_explicit(&r->head, head + cells, memory_order_release);
	ring_unlock(r);

	res->pos = head;
	res->len = len;
	return 0;
}

void ring_fill(struct ring *r, const struct ring_reservation *res, size_t off,
	       const void *data, size_t len)
{
	size_t bytes = (size_t)(r->cell_count * RING_CELL);
	size_t at, first;

	assert(off <= res->len && len <= res->len - off);
	if (len == 0)
		return;
	at = ring_payload_index(r, res->pos, off);
	first = len < bytes - at ? len : bytes - at;
	memcpy(r->cells + at, data, first);
	memcpy(r->cells, (const unsigned char *)data + first, len - first);
}

void ring_commit(struct ring *r, const struct ring_reservation *res)
{
	atomic_store_explicit(&ring_record_at(r, res->pos)->state,
			      ring_state(res->pos, RING_COMMITTED), memory_order_release);
}

int ring_push2(struct ring *r, uint16_t producer, const void *a, size_t alen,
	       const void *b, size_t blen)
{
	struct ring_reservation res;
	int rc;

	if (alen > r->max_payload || blen > r->max_payload - alen)
		return -EMSGSIZE;
	if (alen + blen == 0)
		return -EINVAL; /* ring_pop() returns 0 for "nothing to pop" */
	rc = ring_reserve(r, producer, alen + blen, &res);
	if (rc < 0)
		return rc;
	ring_fill(r, &res, 0, a, alen);
	ring_fill(r, &res, alen, b, blen);
	ring_commit(r, &res);
	return 0;
}

int ring_push(struct ring *r, uint16_t producer, const void *data, size_t len)
{
	return ring_push2(r, producer, data, len, NULL, 0);
}

long ring_pop(struct ring *r, void *buf, size_t cap)
{
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	size_t bytes = (size_t)(r->cell_count * RING_CELL);

	for (;;) {
		struct ring_record *rec;
		uint64_t state, cells;
		size_t len, at, first;

		if (tail == r->head_seen) {
			r->head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
			if (tail == r->head_seen)
				return 0;
		}
		rec = ring_record_at(r, tail);
		state = atomic_load_explicit(&rec->state, memory_order_acquire);
		if (state == ring_state(tail, RING_RESERVED))
			return 0; /* its producer rings the doorbell after commit */
		len = rec->len;
		cells = ring_cells_for(len);
		if ((state != ring_state(tail, RING_COMMITTED) &&
		     state != ring_state(tail, RING_SKIP)) ||
		    cells > r->head_seen - tail || len == 0)
			return -EIO;
		if (state == ring_state(tail, RING_SKIP)) {
			tail += cells;
			atomic_store_explicit(&r->tail, tail, memory_order_release);
			continue;
		}
		if (len > cap)
			return -EMSGSIZE;
		at = ring_payload_index(r, tail, 0);
		first = len < bytes - at ? len : bytes - at;
		memcpy(buf, r->cells + at, first);
		memcpy((unsigned char *)buf + first, r->cells, len - first);
		atomic_store_explicit(&r->tail, tail + cells, memory_order_release);
		return (long)len;
	}
}

int ring_reclaim(struct ring *r, uint16_t producer)
{
	uint64_t head, pos;
	int rc, count = 0;

	rc = ring_lock(r);
	if (rc < 0)
		return rc;
	/* The consumer may move tail on while we walk; the records it passes
	 * stay intact, since refilling their cells needs the mutex we hold. */
	head = atomic_load_explicit(&r->head, memory_order_relaxed);
	pos = atomic_load_explicit(&r->tail, memory_order_acquire);
	while (pos != head) {
		struct ring_record *rec = ring_record_at(r, pos);
		uint64_t expect = ring_state(pos, RING_RESERVED);
		uint64_t cells = ring_cells_for(rec->len);

		if (cells > head - pos)
			break; /* cannot happen unless the ring was overwritten */
		/* A CAS, not load-then-store: a record committed in between
		 * (by a producer that was not dead after all) stays committed. */
		if (rec->producer == producer &&
		    atomic_compare_exchange_strong_explicit(&rec->state, &expect,
							    ring_state(pos, RING_SKIP),
							    memory_order_release,
							    memory_order_relaxed))
			count++;
		pos += cells;
	}
	ring_unlock(r);
	return count;
}

uint64_t ring_used_bytes(struct ring *r)
{
	/* tail first: head only grows, so the difference is never negative. */
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);

	return (head - tail) * RING_CELL;
}
