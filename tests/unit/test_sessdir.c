/*
 * Unit tests of shm/sessdir.c: lookups by full and bare JID, replace, owner
 * checks, limits, purge; thousands of random operations checked against a
 * plain model; a reader preempted between a slot word and its record; a
 * writer process churning while a reader looks up (no torn entry, no stable
 * entry ever missed); writers killed at random moments.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/sessdir-internal.h"
#include "shm/sessdir.h"
#include "tests/unit/check.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static uint32_t jid_sum(const char *jid)
{
	uint32_t h = 2166136261u;

	for (; *jid; jid++)
		h = (h ^ (unsigned char)*jid) * 16777619u;
	return h;
}

/* An entry whose every field follows from (jid, worker, gen), so a reader
 * can tell a torn copy from a whole one. */
static struct sessdir_entry make_entry(const char *jid, uint16_t worker, uint32_t gen)
{
	struct sessdir_entry e;

	memset(&e, 0, sizeof e);
	snprintf(e.jid, sizeof e.jid, "%s", jid);
	e.worker = worker;
	e.conn_id = jid_sum(jid) ^ worker;
	e.conn_gen = gen;
	e.priority = (int16_t)(gen % 100);
	e.available = 0;
	e.tls = (uint8_t)(gen & 1);
	e.since_ms = (int64_t)gen * 1000 + e.conn_id % 1000;
	snprintf(e.address, sizeof e.address, "10.%u.%u.%u:%u", gen % 200, worker,
		 e.conn_id % 250, gen);
	return e;
}

static int entry_consistent(const struct sessdir_entry *e)
{
	struct sessdir_entry want = make_entry(e->jid, e->worker, e->conn_gen);
	const char *slash = strchr(e->jid, '/');

	return e->conn_id == want.conn_id && e->priority == want.priority && e->available <= 1 &&
	       e->tls == want.tls && e->since_ms == want.since_ms &&
	       strcmp(e->address, want.address) == 0 &&
	       e->bare_len == (slash ? (size_t)(slash - e->jid) : strlen(e->jid));
}

static struct sessdir *dir_new(uint32_t capacity, size_t *mapped)
{
	void *mem;

	*mapped = sessdir_size(capacity);
	if (!*mapped)
		return NULL;
	mem = mmap(NULL, *mapped, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED)
		return NULL;
	/* Not zeroed by us: init must not rely on it (fill with junk first). */
	memset(mem, 0xa5, *mapped);
	return sessdir_init(mem, capacity);
}

static void dir_free(struct sessdir *sd, size_t mapped)
{
	if (sd)
		munmap(sd, mapped);
}

static int add(struct sessdir *sd, const char *jid, uint16_t worker, uint32_t gen)
{
	struct sessdir_entry e = make_entry(jid, worker, gen);

	return sessdir_add(sd, &e, NULL);
}

static int verify(struct sessdir *sd)
{
	char why[256] = "";
	int rc = sessdir_verify(sd, why, sizeof why);

	if (rc)
		printf("  sessdir_verify: %s\n", why);
	return rc;
}

