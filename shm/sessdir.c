/*
 * sessdir: the session directory (contract in shm/sessdir.h).
 *
 * Two arrays. The INDEX is the open-addressing table: a power of two of
 * 64-bit slots, at least twice the capacity, probed linearly from the hash of
 * the bare JID. A slot is EMPTY (never used since the index was last built),
 * TOMB (deleted), or (upper 32 bits of the hash << 32 | record + 1). The
 * RECORDS hold the entries, capacity + 1 of them, each with its own sequence
 * counter, odd while the record is written.
 *
 * A slot is a single atomic word, so readers never see a torn slot, and
 * writers never rewrite a record that a slot points to: an add writes a free
 * record and then publishes it with one release store into the slot; a
 * replace or a presence change writes a fresh record and swaps the slot to
 * it; only then is the old record freed. (That is what the one spare record
 * is for.) So a reader waits for nobody. The one thing it must check is that
 * the record it followed a slot to is still the one the slot names: after
 * every copy, before looking at it, it reads the slot again and starts over
 * on that slot if the word changed or the record's counter moved since the
 * copy (two swaps in a row give the slot its old word back, naming a
 * rewritten record: the free stack is LIFO). A copy that passes is what the
 * slot named at one instant of the lookup, so each slot yields its own entry
 * once; a copy that fails may be another entry of the same account, which a
 * bare lookup would otherwise take for this slot's (see read_slot).
 *
 * Chains. Inserts take the first tombstone (or, failing one, the first
 * never-used slot) on the chain. A slot becomes EMPTY again only when the
 * slot after it is EMPTY, so for every live entry the slots from its home to
 * its own slot are never EMPTY: a lookup that runs concurrently with writers
 * never stops short of an entry that stays put. Tombstones that pile up in
 * the middle of chains are swept by rebuilding the index into the second
 * index array and flipping index_gen; a reader whose lookup comes up short
 * while index_gen moved looks again. Lookups copy only records whose slot
 * carries the key's 32-bit hash tag, so a probe step is one 8-byte load.
 *
 * Crashes. Writers hold a robust mutex. If one dies holding it, the next
 * locker repairs: the active index is the truth (a slot only ever names a
 * complete record); records that no slot names are freed, the free list and
 * the counts are rebuilt from that, and the index is rebuilt. Readers cannot
 * be stuck by a dead writer, since no slot names a half-written record.
 *
 * The data race a seqlock has by nature is kept inside the C memory model:
 * records are read and written in 64-bit words with relaxed atomics, between
 * the counter accesses and fences (Boehm, "Can seqlocks get along with
 * programming language memory models?", 2012).
 */
#include "shm/sessdir.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "shm/sessdir-internal.h"
#include "shm/shm.h"

#define SESSDIR_MAGIC 0x5853455353444952ull /* "XSESSDIR" */
#define SESSDIR_CAPACITY_MAX (1u << 24)
#define SESSDIR_MIN_SLOTS 16u

#define SLOT_EMPTY 0ull
#define SLOT_TOMB UINT64_MAX
#define NO_SLOT UINT32_MAX

#define ENTRY_WORDS (sizeof(struct sessdir_entry) / sizeof(uint64_t))
_Static_assert(sizeof(struct sessdir_entry) % sizeof(uint64_t) == 0,
	       "entries are copied in 64-bit words");

union sessdir_words {
	uint64_t w[ENTRY_WORDS];
	struct sessdir_entry e;
};

struct sessdir_record {
	_Atomic uint32_t seq; /* odd while written */
	uint32_t mark;        /* repair and verify scratch, writers only */
	/* Read by readers only between two reads of seq: */
	uint64_t live; /* 1 while the record holds an entry */
	union sessdir_words u;
};

struct sessdir {
	/* Fixed at init (index_gen aside); read by every lookup. */
	_Alignas(SHM_CACHELINE) uint64_t magic;
	uint64_t seed;
	uint32_t capacity;
	uint32_t record_count; /* capacity + 1 */
	uint32_t slot_count;   /* power of two >= 2 * capacity */
	_Atomic uint32_t index_gen; /* index[gen & 1] is active; bumped by a rebuild */
	uint64_t index_off[2];
	uint64_t records_off;
	uint64_t free_off;

