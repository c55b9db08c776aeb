/*
 * ring-internal: the steps ring_push2() is made of, for the ring's own unit
 * tests (which must stop a producer between them, as a crash would) and for
 * any later caller that wants to serialise a message straight into the ring.
 * Not part of the ring's public contract: workers use shm/ring.h.
 */
#ifndef XMPPD_RING_INTERNAL_H
#define XMPPD_RING_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "shm/ring.h"

struct ring_reservation {
	uint64_t pos; /* first cell of the record (free-running) */
	size_t len;   /* payload bytes reserved */
};

/* Reserve a record of LEN payload bytes for PRODUCER (under the ring's
 * mutex, released again before returning). Returns 0, -EAGAIN, -EMSGSIZE,
 * or a negative errno from the mutex. Until ring_commit(), the consumer
 * stops at this record; if the producer dies first, ring_reclaim() skips it. */
int ring_reserve(struct ring *r, uint16_t producer, size_t len, struct ring_reservation *res);
/* Copy LEN bytes to offset OFF of the reserved payload (OFF + LEN <= res->len). */
void ring_fill(struct ring *r, const struct ring_reservation *res, size_t off,
	       const void *data, size_t len);
/* Publish the record to the consumer. */
void ring_commit(struct ring *r, const struct ring_reservation *res);

/* Take and release the producers' mutex without doing anything: lets a test
 * kill a process while it holds the mutex. Returns 0 or -errno. */
int ring_lock(struct ring *r);
void ring_unlock(struct ring *r);

#endif