static void test_lookups(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(100, &mapped);
	struct sessdir_entry got, many[8];
	const char *alice[] = { "alice@example.com/phone", "alice@example.com/laptop",
				"alice@example.com/web/with/slashes" };
	int total = -1, seen = 0;

	CHECK(sd != NULL);
	if (!sd)
		return;
	CHECK(sessdir_attach(sd) == sd);
	for (int i = 0; i < 3; i++)
		CHECK(add(sd, alice[i], 1, 10 + (uint32_t)i) == 0);
	CHECK(add(sd, "bob@example.com/phone", 2, 20) == 0);
	CHECK(add(sd, "alice@example.co/x", 3, 30) == 0); /* a prefix of alice's domain */
	CHECK(add(sd, "conference.example.com", 4, 40) == 0); /* no resource */
	CHECK(sessdir_count(sd) == 6);

	for (int i = 0; i < 3; i++) {
		memset(&got, 0, sizeof got);
		CHECK(sessdir_lookup_full(sd, alice[i], &got) == 0);
		CHECK_STR(got.jid, alice[i]);
		CHECK(got.worker == 1 && got.conn_gen == 10 + (uint32_t)i);
		CHECK(got.bare_len == strlen("alice@example.com"));
		CHECK(entry_consistent(&got));
	}
	CHECK(sessdir_lookup_full(sd, "alice@example.com/tablet", &got) == -ENOENT);
	CHECK(sessdir_lookup_full(sd, "alice@example.com", &got) == -ENOENT);
	CHECK(sessdir_lookup_full(sd, "alice@example.com/phonex", &got) == -ENOENT);
	CHECK(sessdir_lookup_full(sd, "conference.example.com", &got) == 0 && got.worker == 4);

	CHECK(sessdir_lookup_bare(sd, "alice@example.com", many, 8, &total) == 3);
	CHECK(total == 3);
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			seen += strcmp(many[i].jid, alice[j]) == 0;
	CHECK(seen == 3);
	CHECK(sessdir_lookup_bare(sd, "alice@example.com", many, 2, &total) == 2 && total == 3);
	CHECK(sessdir_lookup_bare(sd, "alice@example.com", NULL, 0, &total) == 0 && total == 3);
	CHECK(sessdir_lookup_bare(sd, "alice@example.co", many, 8, &total) == 1 && total == 1);
	CHECK_STR(many[0].jid, "alice@example.co/x");
	CHECK(sessdir_lookup_bare(sd, "conference.example.com", many, 8, NULL) == 1);
	CHECK(sessdir_lookup_bare(sd, "nobody@example.com", many, 8, &total) == 0 && total == 0);
	CHECK(sessdir_lookup_bare(sd, "alice@example.com/phone", many, 8, &total) == 0);
	CHECK(verify(sd) == 0);
	dir_free(sd, mapped);
}

static void test_replace_and_owner(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(16, &mapped);
	struct sessdir_entry e, old, got;
	const char *jid = "carol@example.com/desk";

	CHECK(sd != NULL);
	if (!sd)
		return;
	CHECK(add(sd, jid, 1, 100) == 0);
	e = make_entry(jid, 2, 200);
	memset(&old, 0, sizeof old);
	CHECK(sessdir_add(sd, &e, &old) == 1);
	CHECK_STR(old.jid, jid);
	CHECK(old.worker == 1 && old.conn_gen == 100 && entry_consistent(&old));
	CHECK(sessdir_count(sd) == 1);
	CHECK(sessdir_lookup_full(sd, jid, &got) == 0 && got.worker == 2 && got.conn_gen == 200);
	CHECK(add(sd, jid, 2, 201) == 1); /* REPLACED may be NULL */

	/* Only the current owner may change or remove it. */
	CHECK(sessdir_set_presence(sd, jid, 2, got.conn_id, 200, true, 5) == -ENOENT);
	CHECK(sessdir_set_presence(sd, jid, 2, got.conn_id, 201, true, 5) == 0);
	CHECK(sessdir_lookup_full(sd, jid, &got) == 0);
	CHECK(got.available == 1 && got.priority == 5 && got.conn_gen == 201);
	CHECK(strcmp(got.address, make_entry(jid, 2, 201).address) == 0);
	CHECK(sessdir_del(sd, jid, 1, got.conn_id, 201) == -ENOENT);       /* worker */
	CHECK(sessdir_del(sd, jid, 2, got.conn_id + 1, 201) == -ENOENT);   /* connection */
	CHECK(sessdir_del(sd, jid, 2, got.conn_id, 200) == -ENOENT);       /* generation */
	CHECK(sessdir_del(sd, "carol@example.com/other", 2, got.conn_id, 201) == -ENOENT);
	CHECK(sessdir_lookup_full(sd, jid, &got) == 0);
	CHECK(sessdir_del(sd, jid, 2, got.conn_id, 201) == 0);
	CHECK(sessdir_del(sd, jid, 2, got.conn_id, 201) == -ENOENT);
	CHECK(sessdir_lookup_full(sd, jid, &got) == -ENOENT);
	CHECK(sessdir_set_presence(sd, jid, 2, got.conn_id, 201, true, 1) == -ENOENT);
	CHECK(sessdir_count(sd) == 0);
	CHECK(verify(sd) == 0);
	dir_free(sd, mapped);
}

