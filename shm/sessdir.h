/*
 * sessdir: the session directory, full and bare JID -> where the session lives.
 *
 * An open-addressing table in the shared segment, probed from the hash of the
 * BARE JID, so every resource of one account sits in one probe chain and a
 * bare-JID lookup walks a single chain. Writers (the owning worker on bind
 * and close; the supervisor when it purges a dead worker) serialise on a
 * robust process-shared mutex; readers take no lock: a slot is one atomic
 * word naming an entry record, each record carries a sequence counter (odd
 * while being written), and readers retry a slot whose word or record
 * changed under them. Writers never rewrite a record a slot names (they
 * write a new one and swap the slot), so readers never wait for a writer,
 * dead or alive. Deleted slots become tombstones, reused by later inserts in
 * the same chain, so chains end at a never-used slot; the index is rebuilt
 * when tombstones pile up. Details in shm/sessdir.c.
 *
 * Each entry also records connection id and generation: a reader that
 * routes to an entry whose connection has since closed learns it from the
 * owning worker, which checks the generation before delivering.
 */
#ifndef XMPPD_SESSDIR_H
#define XMPPD_SESSDIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SESSDIR_JID_MAX 256     /* bytes including NUL: full JIDs are bound only if shorter */
#define SESSDIR_ADDR_MAX 48

struct sessdir;

/* A copy of one entry, as readers see it. */
struct sessdir_entry {
	char jid[SESSDIR_JID_MAX]; /* full JID, normalised: local@domain/resource */
	uint16_t bare_len;          /* length of the bare part (local@domain) */
	uint16_t worker;            /* worker slot that owns the connection */
	uint32_t conn_id;           /* connection index inside that worker */
	uint32_t conn_gen;          /* connection generation (reuse guard) */
	int16_t priority;           /* presence priority; meaningful when available */
	uint8_t available;          /* 1 after initial presence, 0 after unavailable */
	uint8_t tls;                /* 1 if the stream is encrypted */
	int64_t since_ms;           /* bind time, unix ms */
	char address[SESSDIR_ADDR_MAX]; /* client's "ip:port" */
};

/* Size in bytes of a directory holding up to CAPACITY sessions (the table
 * itself is sized larger to keep probe chains short). */
size_t sessdir_size(uint32_t capacity);
/* Initialise MEM (sessdir_size(capacity) bytes of shared memory). */
struct sessdir *sessdir_init(void *mem, uint32_t capacity);
/* Attach to an initialised directory at MEM (after fork: same pointer). */
struct sessdir *sessdir_attach(void *mem);

/* Insert E. If an entry with the same full JID exists it is replaced and
 * copied to *REPLACED (when REPLACED is not NULL) and 1 is returned, so the
 * caller can close the old session with <conflict/>. Returns 0 when added,
 * -ENOSPC when full, -ENAMETOOLONG when the JID does not fit (no NUL within
 * SESSDIR_JID_MAX bytes), -EINVAL when its bare part is empty. E->bare_len
 * is ignored and recomputed (up to the first '/'). */
int sessdir_add(struct sessdir *sd, const struct sessdir_entry *e,
		struct sessdir_entry *replaced);

/* Remove the entry for JID if it still belongs to (worker, conn_id, conn_gen).
 * Returns 0, or -ENOENT. */
int sessdir_del(struct sessdir *sd, const char *jid, uint16_t worker,
		uint32_t conn_id, uint32_t conn_gen);

/* Update presence state of the entry owned by (worker, conn_id, conn_gen). */
int sessdir_set_presence(struct sessdir *sd, const char *jid, uint16_t worker,
			 uint32_t conn_id, uint32_t conn_gen, bool available,
			 int16_t priority);

/* Exact full-JID lookup. Returns 0 and fills OUT, or -ENOENT. */
int sessdir_lookup_full(struct sessdir *sd, const char *jid, struct sessdir_entry *out);

/* All sessions of bare JID BARE (any resource), up to MAX; returns how many
 * were written to OUT (the total may be larger; *TOTAL gets it if non-NULL). */
int sessdir_lookup_bare(struct sessdir *sd, const char *bare, struct sessdir_entry *out,
			int max, int *total);

/* Remove every entry owned by WORKER (supervisor, after reaping it; also
 * recovers the mutex if the dead worker held it). Returns entries removed. */
int sessdir_purge_worker(struct sessdir *sd, uint16_t worker);

uint32_t sessdir_count(struct sessdir *sd);

/* Call FN for a consistent copy of every live entry (order unspecified).
 * FN returns non-zero to stop. Entries added or removed during the walk may
 * or may not be seen; one replaced during it may be seen in both versions. */
void sessdir_foreach(struct sessdir *sd, int (*fn)(const struct sessdir_entry *, void *),
		     void *arg);

#endif
