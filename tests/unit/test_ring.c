/*
 * Unit tests of shm/ring.c (and of the segment in shm/shm.c, which holds the
 * rings): FIFO order and content across wrap-around, full and oversized
 * rings, several producer processes against one consumer, producers killed
 * inside the mutex or between reserve and commit, a consumer killed and
 * replaced.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "shm/ring-internal.h"
#include "shm/ring.h"
#include "shm/sessdir.h"
#include "shm/shm.h"
#include "tests/unit/check.h"

/* Every message starts with this header; its payload bytes are derived from
 * (producer, seq), so the consumer checks content without a copy of it. */
struct msg_header {
	uint32_t producer;
	uint32_t seq;
};

static unsigned char pattern_byte(uint32_t producer, uint32_t seq, size_t k)
{
	return (unsigned char)(producer * 97u + seq * 131u + (uint32_t)k * 7u);
}

static void fill_pattern(unsigned char *p, size_t len, uint32_t producer, uint32_t seq)
{
	for (size_t k = 0; k < len; k++)
		p[k] = pattern_byte(producer, seq, k);
}

static int pattern_ok(const unsigned char *p, size_t len, uint32_t producer, uint32_t seq)
{
	for (size_t k = 0; k < len; k++)
		if (p[k] != pattern_byte(producer, seq, k))
			return 0;
	return 1;
}

/* MAP_SHARED so forked children share it, as in the server. */
static void *shared_alloc(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	return p == MAP_FAILED ? NULL : p;
}

static struct ring *ring_new(size_t data_bytes, size_t *mapped)
{
	*mapped = ring_size(data_bytes);
	void *mem = *mapped ? shared_alloc(*mapped) : NULL;

	return mem ? ring_init(mem, *mapped) : NULL;
}

static void ring_free(struct ring *r, size_t mapped)
{
	if (r)
		munmap(r, mapped);
}

/* Push a message (header + pattern of LEN bytes) through push2 or push. */
static int push_msg(struct ring *r, uint32_t producer, uint32_t seq, size_t len, int use_push2)
{
	unsigned char buf[sizeof(struct msg_header) + 4096];
	struct msg_header h = { producer, seq };

	if (len > 4096)
		return -EINVAL;
	if (use_push2) {
		fill_pattern(buf, len, producer, seq);
		return ring_push2(r, (uint16_t)producer, &h, sizeof h, buf, len);
	}
	memcpy(buf, &h, sizeof h);
	fill_pattern(buf + sizeof h, len, producer, seq);
	return ring_push(r, (uint16_t)producer, buf, sizeof h + len);
}

/* Pop one message and check it is (producer, seq) with LEN pattern bytes.
 * Returns 1 if so, 0 if the ring gave nothing, -1 on a wrong message. */
static int pop_expect(struct ring *r, uint32_t producer, uint32_t seq, size_t len)
{
	unsigned char buf[sizeof(struct msg_header) + 4096];
	struct msg_header h;
	long n = ring_pop(r, buf, sizeof buf);

	if (n == 0)
		return 0;
	if (n != (long)(sizeof h + len))
		return -1;
	memcpy(&h, buf, sizeof h);
	if (h.producer != producer || h.seq != seq)
		return -1;
	return pattern_ok(buf + sizeof h, len, producer, seq) ? 1 : -1;
}

static size_t varied_len(uint32_t seq, size_t max)
{
	/* Mostly small, sometimes spanning many cells, every size hit. */
	uint32_t x = seq * 2654435761u;

	return (x >> 7) % 8 == 0 ? (x >> 11) % (max + 1) : (x >> 11) % 200;
}