static void test_limits(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(8, &mapped);
	struct sessdir_entry e, got;
	char jid[64], longest[SESSDIR_JID_MAX];
	unsigned char junk[256] __attribute__((aligned(64)));

	CHECK(sd != NULL);
	if (!sd)
		return;
	memset(&e, 0, sizeof e);
	memset(e.jid, 'a', sizeof e.jid); /* no NUL anywhere */
	CHECK(sessdir_add(sd, &e, NULL) == -ENAMETOOLONG);
	memset(longest, 'a', sizeof longest - 1);
	longest[sizeof longest - 1] = '\0';
	memcpy(longest, "long@example.com/", 17);
	CHECK(add(sd, longest, 1, 1) == 0);
	CHECK(sessdir_lookup_full(sd, longest, &got) == 0 && strcmp(got.jid, longest) == 0);
	CHECK(sessdir_lookup_full(sd, (const char *)e.jid, &got) == -ENOENT);
	CHECK(add(sd, "/resource-only", 1, 1) == -EINVAL);
	CHECK(add(sd, "", 1, 1) == -EINVAL);
	CHECK(sessdir_del(sd, longest, 1, got.conn_id, 1) == 0);

	for (int i = 0; i < 8; i++) {
		snprintf(jid, sizeof jid, "user%d@example.com/r", i);
		CHECK(add(sd, jid, 1, (uint32_t)i) == 0);
	}
	CHECK(add(sd, "one.too.many@example.com/r", 1, 9) == -ENOSPC);
	/* Full, yet replacing and presence changes still work. */
	CHECK(add(sd, "user3@example.com/r", 2, 33) == 1);
	CHECK(sessdir_set_presence(sd, "user3@example.com/r", 2,
				   make_entry("user3@example.com/r", 2, 33).conn_id, 33, true,
				   -1) == 0);
	CHECK(sessdir_lookup_full(sd, "user3@example.com/r", &got) == 0 && got.priority == -1);
	CHECK(sessdir_del(sd, "user5@example.com/r", 1, got.conn_id, 5) == -ENOENT);
	CHECK(sessdir_del(sd, "user5@example.com/r", 1,
			  make_entry("user5@example.com/r", 1, 5).conn_id, 5) == 0);
	CHECK(add(sd, "one.too.many@example.com/r", 1, 9) == 0);
	CHECK(sessdir_count(sd) == 8);
	CHECK(verify(sd) == 0);
	dir_free(sd, mapped);

	CHECK(sessdir_size(0) == 0);
	CHECK(sessdir_init(junk, 0) == NULL);
	memset(junk, 0, sizeof junk);
	CHECK(sessdir_attach(junk) == NULL);
}

struct collect {
	int n;
	int stop_after;
	char jids[128][SESSDIR_JID_MAX];
	uint16_t workers[128];
};

static int collect_entry(const struct sessdir_entry *e, void *arg)
{
	struct collect *c = arg;

	if (c->n < 128) {
		memcpy(c->jids[c->n], e->jid, SESSDIR_JID_MAX);
		c->workers[c->n] = e->worker;
	}
	c->n++;
	return c->stop_after && c->n >= c->stop_after;
}

