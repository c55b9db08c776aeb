/*
 * sessdir-internal: hooks for the session directory's unit tests. Not part
 * of the directory's contract: workers and the supervisor use shm/sessdir.h.
 */
#ifndef XMPPD_SESSDIR_INTERNAL_H
#define XMPPD_SESSDIR_INTERNAL_H

#include <stddef.h>

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

#endif
