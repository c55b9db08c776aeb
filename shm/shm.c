/*
 * shm: creation of the segment, its cluster seqlock and the robust mutexes
 * that the rings and the session directory build on. The layout is described
 * in shm/shm.h.
 */
#include "shm/shm.h"

#include <errno.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shm/ring.h"
#include "shm/sessdir.h"

_Static_assert(sizeof(struct shm_cluster) % sizeof(uint64_t) == 0,
	       "seqlock readers copy the cluster section in 64-bit words");

static uint64_t align_up(uint64_t v, uint64_t to)
{
	return (v + to - 1) / to * to;
}

struct shm_segment *shm_create(uint32_t worker_count, uint32_t max_sessions,
			       uint64_t ring_bytes)
{
	struct shm_segment *seg = MAP_FAILED;
	uint64_t page, sessdir_off, sessdir_bytes, rings_off, ring_stride, total;
	int err = EINVAL;

	if (worker_count == 0 || worker_count > SHM_MAX_WORKERS || ring_bytes > SIZE_MAX)
		goto fail;
	page = (uint64_t)sysconf(_SC_PAGESIZE);
	sessdir_bytes = sessdir_size(max_sessions);
	ring_stride = ring_size((size_t)ring_bytes);
	if (sessdir_bytes == 0 || ring_stride == 0)
		goto fail;
	/* Page-aligned sections: each ring and the directory start on their
	 * own pages, so no false sharing across sections and a debugger can
	 * map a single one. */
	ring_stride = align_up(ring_stride, page);
	sessdir_off = align_up(sizeof(struct shm_segment), page);
	rings_off = align_up(sessdir_off + sessdir_bytes, page);
	total = rings_off + (uint64_t)worker_count * ring_stride;
	if (total > SIZE_MAX)
		goto fail;

	/* Anonymous shared pages are zero and only become resident when
	 * touched: a ring or directory slot costs memory once it is used. */
	seg = mmap(NULL, (size_t)total, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
		   -1, 0);
	if (seg == MAP_FAILED) {
		err = errno;
		goto fail;
	}

	seg->header.magic = SHM_MAGIC;
	seg->header.layout_version = SHM_LAYOUT_VERSION;
	seg->header.worker_count = worker_count;
	seg->header.total_size = total;
	seg->header.sessdir_off = sessdir_off;
	seg->header.sessdir_size = sessdir_bytes;
	seg->header.rings_off = rings_off;
	seg->header.ring_size = ring_stride;
	atomic_store_explicit(&seg->control.accepting, 1, memory_order_relaxed);
	seg->control.start_time = (int64_t)time(NULL);
	if ((err = -shm_mutex_init(&seg->fails.lock)) != 0)
		goto fail;

	if (!sessdir_init((char *)seg + sessdir_off, max_sessions)) {
		err = errno;
		goto fail;
	}
	for (uint32_t i = 0; i < worker_count; i++) {
		if (!ring_init((char *)seg + rings_off + i * ring_stride, (size_t)ring_stride)) {
			err = errno;
			goto fail;
		}
	}
	return seg;

fail:
	if (seg != MAP_FAILED)
		munmap(seg, (size_t)total);
	errno = err;
	return NULL;
}

void shm_destroy(struct shm_segment *seg)
{
	if (seg)
		munmap(seg, (size_t)seg->header.total_size);
}

struct sessdir *shm_sessdir(struct shm_segment *seg)
{
	return (struct sessdir *)((char *)seg + seg->header.sessdir_off);
}

struct ring *shm_ring(struct shm_segment *seg, uint32_t worker)
{
	if (worker >= seg->header.worker_count)
		return NULL;
	return (struct ring *)((char *)seg + seg->header.rings_off +
			       (uint64_t)worker * seg->header.ring_size);
}

/*
 * Cluster seqlock. The writer's field stores are plain (the election worker
 * assigns seg->cluster.* between begin and end); the release fence after the
 * odd count orders them after it, and the release store of the even count
 * orders them before it. Readers load the section word by word with relaxed
 * atomics so the compiler cannot tear or cache them, then check the count
 * again behind an acquire fence.
 */
void shm_cluster_write_begin(struct shm_segment *seg)
{
	uint64_t seq = atomic_load_explicit(&seg->cluster.seq, memory_order_relaxed);

	atomic_store_explicit(&seg->cluster.seq, seq | 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

void shm_cluster_write_end(struct shm_segment *seg)
{
	uint64_t seq = atomic_load_explicit(&seg->cluster.seq, memory_order_relaxed);

	atomic_store_explicit(&seg->cluster.seq, (seq | 1) + 1, memory_order_release);
}

void shm_cluster_recover(struct shm_segment *seg)
{
	uint64_t seq = atomic_load_explicit(&seg->cluster.seq, memory_order_relaxed);

	if (seq & 1)
		atomic_store_explicit(&seg->cluster.seq, seq + 1, memory_order_release);
}

void shm_cluster_read(struct shm_segment *seg, struct shm_cluster *out)
{
	enum { WORDS = sizeof(struct shm_cluster) / sizeof(uint64_t) };
	const uint64_t *src = (const uint64_t *)&seg->cluster;
	uint64_t copy[WORDS];
	unsigned spins = 0;

	for (;;) {
		uint64_t before = atomic_load_explicit(&seg->cluster.seq, memory_order_acquire);

		if (!(before & 1)) {
			for (size_t i = 0; i < WORDS; i++)
				copy[i] = __atomic_load_n(&src[i], __ATOMIC_RELAXED);
			atomic_thread_fence(memory_order_acquire);
			if (atomic_load_explicit(&seg->cluster.seq, memory_order_relaxed) == before)
				break;
		}
		/* A write takes microseconds; a writer preempted (or dead, until
		 * the supervisor recovers the count) must not cost a whole core. */
		if (++spins < 1000)
			shm_cpu_relax();
		else
			sched_yield();
	}
	memcpy(out, copy, sizeof *out);
}

const char *shm_role_name(enum shm_role role)
{
	switch (role) {
	case ROLE_STANDALONE:
		return "STANDALONE";
	case ROLE_FOLLOWER:
		return "FOLLOWER";
	case ROLE_CANDIDATE:
		return "CANDIDATE";
	case ROLE_LEADER:
		return "LEADER";
	}
	return "UNKNOWN";
}

int shm_mutex_init(pthread_mutex_t *m)
{
	pthread_mutexattr_t attr;
	int rc;

	rc = pthread_mutexattr_init(&attr);
	if (rc)
		return -rc;
	/* PTHREAD_MUTEX_ROBUST is an enum constant in glibc: never #ifdef it,
	 * or robustness silently compiles out. */
	rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(m, &attr);
	pthread_mutexattr_destroy(&attr);
	return -rc;
}

int shm_mutex_lock(pthread_mutex_t *m)
{
	int rc = pthread_mutex_lock(m);

	if (rc == EOWNERDEAD) {
		/* Consistent first: if we die while repairing, the next locker
		 * gets EOWNERDEAD again and repeats the (idempotent) repair. */
		rc = pthread_mutex_consistent(m);
		if (rc == 0)
			return 1;
		pthread_mutex_unlock(m);
	}
	return -rc;
}

void shm_mutex_unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}