static void test_purge_and_foreach(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(128, &mapped);
	static struct collect c;
	char jid[64];
	struct sessdir_entry got;
	int of_two = 0, total;

	CHECK(sd != NULL);
	if (!sd)
		return;
	/* 4 workers, 30 sessions each, spread over 10 accounts. */
	for (int i = 0; i < 120; i++) {
		snprintf(jid, sizeof jid, "u%d@example.com/w%d-%d", i % 10, i % 4, i);
		CHECK(add(sd, jid, (uint16_t)(i % 4), (uint32_t)i) == 0);
	}
	CHECK(sessdir_purge_worker(sd, 2) == 30);
	CHECK(sessdir_purge_worker(sd, 2) == 0);
	CHECK(sessdir_count(sd) == 90);
	CHECK(verify(sd) == 0);
	memset(&c, 0, sizeof c);
	sessdir_foreach(sd, collect_entry, &c);
	CHECK(c.n == 90);
	for (int i = 0; i < c.n && i < 128; i++)
		of_two += c.workers[i] == 2;
	CHECK(of_two == 0);
	for (int i = 0; i < 120; i++) {
		snprintf(jid, sizeof jid, "u%d@example.com/w%d-%d", i % 10, i % 4, i);
		CHECK((sessdir_lookup_full(sd, jid, &got) == 0) == (i % 4 != 2));
	}
	CHECK(sessdir_lookup_bare(sd, "u2@example.com", NULL, 0, &total) == 0);
	CHECK(total == 6); /* 12 sessions, 6 of them on worker 2 */

	memset(&c, 0, sizeof c);
	c.stop_after = 5;
	sessdir_foreach(sd, collect_entry, &c);
	CHECK(c.n == 5);
	dir_free(sd, mapped);
}

/* ---- random operations against a model ---- */

struct model {
	int bares, resources;
	int present[512];
	struct sessdir_entry e[512];
	uint32_t count;
};

static void model_jid(const struct model *m, int k, char *out, size_t cap)
{
	/* Short and long names, so JIDs straddle the hash's 8-byte words. */
	snprintf(out, cap, "user%d%s@example.com/res%d", k / m->resources,
		 (k / m->resources) % 3 ? "" : "-with-a-longer-local-part", k % m->resources);
}

static int model_check_bare(struct sessdir *sd, const struct model *m, int b)
{
	struct sessdir_entry out[64];
	char jid[SESSDIR_JID_MAX], bare[SESSDIR_JID_MAX];
	int total, n, want = 0;

	model_jid(m, b * m->resources, jid, sizeof jid);
	snprintf(bare, sizeof bare, "%.*s", (int)(strchr(jid, '/') - jid), jid);
	n = sessdir_lookup_bare(sd, bare, out, 64, &total);
	for (int r = 0; r < m->resources; r++)
		want += m->present[b * m->resources + r];
	if (n != want || total != want)
		return 0;
	for (int i = 0; i < n; i++) {
		int found = 0;

		for (int r = 0; r < m->resources; r++) {
			int k = b * m->resources + r;

			if (m->present[k] && memcmp(&out[i], &m->e[k], sizeof out[i]) == 0)
				found++;
		}
		if (found != 1)
			return 0;
	}
	return 1;
}

static int model_check_all(struct sessdir *sd, const struct model *m)
{
	struct sessdir_entry got;
	char jid[SESSDIR_JID_MAX];

	if (sessdir_count(sd) != m->count || verify(sd) != 0)
		return 0;
	for (int k = 0; k < m->bares * m->resources; k++) {
		model_jid(m, k, jid, sizeof jid);
		if (sessdir_lookup_full(sd, jid, &got) != (m->present[k] ? 0 : -ENOENT))
			return 0;
		if (m->present[k] && memcmp(&got, &m->e[k], sizeof got) != 0)
			return 0;
	}
	for (int b = 0; b < m->bares; b++)
		if (!model_check_bare(sd, m, b))
			return 0;
	return 1;
}