	/* Writers, under lock. */
	_Alignas(SHM_CACHELINE) pthread_mutex_t lock;
	uint32_t free_top;                /* free records on the free stack */
	uint32_t tombstones;              /* TOMB slots in the active index */
	_Atomic uint32_t count;           /* live entries */
	_Atomic uint32_t records_used;    /* records below this were written once */
};

_Static_assert(offsetof(struct sessdir, lock) % SHM_CACHELINE == 0, "writers' line");
_Static_assert(offsetof(struct sessdir, lock) == SHM_CACHELINE, "readers' fields in one line");
_Static_assert(sizeof(struct sessdir_record) % sizeof(uint64_t) == 0, "records word aligned");

struct sessdir_layout {
	uint32_t slot_count;
	uint32_t record_count;
	uint64_t index_off[2];
	uint64_t records_off;
	uint64_t free_off;
	uint64_t size;
};

static uint64_t align_line(uint64_t v)
{
	return (v + SHM_CACHELINE - 1) / SHM_CACHELINE * SHM_CACHELINE;
}

static int sessdir_layout(uint32_t capacity, struct sessdir_layout *l)
{
	if (capacity == 0 || capacity > SESSDIR_CAPACITY_MAX)
		return -EINVAL;
	l->slot_count = SESSDIR_MIN_SLOTS;
	while (l->slot_count < 2 * capacity)
		l->slot_count <<= 1;
	l->record_count = capacity + 1;
	l->index_off[0] = align_line(sizeof(struct sessdir));
	l->index_off[1] = l->index_off[0] + (uint64_t)l->slot_count * sizeof(uint64_t);
	l->records_off = align_line(l->index_off[1] + (uint64_t)l->slot_count * sizeof(uint64_t));
	l->free_off = l->records_off + (uint64_t)l->record_count * sizeof(struct sessdir_record);
	l->size = align_line(l->free_off + (uint64_t)l->record_count * sizeof(uint32_t));
	return 0;
}

static inline _Atomic uint64_t *sd_index(struct sessdir *sd, uint32_t gen)
{
	return (_Atomic uint64_t *)((char *)sd + sd->index_off[gen & 1]);
}

static inline _Atomic uint64_t *sd_active_index(struct sessdir *sd)
{
	return sd_index(sd, atomic_load_explicit(&sd->index_gen, memory_order_relaxed));
}

static inline struct sessdir_record *sd_record(struct sessdir *sd, uint32_t r)
{
	return (struct sessdir_record *)((char *)sd + sd->records_off) + r;
}

static inline uint32_t *sd_free_stack(struct sessdir *sd)
{
	return (uint32_t *)((char *)sd + sd->free_off);
}

static inline bool slot_live(uint64_t w)
{
	return w != SLOT_EMPTY && w != SLOT_TOMB;
}

static inline uint64_t slot_word(uint64_t hash, uint32_t record)
{
	return (hash & 0xffffffff00000000ull) | ((uint64_t)record + 1);
}

static inline uint32_t slot_record(uint64_t w)
{
	return (uint32_t)w - 1;
}

static inline bool slot_tagged(uint64_t w, uint64_t hash)
{
	return (w >> 32) == (hash >> 32);
}

static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	x ^= x >> 31;
	return x;
}

/* Seeded per segment, so probe chains cannot be aimed at from outside. */
static uint64_t sessdir_hash(const struct sessdir *sd, const char *s, size_t len)
{
	uint64_t h = sd->seed ^ (len * 0x9e3779b97f4a7c15ull);
	uint64_t w;

	for (; len >= 8; s += 8, len -= 8) {
		memcpy(&w, s, 8);
		h = (h ^ w) * 0x9e3779b97f4a7c15ull;
		h ^= h >> 29;
	}
	w = 0;
	memcpy(&w, s, len);
	return mix64(h ^ w);
}

static size_t bare_length(const char *jid, size_t len)
{
	const char *slash = memchr(jid, '/', len);

	return slash ? (size_t)(slash - jid) : len;
}

static bool entry_matches(const struct sessdir_entry *e, const char *key, size_t len,
			  bool bare)
{
	if (bare)
		return e->bare_len == len && memcmp(e->jid, key, len) == 0;
	return memcmp(e->jid, key, len + 1) == 0;
}

/* ---- records ---- */

/* Returns 1 with a copy of the entry, 0 if the record is free, -1 if it was
 * being written (retry or move on). *SEQ gets the version copied. */
