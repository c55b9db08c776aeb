/*
 * shm: the one shared-memory segment of a node.
 *
 * The supervisor maps it MAP_SHARED|MAP_ANONYMOUS before it forks, so every
 * worker and the election worker see it at the same address; still, it holds
 * offsets, never pointers, so that a later change to a named segment (or a
 * debugger attaching) reads it the same way.
 *
 *   +--------------------+ 0
 *   | struct shm_header  |  magic, layout version, sizes, section offsets
 *   | struct shm_control |  supervisor -> workers: accepting, reload generation
 *   | struct shm_cluster |  election worker only (seqlock)
 *   | struct shm_worker[]|  each worker its own slot
 *   +--------------------+ header.sessdir_off
 *   | session directory  |  shm/sessdir.h
 *   +--------------------+ header.rings_off
 *   | inbound ring 0..N-1|  shm/ring.h, one per worker slot
 *   +--------------------+ header.total_size
 *
 * Writers: one writer per region wherever possible (a worker's own slot, the
 * election worker's cluster section). The session directory and the rings
 * have several writers; they use robust process-shared mutexes (a holder that
 * dies is detected by the next locker) plus generation counters, and the
 * supervisor purges a dead worker's entries before it respawns the slot.
 */
#ifndef XMPPD_SHM_H
#define XMPPD_SHM_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define SHM_MAGIC 0x584d505053484d31ull /* "XMPPSHM1" */
#define SHM_LAYOUT_VERSION 2
#define SHM_MAX_WORKERS 64
#define SHM_MAX_PEERS 16
#define SHM_CACHELINE 64

enum shm_role {
	ROLE_STANDALONE = 0,
	ROLE_FOLLOWER,
	ROLE_CANDIDATE,
	ROLE_LEADER,
};

struct shm_header {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t worker_count;
	uint64_t total_size;
	uint64_t sessdir_off;
	uint64_t sessdir_size;
	uint64_t rings_off;
	uint64_t ring_size; /* bytes per worker ring, including its header */
	uint8_t reserved[64];
};

/* Written by the supervisor only. */
struct shm_control {
	_Alignas(SHM_CACHELINE) _Atomic uint32_t accepting;   /* 1 = accept, 0 = disabled */
	_Atomic uint32_t stopping;                            /* 1 = graceful stop under way */
	_Atomic uint64_t reload_generation;                   /* bumped after a good reload */
	_Atomic uint32_t log_level;                           /* enum log_level, applied at reload */
	int64_t start_time;                                   /* unix seconds */
	/* TLS files the workers load on the next reload generation. Written
	 * before reload_generation is bumped (release), read after (acquire). */
	char tls_key[1024];
	char tls_cert[1024];
	char tls_bundle[1024];
	uint8_t reserved[64];
};

struct shm_peer {
	uint32_t id;
	char name[64];
	char address[64];
	int64_t last_keepalive_ms;
	uint32_t healthy;
	uint32_t pad;
};

/* Written by the election worker only, under the seqlock: seq odd while a
 * write is in progress; readers retry until they read the same even value
 * before and after copying. */
struct shm_cluster {
	_Alignas(SHM_CACHELINE) _Atomic uint64_t seq;
	uint32_t node_id;
	uint32_t role; /* enum shm_role */
	uint64_t term;
	uint32_t leader_id;
	uint32_t peer_count;
	char node_name[64];
	char leader_address[64];
	int64_t last_change_ms; /* unix milliseconds */
	int64_t heartbeat_ms;   /* election worker's last loop turn */
	int32_t pid;
	uint32_t pad;
	struct shm_peer peers[SHM_MAX_PEERS];
};

enum shm_worker_state {
	WORKER_EMPTY = 0,
	WORKER_STARTING,
	WORKER_RUNNING,
	WORKER_STOPPING,
	WORKER_DEAD,
};

/* Written by the worker in this slot only (the supervisor resets it when it
 * respawns the slot). Counters are monotonic except connections. */