/* Many add/replace/del/presence/purge operations on a small table, so
 * chains collide, tombstones pile up, get reused and get swept. */
static void run_model(uint32_t capacity, int bares, int resources, int ops)
{
	size_t mapped;
	struct sessdir *sd = dir_new(capacity, &mapped);
	static struct model m;
	char jid[SESSDIR_JID_MAX];
	int bad = 0, full = 0, replaced = 0;

	CHECK(sd != NULL);
	if (!sd)
		return;
	memset(&m, 0, sizeof m);
	m.bares = bares;
	m.resources = resources;
	for (int op = 0; op < ops && !bad; op++) {
		int k = (int)rnd((uint32_t)(bares * resources));
		uint32_t what = rnd(100);
		struct sessdir_entry e, old;
		int rc;

		model_jid(&m, k, jid, sizeof jid);
		if (what < 40) {
			e = make_entry(jid, (uint16_t)rnd(4), rnd(1u << 20));
			e.bare_len = 0; /* recomputed by the directory */
			rc = sessdir_add(sd, &e, &old);
			e.bare_len = (uint16_t)(strchr(jid, '/') - jid);
			memset(e.jid + strlen(jid), 0, sizeof e.jid - strlen(jid));
			if (m.present[k]) {
				bad |= rc != 1 || memcmp(&old, &m.e[k], sizeof old) != 0;
				m.e[k] = e;
				replaced++;
			} else if (m.count == capacity) {
				bad |= rc != -ENOSPC;
				full++;
			} else {
				bad |= rc != 0;
				m.present[k] = 1;
				m.e[k] = e;
				m.count++;
			}
		} else if (what < 75) {
			int right = !m.present[k] || rnd(4) != 0;
			uint32_t gen = m.present[k] ? m.e[k].conn_gen + !right : 0;

			rc = sessdir_del(sd, jid, m.e[k].worker, m.e[k].conn_id, gen);
			if (m.present[k] && right) {
				bad |= rc != 0;
				m.present[k] = 0;
				m.count--;
			} else {
				bad |= rc != -ENOENT;
			}
		} else if (what < 85) {
			int16_t prio = (int16_t)rnd(200) - 100;

			rc = sessdir_set_presence(sd, jid, m.e[k].worker, m.e[k].conn_id,
						  m.e[k].conn_gen, true, prio);
			if (m.present[k]) {
				bad |= rc != 0;
				m.e[k].available = 1;
				m.e[k].priority = prio;
			} else {
				bad |= rc != -ENOENT;
			}
		} else if (what < 86) {
			uint16_t w = (uint16_t)rnd(4);
			int want = 0;

			for (int j = 0; j < bares * resources; j++) {
				if (m.present[j] && m.e[j].worker == w) {
					m.present[j] = 0;
					m.count--;
					want++;
				}
			}
			bad |= sessdir_purge_worker(sd, w) != want;
		} else if (what < 93) {
			struct sessdir_entry got;

			rc = sessdir_lookup_full(sd, jid, &got);
			bad |= rc != (m.present[k] ? 0 : -ENOENT);
			if (rc == 0)
				bad |= memcmp(&got, &m.e[k], sizeof got) != 0;
		} else {
			bad |= !model_check_bare(sd, &m, k / resources);
		}
		if (op % 1000 == 999)
			bad |= !model_check_all(sd, &m);
		if (bad)
			printf("  model: op %d (kind %u) on %s went wrong\n", op, what, jid);
	}
	CHECK(!bad);
	CHECK(model_check_all(sd, &m));
	CHECK(full > 0 && replaced > 0); /* the run did reach those cases */
	dir_free(sd, mapped);
}

static void test_random_against_model(void)
{
	run_model(64, 24, 6, 40000);  /* 144 JIDs for 64 places in 128 slots */
	run_model(8, 3, 8, 20000);    /* long chains of one account's resources */
	run_model(150, 100, 4, 40000); /* a bigger table, still filling up */
}