static int wait_child(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

static void test_sizes(void)
{
	size_t mapped;
	struct ring *r;
	unsigned char junk[4096] __attribute__((aligned(64)));

	CHECK(ring_size(0) == 0);
	CHECK(ring_size(1) > 0);
	/* Rounded up to a power of two of cells: 1000 -> 1024, 1025 -> 2048. */
	CHECK(ring_size(1025) - ring_size(1024) == 1024);
	CHECK(ring_size(1000) == ring_size(1024));

	r = ring_new(1000, &mapped);
	CHECK(r != NULL);
	if (!r)
		return;
	CHECK(ring_max_payload(r) == 1024 - 16);
	CHECK(ring_used_bytes(r) == 0);
	CHECK(ring_attach(r) == r);
	ring_free(r, mapped);

	memset(junk, 0x5a, sizeof junk);
	errno = 0;
	CHECK(ring_attach(junk) == NULL && errno == EINVAL);
	CHECK(ring_init(junk, 100) == NULL);       /* too small */
	CHECK(ring_init(junk + 8, 2048) == NULL);  /* not cache-line aligned */
	r = ring_init(junk, sizeof junk);
	CHECK(r != NULL && ring_max_payload(r) >= 2048 - 16);
}

/* One producer, one consumer, a small ring (16 cells): messages of every
 * size up to the whole ring, in flight several at a time, wrapping
 * thousands of times; checked against the sequence they were pushed in. */
static void test_fifo_wraparound(void)
{
	size_t mapped;
	struct ring *r = ring_new(1024, &mapped);
	uint32_t pushed = 0, popped = 0, eagain = 0;
	size_t max;

	CHECK(r != NULL);
	if (!r)
		return;
	max = ring_max_payload(r) - sizeof(struct msg_header);
	srand(1);
	for (int step = 0; step < 100000; step++) {
		if (rand() % 3) {
			int rc = push_msg(r, 3, pushed, varied_len(pushed, max), pushed & 1);

			if (rc == 0) {
				pushed++;
				continue;
			}
			CHECK(rc == -EAGAIN);
			eagain++;
		}
		if (popped < pushed) {
			int rc = pop_expect(r, 3, popped, varied_len(popped, max));

			CHECK(rc == 1);
			if (rc != 1)
				break;
			popped++;
		} else {
			CHECK(ring_pop(r, (char[8]){ 0 }, 8) == 0);
		}
	}
	while (popped < pushed && pop_expect(r, 3, popped, varied_len(popped, max)) == 1)
		popped++;
	CHECK(popped == pushed);
	CHECK(pushed > 20000); /* ~2500 laps of the ring at the least */
	CHECK(eagain > 0);
	CHECK(ring_used_bytes(r) == 0);
	ring_free(r, mapped);
}

/* A full ring refuses with -EAGAIN and loses nothing. */
static void test_full_ring(void)
{
	size_t mapped;
	struct ring *r = ring_new(4096, &mapped);
	int n = 0, rc;

	CHECK(r != NULL);
	if (!r)
		return;
	for (int round = 0; round < 3; round++) {
		/* 8 + 92 payload + 16 header = 116 bytes: 2 cells each. */
		for (n = 0; (rc = push_msg(r, 1, (uint32_t)n, 92, 0)) == 0; n++)
			;
		CHECK(rc == -EAGAIN);
		CHECK(n == 32);
		CHECK(ring_used_bytes(r) == 4096);
		CHECK(push_msg(r, 2, 0, 0, 0) == -EAGAIN); /* one cell does not fit either */
		for (int i = 0; i < n; i++)
			CHECK(pop_expect(r, 1, (uint32_t)i, 92) == 1);
		CHECK(ring_pop(r, (char[8]){ 0 }, 8) == 0);
		CHECK(ring_used_bytes(r) == 0);
		/* Shift the start so the next round wraps differently. */
		CHECK(push_msg(r, 1, 7, 40 + round * 64, 0) == 0);
		CHECK(pop_expect(r, 1, 7, 40 + round * 64) == 1);
	}
	ring_free(r, mapped);
}

static void test_sizes_refused(void)
{
	size_t mapped;
	struct ring *r = ring_new(2048, &mapped);
	size_t max;
	unsigned char *big, *out;

	CHECK(r != NULL);
	if (!r)
		return;
	max = ring_max_payload(r);
	big = malloc(max + 1);
	out = malloc(max + 1);
	CHECK(big && out);
	if (!big || !out)
		goto out;
	fill_pattern(big, max + 1, 9, 9);

	CHECK(ring_push(r, 1, big, max + 1) == -EMSGSIZE);
	CHECK(ring_push2(r, 1, big, max, big, 1) == -EMSGSIZE);
	CHECK(ring_push2(r, 1, big, SIZE_MAX, big, 2) == -EMSGSIZE); /* no overflow */
	CHECK(ring_push(r, 1, big, 0) == -EINVAL);
	CHECK(ring_used_bytes(r) == 0);

	/* Move the start off cell 0, so the biggest message wraps. */
	CHECK(ring_push(r, 1, big, 100) == 0);
	CHECK(ring_pop(r, out, max) == 100);
	CHECK(ring_push(r, 1, big, max) == 0);
	CHECK(ring_push(r, 1, big, 1) == -EAGAIN);
	CHECK(ring_pop(r, out, max - 1) == -EMSGSIZE); /* left in place */
	memset(out, 0, max + 1);
	CHECK(ring_pop(r, out, max) == (long)max);
	CHECK(memcmp(out, big, max) == 0);
	CHECK(ring_pop(r, out, max) == 0);
out:
	free(big);
	free(out);
	ring_free(r, mapped);
}

/* push2 joins its two pieces, also when the join or either piece wraps. */
static void test_push2_joins(void)
{
	size_t mapped;
	struct ring *r = ring_new(512, &mapped);
	unsigned char a[512], b[300], out[600];

	CHECK(r != NULL);
	if (!r)
		return;
	fill_pattern(a, sizeof a, 1, 1);
	fill_pattern(b, sizeof b, 2, 2);
	for (size_t shift = 0; shift < 512; shift += 64) {
		for (size_t alen = 0; alen <= 200; alen += 50) {
			size_t blen = 200 - alen + shift % 90;
			long n;

			if (alen + blen == 0)
				continue;
			CHECK(ring_push2(r, 4, a, alen, b, blen) == 0);
			n = ring_pop(r, out, sizeof out);
			CHECK(n == (long)(alen + blen));
			CHECK(memcmp(out, a, alen) == 0 && memcmp(out + alen, b, blen) == 0);
		}
		CHECK(ring_push(r, 4, a, shift + 1) == 0); /* move the start */
		CHECK(ring_pop(r, out, sizeof out) == (long)shift + 1);
	}
	ring_free(r, mapped);
}

enum { PRODUCERS = 3, PER_PRODUCER = 200000 };

static void producer_main(struct ring *r, uint32_t id)
{
	size_t max = 600;

	for (uint32_t seq = 0; seq < PER_PRODUCER; seq++) {
		int rc;

		while ((rc = push_msg(r, id, seq, varied_len(seq * 3 + id, max), seq & 1)) == -EAGAIN)
			sched_yield();
		if (rc != 0)
			_exit(10);
	}
	_exit(0);
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Three producer processes, one consumer: per-producer order, content, no
 * loss, no duplicate. A small ring, so producers keep finding it full. */
static void test_multiprocess_producers(void)
{
	size_t mapped;
	struct ring *r = ring_new(16384, &mapped);
	pid_t pids[PRODUCERS];
	uint32_t next[PRODUCERS] = { 0 };
	unsigned char buf[sizeof(struct msg_header) + 4096];
	uint64_t received = 0, bad = 0;
	double deadline = now_seconds() + 120;

	CHECK(r != NULL);
	if (!r)
		return;
	for (uint32_t p = 0; p < PRODUCERS; p++) {
		pids[p] = fork();
		if (pids[p] == 0)
			producer_main(r, p);
		CHECK(pids[p] > 0);
	}
	while (received < (uint64_t)PRODUCERS * PER_PRODUCER && now_seconds() < deadline) {
		struct msg_header h;
		long n = ring_pop(r, buf, sizeof buf);

		if (n == 0) {
			sched_yield();
			continue;
		}
		memcpy(&h, buf, sizeof h);
		if (n < (long)sizeof h || h.producer >= PRODUCERS || h.seq != next[h.producer] ||
		    (size_t)n - sizeof h != varied_len(h.seq * 3 + h.producer, 600) ||
		    !pattern_ok(buf + sizeof h, (size_t)n - sizeof h, h.producer, h.seq)) {
			bad++;
			break;
		}
		next[h.producer]++;
		received++;
	}
	CHECK(bad == 0);
	CHECK(received == (uint64_t)PRODUCERS * PER_PRODUCER);
	for (uint32_t p = 0; p < PRODUCERS; p++) {
		if (received != (uint64_t)PRODUCERS * PER_PRODUCER)
			kill(pids[p], SIGKILL);
		CHECK(wait_child(pids[p]) == 0);
		CHECK(next[p] == PER_PRODUCER);
	}
	CHECK(ring_pop(r, buf, sizeof buf) == 0);
	CHECK(ring_used_bytes(r) == 0);
	ring_free(r, mapped);
}

/* A producer dies between reserve and commit (twice, with other records in
 * between): the consumer stops there until ring_reclaim() skips them. */
static void test_reclaim_dead_producer(void)
{
	size_t mapped;
	struct ring *r = ring_new(8192, &mapped);
	pid_t pid;
	int status;

	CHECK(r != NULL);
	if (!r)
		return;
	CHECK(push_msg(r, 1, 0, 10, 0) == 0);
	pid = fork();
	if (pid == 0) {
		struct ring_reservation res;
		unsigned char half[50];

		if (ring_reserve(r, 7, 300, &res) != 0)
			_exit(1);
		fill_pattern(half, sizeof half, 7, 0);
		ring_fill(r, &res, 0, half, sizeof half);
		if (push_msg(r, 1, 1, 20, 0) != 0 || ring_reserve(r, 7, 1000, &res) != 0)
			_exit(1);
		raise(SIGKILL);
		_exit(1);
	}
	CHECK(pid > 0);
	status = wait_child(pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(push_msg(r, 1, 2, 30, 1) == 0);

	CHECK(pop_expect(r, 1, 0, 10) == 1);
	CHECK(pop_expect(r, 1, 1, 20) == 0); /* stuck behind the dead reservation */
	CHECK(ring_used_bytes(r) > 0);
	CHECK(ring_reclaim(r, 8) == 0);      /* someone else's: nothing */
	CHECK(pop_expect(r, 1, 1, 20) == 0);
	CHECK(ring_reclaim(r, 7) == 2);
	CHECK(pop_expect(r, 1, 1, 20) == 1);
	CHECK(pop_expect(r, 1, 2, 30) == 1);
	CHECK(ring_pop(r, (char[8]){ 0 }, 8) == 0);
	CHECK(ring_used_bytes(r) == 0);
	CHECK(ring_reclaim(r, 7) == 0);
	/* And the ring goes on working across the skipped cells. */
	for (uint32_t i = 0; i < 500; i++) {
		CHECK(push_msg(r, 2, i, i % 700, 0) == 0);
		CHECK(pop_expect(r, 2, i, i % 700) == 1);
	}
	ring_free(r, mapped);
}

/* A producer killed while it holds the mutex: the next locker recovers it
 * (a plain mutex would hang here; the alarm turns that into a failure). */
static void test_mutex_owner_death(void)
{
	size_t mapped;
	struct ring *r = ring_new(4096, &mapped);

	CHECK(r != NULL);
	if (!r)
		return;
	alarm(20);
	for (int round = 0; round < 3; round++) {
		pid_t pid = fork();
		int status;

		if (pid == 0) {
			if (ring_lock(r) != 0)
				_exit(1);
			raise(SIGKILL);
			_exit(1);
		}
		CHECK(pid > 0);
		status = wait_child(pid);
		CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
		if (round == 1) {
			/* The recovery path of the supervisor's call. */
			CHECK(ring_reclaim(r, 5) == 0);
		}
		CHECK(push_msg(r, 1, (uint32_t)round, 50, 0) == 0);
		CHECK(pop_expect(r, 1, (uint32_t)round, 50) == 1);
	}
	alarm(0);
	ring_free(r, mapped);
}

/* The consumer dies; its respawned successor attaches and continues with
 * the next message. */
static void test_consumer_respawn(void)
{
	size_t mapped;
	struct ring *r = ring_new(1 << 18, &mapped);
	pid_t pid;
	int status;
	uint32_t seq;

	CHECK(r != NULL);
	if (!r)
		return;
	for (seq = 0; seq < 1000; seq++)
		CHECK(push_msg(r, 1, seq, seq % 150, 0) == 0);
	pid = fork();
	if (pid == 0) {
		struct ring *mine = ring_attach(r);

		for (uint32_t i = 0; i < 400; i++)
			if (!mine || pop_expect(mine, 1, i, i % 150) != 1)
				_exit(1);
		raise(SIGKILL);
		_exit(1);
	}
	CHECK(pid > 0);
	status = wait_child(pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	CHECK(ring_attach(r) == r);
	for (; seq < 1500; seq++)
		CHECK(push_msg(r, 1, seq, seq % 150, 0) == 0);
	for (uint32_t i = 400; i < 1500; i++)
		CHECK(pop_expect(r, 1, i, i % 150) == 1);
	CHECK(ring_pop(r, (char[8]){ 0 }, 8) == 0);
	ring_free(r, mapped);
}

static void test_segment_layout(void)
{
	long page = sysconf(_SC_PAGESIZE);
	struct shm_segment *seg = shm_create(4, 1000, 65536);
	struct shm_header *h;
	struct sessdir_entry e, got;

	CHECK(seg != NULL);
	if (!seg)
		return;
	h = &seg->header;
	CHECK(h->magic == SHM_MAGIC && h->layout_version == SHM_LAYOUT_VERSION);
	CHECK(h->worker_count == 4);
	CHECK(h->sessdir_off % (uint64_t)page == 0 && h->rings_off % (uint64_t)page == 0);
	CHECK(h->ring_size % (uint64_t)page == 0);
	CHECK(h->sessdir_off >= sizeof(struct shm_segment));
	CHECK(h->sessdir_size == sessdir_size(1000));
	CHECK(h->rings_off >= h->sessdir_off + h->sessdir_size);
	CHECK(h->ring_size >= ring_size(65536));
	CHECK(h->total_size == h->rings_off + 4 * h->ring_size);
	CHECK(atomic_load(&seg->control.accepting) == 1);
	CHECK(shm_ring(seg, 4) == NULL);

	for (uint32_t w = 0; w < 4; w++) {
		struct ring *r = shm_ring(seg, w);

		CHECK(r != NULL && ring_attach(r) == r);
		CHECK(ring_max_payload(r) >= 65536 - 16);
		/* Fill the last ring completely: its last cell is the segment's
		 * last bytes, so a short mapping would fault here. */
		for (uint32_t i = 0; push_msg(r, w, i, 1000, 0) == 0; i++)
			;
		CHECK(ring_used_bytes(r) > 60000);
		CHECK(pop_expect(r, w, 0, 1000) == 1);
	}
	CHECK(sessdir_attach(shm_sessdir(seg)) == shm_sessdir(seg));
	memset(&e, 0, sizeof e);
	strcpy(e.jid, "alice@example.com/phone");
	e.worker = 2;
	CHECK(sessdir_add(shm_sessdir(seg), &e, NULL) == 0);
	CHECK(sessdir_lookup_full(shm_sessdir(seg), "alice@example.com/phone", &got) == 0);
	CHECK(got.worker == 2);
	shm_destroy(seg);

	errno = 0;
	CHECK(shm_create(0, 1000, 65536) == NULL && errno == EINVAL);
	CHECK(shm_create(SHM_MAX_WORKERS + 1, 1000, 65536) == NULL);
	CHECK(shm_create(2, 0, 65536) == NULL);
	CHECK(shm_create(2, 1000, 0) == NULL);
}

static void cluster_write(struct shm_segment *seg, uint32_t k)
{
	shm_cluster_write_begin(seg);
	seg->cluster.node_id = k;
	seg->cluster.term = (uint64_t)k * 3;
	seg->cluster.leader_id = k ^ 0x5555;
	seg->cluster.role = k % 4;
	seg->cluster.peer_count = k % SHM_MAX_PEERS;
	snprintf(seg->cluster.leader_address, sizeof seg->cluster.leader_address,
		 "127.0.0.%u:%u", k % 250, k);
	seg->cluster.last_change_ms = (int64_t)k * 7;
	seg->cluster.peers[k % SHM_MAX_PEERS].id = k;
	shm_cluster_write_end(seg);
}

/* A writer process updates the cluster section as fast as it can; the
 * reader must only ever see whole updates. */
static void test_cluster_seqlock(void)
{
	struct shm_segment *seg = shm_create(1, 16, 4096);
	uint64_t reads = 0, torn = 0, distinct = 0;
	uint32_t last = 0;
	double deadline = now_seconds() + 5;
	pid_t pid;

	CHECK(seg != NULL);
	if (!seg)
		return;
	CHECK_STR(shm_role_name(ROLE_STANDALONE), "STANDALONE");
	CHECK_STR(shm_role_name(ROLE_FOLLOWER), "FOLLOWER");
	CHECK_STR(shm_role_name(ROLE_CANDIDATE), "CANDIDATE");
	CHECK_STR(shm_role_name(ROLE_LEADER), "LEADER");

	/* The writer runs until the reader has seen enough (control.stopping
	 * serves as the test's stop flag). It pauses a little between writes,
	 * as the election worker does (much longer) between loop turns: a
	 * writer that never pauses starves seqlock readers by design. */
	pid = fork();
	if (pid == 0) {
		for (uint32_t k = 1; !atomic_load(&seg->control.stopping); k++) {
			cluster_write(seg, k);
			for (int spin = 0; spin < 2000; spin++)
				shm_cpu_relax();
		}
		_exit(0);
	}
	CHECK(pid > 0);
	while (distinct < 5000 && now_seconds() < deadline) {
		struct shm_cluster c;
		char expect[64];
		uint32_t k;

		shm_cluster_read(seg, &c);
		reads++;
		k = c.node_id;
		if (k == 0)
			continue;
		snprintf(expect, sizeof expect, "127.0.0.%u:%u", k % 250, k);
		if (c.term != (uint64_t)k * 3 || c.leader_id != (k ^ 0x5555) || c.role != k % 4 ||
		    c.peer_count != k % SHM_MAX_PEERS || strcmp(c.leader_address, expect) ||
		    c.last_change_ms != (int64_t)k * 7 || c.peers[k % SHM_MAX_PEERS].id != k ||
		    (atomic_load(&c.seq) & 1) || k < last)
			torn++;
		if (k != last)
			distinct++;
		last = k;
	}
	atomic_store(&seg->control.stopping, 1);
	CHECK(torn == 0);
	/* The reader did run during the writes (on an overloaded machine the
	 * two rarely overlap, hence the low bar; torn reads are the test). */
	CHECK(distinct > 10);
	CHECK(reads >= distinct);
	CHECK(wait_child(pid) == 0);

	/* A writer that died inside its update: readers would wait for ever,
	 * until the supervisor recovers the count. */
	alarm(20);
	shm_cluster_write_begin(seg);
	seg->cluster.node_id = 42;
	shm_cluster_recover(seg);
	{
		struct shm_cluster c;

		shm_cluster_read(seg, &c);
		CHECK(c.node_id == 42);
	}
	cluster_write(seg, 43);
	alarm(0);
	CHECK(seg->cluster.node_id == 43 && !(atomic_load(&seg->cluster.seq) & 1));
	shm_destroy(seg);
}

int main(void)
{
	RUN(test_sizes);
	RUN(test_fifo_wraparound);
	RUN(test_full_ring);
	RUN(test_sizes_refused);
	RUN(test_push2_joins);
	RUN(test_multiprocess_producers);
	RUN(test_reclaim_dead_producer);
	RUN(test_mutex_owner_death);
	RUN(test_consumer_respawn);
	RUN(test_segment_layout);
	RUN(test_cluster_seqlock);
	return check_exit();
}