struct shm_worker {
	_Alignas(SHM_CACHELINE) _Atomic int32_t pid;
	_Atomic uint32_t state;      /* enum shm_worker_state */
	_Atomic uint32_t generation; /* bumped by the supervisor at each (re)spawn */
	_Atomic uint32_t connections;
	_Atomic uint64_t heartbeat_ms;
	_Atomic uint64_t stanzas_in;
	_Atomic uint64_t stanzas_out;
	_Atomic uint64_t bytes_in;
	_Atomic uint64_t bytes_out;
	_Atomic uint64_t accepted;
	_Atomic uint64_t reload_generation_seen;
	_Atomic uint32_t tls_reload_failed; /* 1 if the last reload failed in this worker */
	uint32_t pad;
	uint8_t reserved[32];
};

/* Failed component handshakes per source address, shared by the workers:
 * SO_REUSEPORT spreads one address's connections over them, so a table per
 * worker would let a guesser go worker-count times faster. Written under
 * LOCK by workers/component.c (fail_delay_ms), which owns the policy. */
#define SHM_FAIL_SLOTS 64
#define SHM_FAIL_IP_MAX 64

struct shm_fail_record {
	char ip[SHM_FAIL_IP_MAX];
	uint32_t count;
	int64_t last_ms;
};

struct shm_fails {
	_Alignas(SHM_CACHELINE) pthread_mutex_t lock;
	struct shm_fail_record slots[SHM_FAIL_SLOTS];
};

struct shm_segment {
	struct shm_header header;
	struct shm_control control;
	struct shm_cluster cluster;
	struct shm_fails fails;
	struct shm_worker workers[SHM_MAX_WORKERS];
	/* sessdir and rings follow at header.sessdir_off / rings_off */
};

_Static_assert(offsetof(struct shm_segment, header) == 0, "header first");
_Static_assert(offsetof(struct shm_segment, control) % SHM_CACHELINE == 0, "control aligned");
_Static_assert(offsetof(struct shm_segment, cluster) % SHM_CACHELINE == 0, "cluster aligned");
_Static_assert(offsetof(struct shm_segment, workers) % SHM_CACHELINE == 0, "workers aligned");
_Static_assert(sizeof(struct shm_worker) % SHM_CACHELINE == 0, "worker slots on own lines");

/* Create and initialise the segment (supervisor, before fork): the header,
 * an empty session directory of MAX_SESSIONS entries and WORKER_COUNT rings
 * of RING_BYTES each. Returns NULL with errno set. */
struct shm_segment *shm_create(uint32_t worker_count, uint32_t max_sessions,
			       uint64_t ring_bytes);
void shm_destroy(struct shm_segment *seg);

struct sessdir;
struct ring;
struct sessdir *shm_sessdir(struct shm_segment *seg);
struct ring *shm_ring(struct shm_segment *seg, uint32_t worker);

/* Seqlock-protected cluster section. */
void shm_cluster_write_begin(struct shm_segment *seg);
void shm_cluster_write_end(struct shm_segment *seg);
void shm_cluster_read(struct shm_segment *seg, struct shm_cluster *out);
/* Supervisor, after reaping the election worker: a writer killed between
 * write_begin and write_end leaves seq odd, and readers would wait for it
 * forever. Makes seq even again; the fields may be half-written until the
 * respawned election worker rewrites them. */
void shm_cluster_recover(struct shm_segment *seg);

const char *shm_role_name(enum shm_role role);

/* Robust process-shared mutexes, for the regions with several writers (the
 * rings and the session directory). shm_mutex_lock() returns 0; 1 when the
 * previous holder died holding it: the mutex is usable again, and the caller
 * must repair whatever the dead holder may have left half-done before it
 * unlocks; or -errno. */
int shm_mutex_init(pthread_mutex_t *m);
int shm_mutex_lock(pthread_mutex_t *m);
void shm_mutex_unlock(pthread_mutex_t *m);

/* Busy-wait hint for seqlock readers and spinning producers. */
static inline void shm_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

#endif