/* A reader loads the slot word of alice/a, naming record R, and is
 * preempted. Writers replace alice/a (R is freed) and then alice/b, whose
 * new version takes R from the LIFO free stack. The reader must follow the
 * slot to alice/a's new record, not report alice/b, whole and live in R, as
 * this slot's entry: a bare lookup would then miss alice/a and count alice/b
 * twice. */
static void test_stale_slot_word(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(16, &mapped);
	const char *a = "alice@example.com/a", *b = "alice@example.com/b";
	struct sessdir_entry got, both[4];
	struct sessdir_probe probe;
	int total;

	CHECK(sd != NULL);
	if (!sd)
		return;
	CHECK(add(sd, a, 1, 1) == 0);
	CHECK(add(sd, b, 1, 2) == 0);
	CHECK(sessdir_probe_begin(sd, a, &probe) == 0);
	CHECK(add(sd, a, 1, 3) == 1);
	CHECK(add(sd, b, 1, 4) == 1);

	memset(&got, 0, sizeof got);
	CHECK(sessdir_probe_end(sd, &probe, "alice@example.com", true, &got) == 1);
	CHECK_STR(got.jid, a);
	CHECK(got.conn_gen == 3 && entry_consistent(&got));
	CHECK(sessdir_probe_end(sd, &probe, a, false, &got) == 1);
	CHECK_STR(got.jid, a);
	CHECK(sessdir_probe_end(sd, &probe, b, false, &got) == 0); /* b is not in this slot */

	CHECK(sessdir_lookup_bare(sd, "alice@example.com", both, 4, &total) == 2 && total == 2);
	CHECK(strcmp(both[0].jid, both[1].jid) != 0);
	CHECK(sessdir_probe_begin(sd, "alice@example.com/c", &probe) == -ENOENT);
	CHECK(verify(sd) == 0);
	dir_free(sd, mapped);
}

/* ---- concurrency ---- */

struct shared_flags {
	_Atomic int stop;
	_Atomic int writers_ready;
	_Atomic uint64_t writer_ops;
};

static void stable_jid(int i, char *out, size_t cap)
{
	snprintf(out, cap, "acct%d@example.com/stable%d", i % 10, i);
}

static void churn_jid(int i, uint16_t worker, char *out, size_t cap)
{
	/* Same accounts as the stable entries: the same chains. */
	snprintf(out, cap, "acct%d@example.com/churn%d-w%u", i % 10, i, worker);
}

/* Churn entries with i % 5 == 0 are added first and then only replaced or
 * updated, never deleted: readers must always find them, although the
 * record behind their slot keeps changing. */
static int churn_persistent(int i)
{
	return i % 5 == 0;
}

