/*
 * sessdir-internal: hooks for the session directory's unit tests. Not part
 * of the directory's contract: workers and the supervisor use shm/sessdir.h.
 */
#ifndef XMPPD_SESSDIR_INTERNAL_H
#define XMPPD_SESSDIR_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shm/sessdir.h"

/* Take and release the writers' mutex, doing nothing else: lets a test kill
 * a process while it holds the mutex. sessdir_lock() repairs the directory
 * first if the previous holder died. Returns 0 or -errno. */
int sessdir_lock(struct sessdir *sd);
void sessdir_unlock(struct sessdir *sd);

/* Check every invariant the lock-free readers rely on (chains unbroken, one
 * slot per live record, counts and free list exact). Takes the mutex.
 * Returns 0, or -EUCLEAN with the first violation described in WHY. */
int sessdir_verify(struct sessdir *sd, char *why, size_t cap);

/* One probe step of a lock-free lookup, cut where a reader can be preempted:
 * after it loaded a slot word, before it followed the word to its record.
 * Lets a test run writers in that window, deterministically. */
struct sessdir_probe {
	uint32_t gen;  /* index generation the word was loaded from */
	uint32_t slot;
	uint64_t word;
};
/* Load, as a reader does, the word of the slot holding full JID. Takes the
 * mutex to find the slot. Returns 0, -ENOENT, or -errno from the mutex. */
int sessdir_probe_begin(struct sessdir *sd, const char *jid, struct sessdir_probe *p);
/* Finish that step with the real reader's code, for KEY (a bare JID if BARE,
 * else a full one). Returns 1 with the entry the slot holds in *OUT, 0 when
 * it holds nothing matching KEY, -1 when the slot is never-used. */
int sessdir_probe_end(struct sessdir *sd, const struct sessdir_probe *p, const char *key,
		      bool bare, struct sessdir_entry *out);

#endif
