/*
 * ring: one multi-producer, single-consumer message ring per worker, in the
 * shared segment. Other workers push stanzas for connections that the
 * owning worker holds; the owner pops them after its eventfd doorbell rings
 * (the doorbell itself is the caller's business, not this module's).
 *
 * Storage is an array of fixed-size cells; a message occupies one or more
 * consecutive cells (wrapping at the end of the array). Head (next cell to
 * reserve) and tail (next cell to consume) are free-running 64-bit counters,
 * each on its own cache line. Producers reserve under a robust process-
 * shared mutex, which also stamps the first cell with the producer's worker
 * id and the RESERVED state, then copy the payload outside the lock and
 * publish the first cell as COMMITTED with a release store. The consumer
 * takes no lock: it reads the first cell with acquire ordering, copies, and
 * frees the cells by advancing tail (release). States carry the position
 * they were written for, so nothing left from an earlier lap is mistaken
 * for a current record. Details in shm/ring.c.
 *
 * A producer that dies between reserve and commit would block the consumer
 * forever; the supervisor calls ring_reclaim() for the dead worker's id
 * after reaping it, which turns such records into SKIP records the consumer
 * steps over. A producer that dies holding the mutex is detected by the next
 * locker (EOWNERDEAD) and the mutex is made consistent again.
 *
 * A consumer that dies leaves its ring as it is: the respawned worker pops
 * the queued messages, finds their connections gone (generation mismatch)
 * and applies the offline rules, so nothing accepted is silently dropped.
 */
#ifndef XMPPD_RING_H
#define XMPPD_RING_H

#include <stddef.h>
#include <stdint.h>

struct ring;

/* Bytes needed for a ring with at least DATA_BYTES of storage: 64-byte cells,
 * their count rounded up to a power of two (so DATA_BYTES of 1 MiB + 1 gives
 * 2 MiB). Returns 0 when DATA_BYTES is 0 or above 2 GiB. ring_init() takes
 * the largest power-of-two ring that fits in TOTAL_BYTES (NULL and errno on
 * error); neither needs zeroed memory. */
size_t ring_size(size_t data_bytes);
struct ring *ring_init(void *mem, size_t total_bytes);
struct ring *ring_attach(void *mem);

/* Largest payload one push can carry (must be >= max stanza size + header):
 * the whole storage minus one 16-byte record header, so a message that large
 * waits for an empty ring. Size rings at several times the largest stanza. */
size_t ring_max_payload(struct ring *r);

/* Push one message of LEN bytes from worker PRODUCER.
 * Returns 0; -EAGAIN when the ring has no room now (caller keeps the message
 * and retries later, never drops it); -EMSGSIZE when LEN can never fit;
 * -EINVAL when LEN is 0. */
int ring_push(struct ring *r, uint16_t producer, const void *data, size_t len);

/* Push two pieces as one message (header + payload without a copy). */
int ring_push2(struct ring *r, uint16_t producer, const void *a, size_t alen,
	       const void *b, size_t blen);

/* Pop the next committed message into BUF (capacity CAP).
 * Returns its length (> 0), 0 when the ring is empty or the next message is
 * not committed yet, -EMSGSIZE when CAP is too small (message left in place),
 * -EIO if the ring is corrupt (a bug: log it loudly).
 * Consumer (the owning worker) only. */
long ring_pop(struct ring *r, void *buf, size_t cap);

/* Supervisor, after reaping worker PRODUCER and before respawning its slot
 * (the new process pushes with the same id): turn that producer's reserved
 * but uncommitted records into skip records. Returns how many, or -errno. */
int ring_reclaim(struct ring *r, uint16_t producer);

uint64_t ring_used_bytes(struct ring *r);

#endif