static void writer_main(struct sessdir *sd, struct shared_flags *flags, uint16_t worker)
{
	uint32_t gen = 1;
	uint32_t last_gen[200] = { 0 };
	char jid[SESSDIR_JID_MAX];

	rng_state ^= (uint64_t)getpid() << 20;
	for (int i = 0; i < 200; i += 5) {
		struct sessdir_entry e;

		churn_jid(i, worker, jid, sizeof jid);
		e = make_entry(jid, worker, last_gen[i] = gen++);
		if (sessdir_add(sd, &e, NULL) < 0)
			_exit(1);
	}
	atomic_fetch_add(&flags->writers_ready, 1); /* persistent entries are in */
	while (!atomic_load(&flags->stop)) {
		int i = (int)rnd(200);
		uint32_t op = rnd(3);
		struct sessdir_entry e;

		churn_jid(i, worker, jid, sizeof jid);
		if (op == 2 && churn_persistent(i))
			op = rnd(2);
		e = make_entry(jid, worker, gen++);
		switch (op) {
		case 0: /* add or replace */
			if (sessdir_add(sd, &e, NULL) >= 0)
				last_gen[i] = e.conn_gen;
			break;
		case 1: /* keeps conn_gen, so the entry stays consistent */
			sessdir_set_presence(sd, jid, worker, e.conn_id, last_gen[i], true,
					     (int16_t)(last_gen[i] % 100));
			break;
		default:
			sessdir_del(sd, jid, worker, e.conn_id, last_gen[i]);
		}
		atomic_fetch_add(&flags->writer_ops, 1);
	}
	_exit(0);
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Two processes add, replace, update and delete entries as fast as they
 * can, in the same chains as 20 entries nobody touches; the reader must
 * never see a torn entry and never miss a stable or persistent one. With
 * three busy processes on few CPUs, the reader is often preempted in the
 * middle of a lookup, which is where the races are. */
static void test_concurrent_reader(void)
{
	size_t mapped;
	struct sessdir *sd = dir_new(512, &mapped);
	struct shared_flags *flags = mmap(NULL, sizeof *flags, PROT_READ | PROT_WRITE,
					  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char jid[SESSDIR_JID_MAX];
	uint64_t lookups = 0, torn = 0, missed = 0, churn_hits = 0, bare_bad = 0;
	double end, give_up = now_seconds() + 30;
	pid_t pids[2];

	CHECK(sd != NULL && flags != MAP_FAILED);
	if (!sd || flags == MAP_FAILED)
		return;
	for (int i = 0; i < 20; i++) {
		stable_jid(i, jid, sizeof jid);
		CHECK(add(sd, jid, 1, (uint32_t)i + 1) == 0);
	}
	for (int w = 0; w < 2; w++) {
		pids[w] = fork();
		if (pids[w] == 0)
			writer_main(sd, flags, (uint16_t)(2 + w));
		CHECK(pids[w] > 0);
	}
	while (atomic_load(&flags->writers_ready) < 2 && now_seconds() < give_up)
		sched_yield();
	/* Two seconds, and longer on a starved machine until both sides did
	 * enough work for the run to mean something. */
	end = now_seconds() + 2;
	while (now_seconds() < give_up &&
	       (now_seconds() < end || lookups < 10000 ||
		atomic_load(&flags->writer_ops) < 10000)) {
		for (int round = 0; round < 100; round++, lookups++) {
			struct sessdir_entry got, out[64];
			int i = (int)rnd(200), n, total, stable_seen = 0;
			char bare[64];

			if (i < 20) {
				stable_jid(i, jid, sizeof jid);
				if (sessdir_lookup_full(sd, jid, &got) != 0)
					missed++;
				else if (!entry_consistent(&got) || got.conn_gen != (uint32_t)i + 1 ||
					 strcmp(got.jid, jid))
					torn++;
			}
			churn_jid(i, (uint16_t)(2 + (round & 1)), jid, sizeof jid);
			if (sessdir_lookup_full(sd, jid, &got) == 0) {
				churn_hits++;
				if (!entry_consistent(&got) || strcmp(got.jid, jid) ||
				    got.worker != 2 + (round & 1))
					torn++;
			} else if (churn_persistent(i)) {
				missed++;
			}
			snprintf(bare, sizeof bare, "acct%d@example.com", i % 10);
			n = sessdir_lookup_bare(sd, bare, out, 64, &total);
			if (n != total)
				bare_bad++;
			for (int k = 0; k < n; k++) {
				if (!entry_consistent(&out[k]) || strncmp(out[k].jid, bare, strlen(bare)))
					torn++;
				stable_seen += out[k].worker == 1;
			}
			if (stable_seen != 2) /* acctN has stable entries N and N + 10 */
				missed++;
			for (int p = i % 10; p < 400; p += 10) {
				int seen = 0;

				if (!churn_persistent(p % 200))
					continue;
				churn_jid(p % 200, (uint16_t)(2 + p / 200), jid, sizeof jid);
				for (int k = 0; k < n; k++)
					seen += strcmp(out[k].jid, jid) == 0;
				if (seen != 1)
					missed++;
			}
		}
	}
	atomic_store(&flags->stop, 1);
	for (int w = 0; w < 2; w++)
		CHECK(waitpid(pids[w], NULL, 0) == pids[w]);
	CHECK(torn == 0);
	CHECK(missed == 0);
	CHECK(bare_bad == 0);
	CHECK(lookups > 1000 && churn_hits > 100);
	CHECK(atomic_load(&flags->writer_ops) > 1000);
	CHECK(verify(sd) == 0);
	if (torn || missed || bare_bad)
		printf("  %llu lookups: %llu torn, %llu missed, %llu bare miscounts\n",
		       (unsigned long long)lookups, (unsigned long long)torn,
		       (unsigned long long)missed, (unsigned long long)bare_bad);
	munmap(flags, sizeof *flags);
	dir_free(sd, mapped);
}

/* Writers killed while they hold the mutex, deterministically and then at
 * random points of their work: the directory is repaired, nothing leaks. */
static void test_dead_writers(void)
{
	size_t mapped;
	uint32_t capacity = 512;
	struct sessdir *sd = dir_new(capacity, &mapped);
	struct shared_flags *flags = mmap(NULL, sizeof *flags, PROT_READ | PROT_WRITE,
					  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char jid[SESSDIR_JID_MAX];
	struct sessdir_entry got;
	int status, lost = 0, added = 0;
	pid_t pid;

	CHECK(sd != NULL && flags != MAP_FAILED);
	if (!sd || flags == MAP_FAILED)
		return;
	for (int i = 0; i < 20; i++) {
		stable_jid(i, jid, sizeof jid);
		CHECK(add(sd, jid, 1, (uint32_t)i + 1) == 0);
	}
	alarm(60);
	pid = fork();
	if (pid == 0) {
		if (sessdir_lock(sd) != 0)
			_exit(1);
		raise(SIGKILL);
		_exit(1);
	}
	CHECK(pid > 0);
	CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
	CHECK(add(sd, "after@example.com/lock", 1, 1) == 0);
	CHECK(verify(sd) == 0);

	/* At least 40 rounds; more while a starved CPU has let the writers do
	 * too little between fork and kill for the rounds to mean anything. */
	for (int round = 0; round < 40 || (atomic_load(&flags->writer_ops) <= 100 && round < 1000);
	     round++) {
		pid = fork();
		if (pid == 0)
			writer_main(sd, flags, 5);
		CHECK(pid > 0);
		usleep(200 + rnd(3000));
		kill(pid, SIGKILL);
		CHECK(waitpid(pid, &status, 0) == pid && WIFSIGNALED(status));
		CHECK(sessdir_purge_worker(sd, 5) >= 0);
		CHECK(verify(sd) == 0);
		CHECK(sessdir_count(sd) == 21);
		for (int i = 0; i < 20; i++) {
			stable_jid(i, jid, sizeof jid);
			lost += sessdir_lookup_full(sd, jid, &got) != 0 || got.conn_gen != (uint32_t)i + 1;
		}
	}
	alarm(0);
	CHECK(lost == 0);
	CHECK(atomic_load(&flags->writer_ops) > 100);
	/* No record leaked: every remaining place can still be filled. */
	for (;;) {
		snprintf(jid, sizeof jid, "fill%d@example.com/x", added);
		if (add(sd, jid, 3, (uint32_t)added) != 0)
			break;
		added++;
	}
	CHECK(added == (int)capacity - 21);
	CHECK(verify(sd) == 0);
	munmap(flags, sizeof *flags);
	dir_free(sd, mapped);
}

int main(void)
{
	RUN(test_lookups);
	RUN(test_replace_and_owner);
	RUN(test_limits);
	RUN(test_purge_and_foreach);
	RUN(test_random_against_model);
	RUN(test_stale_slot_word);
	RUN(test_concurrent_reader);
	RUN(test_dead_writers);
	return check_exit();
}