static int record_read(struct sessdir_record *rec, union sessdir_words *out, uint32_t *seq)
{
	uint32_t before = atomic_load_explicit(&rec->seq, memory_order_acquire);
	uint64_t live;

	*seq = before;
	if (before & 1)
		return -1;
	live = __atomic_load_n(&rec->live, __ATOMIC_RELAXED);
	for (size_t i = 0; i < ENTRY_WORDS; i++)
		out->w[i] = __atomic_load_n(&rec->u.w[i], __ATOMIC_RELAXED);
	atomic_thread_fence(memory_order_acquire);
	if (atomic_load_explicit(&rec->seq, memory_order_relaxed) != before)
		return -1;
	return live == 1;
}

/* Writers only. E == NULL frees the record. Starts from seq | 1 so that a
 * counter left odd by a dead writer (or never initialised) works too. */
static void record_write(struct sessdir_record *rec, const union sessdir_words *e)
{
	uint32_t seq = atomic_load_explicit(&rec->seq, memory_order_relaxed) | 1;

	atomic_store_explicit(&rec->seq, seq, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	__atomic_store_n(&rec->live, e ? 1 : 0, __ATOMIC_RELAXED);
	if (e) {
		for (size_t i = 0; i < ENTRY_WORDS; i++)
			__atomic_store_n(&rec->u.w[i], e->w[i], __ATOMIC_RELAXED);
	}
	atomic_store_explicit(&rec->seq, seq + 1, memory_order_release);
}

/* Write E into a free record, which no slot names yet. Returns its number
 * or -ENOSPC. */
static long record_store(struct sessdir *sd, const union sessdir_words *e)
{
	uint32_t used = atomic_load_explicit(&sd->records_used, memory_order_relaxed);
	uint32_t r;

	if (sd->free_top > 0) {
		r = sd_free_stack(sd)[--sd->free_top];
	} else if (used < sd->record_count) {
		r = used;
	} else {
		return -ENOSPC;
	}
	record_write(sd_record(sd, r), e);
	if (r == used) /* published after the write: foreach reads below it */
		atomic_store_explicit(&sd->records_used, used + 1, memory_order_release);
	return r;
}

static void record_free(struct sessdir *sd, uint32_t r)
{
	record_write(sd_record(sd, r), NULL);
	sd_free_stack(sd)[sd->free_top++] = r;
}

/* ---- readers ---- */

/*
 * Examine slot I of INDEX, whose word the caller loaded (acquire) as W, for
 * KEY. Returns -1 at a never-used slot (the end of the chain), 0 when the
 * slot holds nothing matching, 1 with a consistent copy of a matching live
 * entry in OUT.
 */
static int read_slot(struct sessdir *sd, _Atomic uint64_t *index, uint32_t i, uint64_t w,
		     uint64_t hash, const char *key, size_t len, bool bare,
		     union sessdir_words *out)
{
	for (;;) {
		struct sessdir_record *rec;
		uint64_t again;
		uint32_t seq;
		int rc;

		if (w == SLOT_EMPTY)
			return -1;
		if (w == SLOT_TOMB || !slot_tagged(w, hash) || slot_record(w) >= sd->record_count)
			return 0;
		rec = sd_record(sd, slot_record(w));
		rc = record_read(rec, out, &seq);
		/* The copy is this slot's entry only if the slot still names the
		 * record and the record is still the version copied; a match is
		 * no exception. Between our load of W and the copy, the writers
		 * may replace this slot's entry A (A moves to a new record, W's
		 * record R is freed) and then replace B, another resource of the
		 * same account: B's new version takes R, the top of the LIFO
		 * free stack. The copy of R is then a whole, live B, which a bare
		 * lookup matches: it would count B twice (here and at B's own
		 * slot) and miss A, which was present throughout. Nor is the same
		 * word again enough: two swaps in a row bring R back to this slot
		 * rewritten (ABA), hence the counter. */
		again = atomic_load_explicit(&index[i], memory_order_acquire);
		if (again == w && rc >= 0 &&
		    atomic_load_explicit(&rec->seq, memory_order_acquire) == seq)
			return rc > 0 && entry_matches(&out->e, key, len, bare);
		w = again;
		shm_cpu_relax();
	}
}

/* Walk KEY's chain; store up to MAX matches in OUT (when not NULL). Returns
 * the number of matches; a full-JID key stops at the first. */
static int sessdir_walk(struct sessdir *sd, const char *key, size_t len, bool bare,
			struct sessdir_entry *out, int max)
{
	uint64_t hash = sessdir_hash(sd, key, bare ? len : bare_length(key, len));
	uint32_t mask = sd->slot_count - 1;
	union sessdir_words copy;

	for (;;) {
		uint32_t gen = atomic_load_explicit(&sd->index_gen, memory_order_acquire);
		_Atomic uint64_t *index = sd_index(sd, gen);
		uint32_t i = (uint32_t)hash & mask;
		int found = 0;

		for (uint32_t n = 0; n < sd->slot_count; n++, i = (i + 1) & mask) {
			uint64_t w = atomic_load_explicit(&index[i], memory_order_acquire);
			int rc = read_slot(sd, index, i, w, hash, key, len, bare, &copy);

			if (rc < 0)
				break;
			if (rc == 0)
				continue;
			if (out && found < max)
				out[found] = copy.e;
			found++;
			if (!bare)
				return found;
		}
		/* Came up short (or may have counted twice) only if a rebuild
		 * moved the index under us. */
		if (atomic_load_explicit(&sd->index_gen, memory_order_acquire) == gen)
			return found;
	}
}

int sessdir_lookup_full(struct sessdir *sd, const char *jid, struct sessdir_entry *out)
{
	size_t len = strnlen(jid, SESSDIR_JID_MAX);

	if (len == SESSDIR_JID_MAX)
		return -ENOENT;
	return sessdir_walk(sd, jid, len, false, out, 1) ? 0 : -ENOENT;
}

int sessdir_lookup_bare(struct sessdir *sd, const char *bare, struct sessdir_entry *out,
			int max, int *total)
{
	size_t len = strnlen(bare, SESSDIR_JID_MAX);
	int found = 0;

	if (max < 0)
		max = 0;
	if (len > 0 && len < SESSDIR_JID_MAX)
		found = sessdir_walk(sd, bare, len, true, out, max);
	if (total)
		*total = found;
	return found < max ? found : max;
}

uint32_t sessdir_count(struct sessdir *sd)
{
	return atomic_load_explicit(&sd->count, memory_order_relaxed);
}

void sessdir_foreach(struct sessdir *sd, int (*fn)(const struct sessdir_entry *, void *),
		     void *arg)
{
	uint32_t used = atomic_load_explicit(&sd->records_used, memory_order_acquire);
	union sessdir_words copy;

	/* Walk the records, not the index: an index rebuild cannot make us
	 * miss or repeat an entry. A record being written belongs to an entry
	 * that is being added or removed right now: skip it. */
	for (uint32_t r = 0; r < used; r++) {
		uint32_t seq;
		int rc;

		while ((rc = record_read(sd_record(sd, r), &copy, &seq)) < 0 &&
		       !(atomic_load_explicit(&sd_record(sd, r)->seq, memory_order_relaxed) & 1))
			shm_cpu_relax();
		if (rc > 0 && fn(&copy.e, arg))
			return;
	}
}

/* ---- writers ---- */

static void index_rebuild(struct sessdir *sd)
{
	uint32_t gen = atomic_load_explicit(&sd->index_gen, memory_order_relaxed);
	_Atomic uint64_t *from = sd_index(sd, gen), *to = sd_index(sd, gen + 1);
	uint32_t mask = sd->slot_count - 1;

	/* Readers may still walk TO from two generations ago: atomic stores,
	 * and their gen check sends them round again. */
	for (uint32_t i = 0; i < sd->slot_count; i++)
		atomic_store_explicit(&to[i], SLOT_EMPTY, memory_order_relaxed);
	for (uint32_t i = 0; i < sd->slot_count; i++) {
		uint64_t w = atomic_load_explicit(&from[i], memory_order_relaxed);
		const struct sessdir_entry *e;
		uint32_t j;

		if (!slot_live(w))
			continue;
		e = &sd_record(sd, slot_record(w))->u.e;
		j = (uint32_t)sessdir_hash(sd, e->jid, e->bare_len) & mask;
		while (atomic_load_explicit(&to[j], memory_order_relaxed) != SLOT_EMPTY)
			j = (j + 1) & mask;
		atomic_store_explicit(&to[j], w, memory_order_relaxed);
	}
	atomic_store_explicit(&sd->index_gen, gen + 1, memory_order_release);
	sd->tombstones = 0;
}

/* Sweep tombstones once a quarter of the slots are dead: with at most half
 * of them live, chains then stay short. Amortised: a rebuild of S slots
 * every S/4 deletions. */
static void index_maybe_rebuild(struct sessdir *sd)
{
	if (sd->tombstones > sd->slot_count / 4)
		index_rebuild(sd);
}

/* The dead holder of the mutex may have stopped anywhere; see the top. */
static void sessdir_repair(struct sessdir *sd)
{
	_Atomic uint64_t *index = sd_active_index(sd);
	uint32_t used = atomic_load_explicit(&sd->records_used, memory_order_relaxed);
	uint32_t count = 0, tombs = 0;

	for (uint32_t r = 0; r < used; r++)
		sd_record(sd, r)->mark = 0;
	for (uint32_t i = 0; i < sd->slot_count; i++) {
		uint64_t w = atomic_load_explicit(&index[i], memory_order_relaxed);
		struct sessdir_record *rec;

		if (w == SLOT_EMPTY)
			continue;
		if (w != SLOT_TOMB && slot_record(w) < used) {
			rec = sd_record(sd, slot_record(w));
			if (!(atomic_load_explicit(&rec->seq, memory_order_relaxed) & 1) &&
			    rec->live == 1 && !rec->mark) {
				rec->mark = 1;
				count++;
				continue;
			}
		}
		if (w != SLOT_TOMB)
			atomic_store_explicit(&index[i], SLOT_TOMB, memory_order_release);
		tombs++;
	}
	sd->free_top = 0;
	for (uint32_t r = 0; r < used; r++) {
		struct sessdir_record *rec = sd_record(sd, r);

		if (rec->mark)
			continue;
		if ((atomic_load_explicit(&rec->seq, memory_order_relaxed) & 1) || rec->live)
			record_write(rec, NULL);
		sd_free_stack(sd)[sd->free_top++] = r;
	}
	atomic_store_explicit(&sd->count, count, memory_order_relaxed);
	sd->tombstones = tombs;
	index_rebuild(sd);
}

int sessdir_lock(struct sessdir *sd)
{
	int rc = shm_mutex_lock(&sd->lock);

	if (rc == 1) {
		sessdir_repair(sd);
		rc = 0;
	}
	return rc;
}

void sessdir_unlock(struct sessdir *sd)
{
	shm_mutex_unlock(&sd->lock);
}

/*
 * Writers only: find full JID KEY. *FOUND gets its slot or NO_SLOT; *INSERT
 * the slot an insert would take (first tombstone, else the never-used slot
 * ending the chain; NO_SLOT if the table has neither).
 */
static void chain_find(struct sessdir *sd, _Atomic uint64_t *index, const char *key,
		       size_t len, uint64_t hash, uint32_t *found, uint32_t *insert)
{
	uint32_t mask = sd->slot_count - 1;
	uint32_t i = (uint32_t)hash & mask;

	*found = NO_SLOT;
	*insert = NO_SLOT;
	for (uint32_t n = 0; n < sd->slot_count; n++, i = (i + 1) & mask) {
		uint64_t w = atomic_load_explicit(&index[i], memory_order_relaxed);

		if (w == SLOT_EMPTY) {
			if (*insert == NO_SLOT)
				*insert = i;
			return;
		}
		if (w == SLOT_TOMB) {
			if (*insert == NO_SLOT)
				*insert = i;
		} else if (slot_tagged(w, hash) &&
			   entry_matches(&sd_record(sd, slot_record(w))->u.e, key, len, false)) {
			*found = i;
			return;
		}
	}
}

/* Unlink slot I. It may become never-used again only if the next slot is
 * never-used (so no chain runs through it), and then so may the tombstones
 * right before it. */
static void slot_remove(struct sessdir *sd, _Atomic uint64_t *index, uint32_t i)
{
	uint32_t mask = sd->slot_count - 1;

	if (atomic_load_explicit(&index[(i + 1) & mask], memory_order_relaxed) != SLOT_EMPTY) {
		atomic_store_explicit(&index[i], SLOT_TOMB, memory_order_release);
		sd->tombstones++;
		return;
	}
	atomic_store_explicit(&index[i], SLOT_EMPTY, memory_order_release);
	for (i = (i - 1) & mask;
	     atomic_load_explicit(&index[i], memory_order_relaxed) == SLOT_TOMB;
	     i = (i - 1) & mask) {
		atomic_store_explicit(&index[i], SLOT_EMPTY, memory_order_release);
		sd->tombstones--;
	}
}

/* Replace the record behind slot I by a copy of E: new record first, then
 * the slot, then the old record, so readers always find one of the two. */
static int slot_rewrite(struct sessdir *sd, _Atomic uint64_t *index, uint32_t i,
			uint64_t hash, const union sessdir_words *e)
{
	uint32_t old = slot_record(atomic_load_explicit(&index[i], memory_order_relaxed));
	long r = record_store(sd, e);

	if (r < 0)
		return (int)r;
	atomic_store_explicit(&index[i], slot_word(hash, (uint32_t)r), memory_order_release);
	record_free(sd, old);
	return 0;
}

int sessdir_add(struct sessdir *sd, const struct sessdir_entry *e,
		struct sessdir_entry *replaced)
{
	_Atomic uint64_t *index;
	union sessdir_words copy;
	uint32_t found, insert;
	uint64_t hash;
	size_t len, bare;
	long r;
	int rc;

	len = strnlen(e->jid, SESSDIR_JID_MAX);
	if (len == SESSDIR_JID_MAX)
		return -ENAMETOOLONG;
	bare = bare_length(e->jid, len);
	if (bare == 0)
		return -EINVAL;
	copy.e = *e;
	copy.e.bare_len = (uint16_t)bare;
	memset(copy.e.jid + len, 0, SESSDIR_JID_MAX - len);
	hash = sessdir_hash(sd, copy.e.jid, bare);

	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	index = sd_active_index(sd);
	chain_find(sd, index, copy.e.jid, len, hash, &found, &insert);
	if (found != NO_SLOT) {
		if (replaced)
			*replaced = sd_record(sd, slot_record(atomic_load_explicit(
							  &index[found], memory_order_relaxed)))->u.e;
		rc = slot_rewrite(sd, index, found, hash, &copy);
		if (rc == 0)
			rc = 1;
		goto out;
	}
	if (sessdir_count(sd) >= sd->capacity || insert == NO_SLOT) {
		rc = -ENOSPC;
		goto out;
	}
	r = record_store(sd, &copy);
	if (r < 0) {
		rc = (int)r;
		goto out;
	}
	if (atomic_load_explicit(&index[insert], memory_order_relaxed) == SLOT_TOMB)
		sd->tombstones--;
	atomic_store_explicit(&index[insert], slot_word(hash, (uint32_t)r), memory_order_release);
	atomic_fetch_add_explicit(&sd->count, 1, memory_order_relaxed);
	rc = 0;
out:
	sessdir_unlock(sd);
	return rc;
}

/* Writers only: the slot of JID if it belongs to (worker, conn_id, conn_gen),
 * else NO_SLOT. */
static uint32_t owned_slot(struct sessdir *sd, _Atomic uint64_t *index, const char *jid,
			   size_t len, uint64_t hash, uint16_t worker, uint32_t conn_id,
			   uint32_t conn_gen)
{
	const struct sessdir_entry *cur;
	uint32_t found, insert;

	chain_find(sd, index, jid, len, hash, &found, &insert);
	if (found == NO_SLOT)
		return NO_SLOT;
	cur = &sd_record(sd, slot_record(atomic_load_explicit(&index[found],
							      memory_order_relaxed)))->u.e;
	if (cur->worker != worker || cur->conn_id != conn_id || cur->conn_gen != conn_gen)
		return NO_SLOT;
	return found;
}

int sessdir_del(struct sessdir *sd, const char *jid, uint16_t worker, uint32_t conn_id,
		uint32_t conn_gen)
{
	size_t len = strnlen(jid, SESSDIR_JID_MAX);
	_Atomic uint64_t *index;
	uint64_t hash;
	uint32_t slot;
	int rc;

	if (len == SESSDIR_JID_MAX)
		return -ENOENT;
	hash = sessdir_hash(sd, jid, bare_length(jid, len));
	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	index = sd_active_index(sd);
	slot = owned_slot(sd, index, jid, len, hash, worker, conn_id, conn_gen);
	if (slot == NO_SLOT) {
		rc = -ENOENT;
	} else {
		uint32_t r = slot_record(atomic_load_explicit(&index[slot], memory_order_relaxed));

		slot_remove(sd, index, slot);
		record_free(sd, r);
		atomic_fetch_sub_explicit(&sd->count, 1, memory_order_relaxed);
		index_maybe_rebuild(sd);
		rc = 0;
	}
	sessdir_unlock(sd);
	return rc;
}

int sessdir_set_presence(struct sessdir *sd, const char *jid, uint16_t worker,
			 uint32_t conn_id, uint32_t conn_gen, bool available,
			 int16_t priority)
{
	size_t len = strnlen(jid, SESSDIR_JID_MAX);
	_Atomic uint64_t *index;
	union sessdir_words copy;
	uint64_t hash;
	uint32_t slot;
	int rc;

	if (len == SESSDIR_JID_MAX)
		return -ENOENT;
	hash = sessdir_hash(sd, jid, bare_length(jid, len));
	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	index = sd_active_index(sd);
	slot = owned_slot(sd, index, jid, len, hash, worker, conn_id, conn_gen);
	if (slot == NO_SLOT) {
		rc = -ENOENT;
	} else {
		copy = sd_record(sd, slot_record(atomic_load_explicit(&index[slot],
								      memory_order_relaxed)))->u;
		copy.e.available = available;
		copy.e.priority = priority;
		rc = slot_rewrite(sd, index, slot, hash, &copy);
	}
	sessdir_unlock(sd);
	return rc;
}

int sessdir_purge_worker(struct sessdir *sd, uint16_t worker)
{
	_Atomic uint64_t *index;
	int rc, removed = 0;

	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	index = sd_active_index(sd);
	for (uint32_t i = 0; i < sd->slot_count; i++) {
		uint64_t w = atomic_load_explicit(&index[i], memory_order_relaxed);

		if (!slot_live(w) || sd_record(sd, slot_record(w))->u.e.worker != worker)
			continue;
		slot_remove(sd, index, i);
		record_free(sd, slot_record(w));
		removed++;
	}
	atomic_fetch_sub_explicit(&sd->count, (uint32_t)removed, memory_order_relaxed);
	index_maybe_rebuild(sd);
	sessdir_unlock(sd);
	return removed;
}

/* ---- setup ---- */

size_t sessdir_size(uint32_t capacity)
{
	struct sessdir_layout l;

	if (sessdir_layout(capacity, &l) < 0 || l.size > SIZE_MAX)
		return 0;
	return (size_t)l.size;
}

struct sessdir *sessdir_init(void *mem, uint32_t capacity)
{
	struct sessdir *sd = mem;
	struct sessdir_layout l;
	int rc;

	rc = sessdir_layout(capacity, &l);
	if (rc == 0 && (!mem || (uintptr_t)mem % SHM_CACHELINE))
		rc = -EINVAL;
	if (rc < 0)
		goto fail;
	memset(sd, 0, sizeof *sd);
	rc = shm_mutex_init(&sd->lock);
	if (rc < 0)
		goto fail;
	if (getrandom(&sd->seed, sizeof sd->seed, GRND_NONBLOCK) != sizeof sd->seed)
		sd->seed = mix64((uint64_t)time(NULL) ^ (uint64_t)getpid() << 32 ^
				 (uint64_t)(uintptr_t)mem);
	sd->capacity = capacity;
	sd->record_count = l.record_count;
	sd->slot_count = l.slot_count;
	sd->index_off[0] = l.index_off[0];
	sd->index_off[1] = l.index_off[1];
	sd->records_off = l.records_off;
	sd->free_off = l.free_off;
	/* Only the active index must start empty: a rebuild clears the other
	 * one, and records are written before anything reads them. */
	memset((char *)sd + l.index_off[0], 0, (size_t)l.slot_count * sizeof(uint64_t));
	sd->magic = SESSDIR_MAGIC;
	return sd;

fail:
	errno = -rc;
	return NULL;
}

struct sessdir *sessdir_attach(void *mem)
{
	struct sessdir *sd = mem;

	if (!sd || sd->magic != SESSDIR_MAGIC) {
		errno = EINVAL;
		return NULL;
	}
	return sd;
}

/* ---- test seam ---- */

int sessdir_probe_begin(struct sessdir *sd, const char *jid, struct sessdir_probe *p)
{
	size_t len = strnlen(jid, SESSDIR_JID_MAX);
	uint32_t found, insert;
	uint64_t hash;
	int rc;

	if (len == SESSDIR_JID_MAX)
		return -ENOENT;
	hash = sessdir_hash(sd, jid, bare_length(jid, len));
	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	p->gen = atomic_load_explicit(&sd->index_gen, memory_order_relaxed);
	chain_find(sd, sd_index(sd, p->gen), jid, len, hash, &found, &insert);
	if (found == NO_SLOT) {
		rc = -ENOENT;
	} else {
		p->slot = found;
		p->word = atomic_load_explicit(&sd_index(sd, p->gen)[found], memory_order_acquire);
	}
	sessdir_unlock(sd);
	return rc;
}

int sessdir_probe_end(struct sessdir *sd, const struct sessdir_probe *p, const char *key,
		      bool bare, struct sessdir_entry *out)
{
	size_t len = strnlen(key, SESSDIR_JID_MAX);
	union sessdir_words copy;
	int rc;

	if (len == SESSDIR_JID_MAX || p->slot >= sd->slot_count)
		return 0;
	rc = read_slot(sd, sd_index(sd, p->gen), p->slot, p->word,
		       sessdir_hash(sd, key, bare ? len : bare_length(key, len)), key, len, bare,
		       &copy);
	if (rc > 0)
		*out = copy.e;
	return rc;
}

/* ---- verification (tests) ---- */

#define VERIFY(cond, ...)                                                              \
	do {                                                                           \
		if (!(cond)) {                                                         \
			snprintf(why, cap, __VA_ARGS__);                               \
			rc = -EUCLEAN;                                                 \
			goto out;                                                      \
		}                                                                      \
	} while (0)

int sessdir_verify(struct sessdir *sd, char *why, size_t cap)
{
	_Atomic uint64_t *index;
	uint32_t used, mask = sd->slot_count - 1, live = 0, tombs = 0;
	int rc;

	rc = sessdir_lock(sd);
	if (rc < 0)
		return rc;
	index = sd_active_index(sd);
	used = atomic_load_explicit(&sd->records_used, memory_order_relaxed);
	for (uint32_t r = 0; r < used; r++)
		sd_record(sd, r)->mark = 0;
	for (uint32_t i = 0; i < sd->slot_count; i++) {
		uint64_t w = atomic_load_explicit(&index[i], memory_order_relaxed);
		struct sessdir_record *rec;
		uint64_t hash;

		if (w == SLOT_TOMB)
			tombs++;
		if (!slot_live(w))
			continue;
		live++;
		VERIFY(slot_record(w) < used, "slot %u names record %u of %u", i, slot_record(w), used);
		rec = sd_record(sd, slot_record(w));
		VERIFY(!rec->mark, "record %u named twice", slot_record(w));
		rec->mark = 1;
		VERIFY(rec->live == 1 && !(atomic_load_explicit(&rec->seq, memory_order_relaxed) & 1),
		       "slot %u names a free or unfinished record", i);
		VERIFY(strnlen(rec->u.e.jid, SESSDIR_JID_MAX) < SESSDIR_JID_MAX &&
			       rec->u.e.bare_len == bare_length(rec->u.e.jid, strlen(rec->u.e.jid)),
		       "record %u: bad JID or bare length", slot_record(w));
		hash = sessdir_hash(sd, rec->u.e.jid, rec->u.e.bare_len);
		VERIFY(slot_tagged(w, hash), "slot %u: wrong hash tag", i);
		for (uint32_t j = (uint32_t)hash & mask; j != i; j = (j + 1) & mask)
			VERIFY(atomic_load_explicit(&index[j], memory_order_relaxed) != SLOT_EMPTY,
			       "chain of %s broken at slot %u", rec->u.e.jid, j);
	}
	VERIFY(live == sessdir_count(sd), "count %u, live slots %u", sessdir_count(sd), live);
	VERIFY(tombs == sd->tombstones, "tombstones %u, counted %u", sd->tombstones, tombs);
	VERIFY(live + sd->free_top == used, "live %u + free %u != used %u", live, sd->free_top,
	       used);
	for (uint32_t k = 0; k < sd->free_top; k++) {
		uint32_t r = sd_free_stack(sd)[k];

		VERIFY(r < used && !sd_record(sd, r)->mark && sd_record(sd, r)->live == 0,
		       "free list entry %u (record %u) is in use", k, r);
		sd_record(sd, r)->mark = 1;
	}
	rc = 0;
out:
	sessdir_unlock(sd);
	return rc;
}
