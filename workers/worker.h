/*
 * worker: one listener worker process (internal header shared by the loop,
 * workers/worker.c, and the protocol code, workers/c2s.c).
 *
 * The worker owns one io_uring ring, made after the fork. Everything it does
 * is a completion: multishot accept on its slot's listening sockets,
 * multishot receive into a provided-buffer ring (idle connections hold no
 * receive buffer), a read on its doorbell eventfd (other workers pushed
 * stanzas into its inbound ring), a read on its signalfd, and a periodic
 * timeout. Sends are collected during a loop turn and submitted together
 * with everything else in one io_uring_submit per turn.
 *
 * A connection's output is two buffers: FLIGHT, which the kernel is sending
 * (never touched while a send is in flight), and PENDING, which grows with
 * new output; when FLIGHT is sent the two swap. Plaintext goes through
 * wolfSSL first when the stream is encrypted, so PENDING always holds wire
 * bytes.
 *
 * Connection ids are slot indexes; a slot's generation changes on every
 * reuse, and routing entries carry (index, generation), so a stanza for a
 * connection that closed meanwhile is recognised and re-routed by the
 * offline rules instead of reaching whoever got the slot next.
 */
#ifndef XMPPD_WORKER_H
#define XMPPD_WORKER_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/config.h"
#include "shm/sessdir.h"
#include "shm/shm.h"
#include "workers/sasl.h"
#include "workers/stanza.h"

struct tls_ctx;
struct tls_conn;
struct xmlstream;
struct accounts;
struct sessdir;
struct ring;

/* What the supervisor hands a worker at fork. */
struct worker_args {
	int index;                 /* slot */
	const struct config *cfg;
	struct shm_segment *shm;
	int *listen_fds;           /* cfg->listener_count sockets of this slot */
	int *doorbells;            /* worker_count eventfds, doorbells[i] rings worker i */
	int supervisor_pid;
	struct tls_ctx *tls;       /* validated by the supervisor; inherited */
};

/* Exit codes of a worker: the supervisor does not respawn EXIT_FATAL. */
#define WORKER_EXIT_FATAL 3

int worker_main(const struct worker_args *args);

/* A stream's state. Components use WAIT_STREAM, TLS_HANDSHAKE, WAIT_AUTH
 * (header sent, handshake next), BOUND and CLOSING: BOUND means "stanzas
 * may be delivered to it" for both kinds, which is all the router asks. */
enum c2s_state {
	C2S_WAIT_STREAM = 0, /* waiting for <stream:stream> */
	C2S_TLS_HANDSHAKE,   /* after <proceed/> (or at accept for direct TLS) until done */
	C2S_WAIT_AUTH,       /* features sent, SASL next */
	C2S_SASL,            /* SASL exchange under way */
	C2S_WAIT_BIND,       /* authenticated, bind next */
	C2S_BOUND,           /* session established */
	C2S_CLOSING,         /* </stream:stream> sent, draining */
};

struct conn;

/* The protocol a listener speaks (c2s.c, component.c): the loop calls these
 * and knows nothing else about streams. */
struct conn_handler {
	int (*open)(struct conn *c);
	/* Plaintext from the peer. */
	void (*input)(struct conn *c, const char *data, size_t len);
	/* The TLS handshake finished. */
	void (*tls_ready)(struct conn *c);
	/* The connection is gone (peer closed, error, or we closed it):
	 * release the session. Called exactly once. */
	void (*closed)(struct conn *c);
	/* Once a second: timeouts and giving back idle memory. */
	void (*tick)(struct conn *c);
	/* Close the stream with a stream error (RFC 6120 4.9). */
	void (*stream_error)(struct conn *c, const char *condition, const char *text);
};

extern const struct conn_handler c2s_handler;
extern const struct conn_handler component_handler;

struct conn {
	uint32_t id;         /* slot index */
	uint32_t gen;
	int fd;
	int listener;        /* index into cfg->listeners */
	const struct conn_handler *handler;
	uint8_t ops;         /* io_uring operations in flight on this fd */
	bool recv_armed;
	bool send_in_flight;
	bool dirty;          /* on the worker's send list */
	bool closing;        /* close once output is flushed */
	bool write_shut;     /* our FIN is sent (after </stream:stream>) */
	bool fd_closed;
	bool stream_open;    /* our stream header was sent */
	bool authenticated;
	bool tls_active;     /* TLS established (or handshaking) */
	bool available;      /* sent available presence */
	bool counted;        /* counted in the shm connections gauge */
	bool closed_notified;
	enum c2s_state state;
	uint8_t auth_failures;
	int16_t priority;
	struct buf flight, pending;
	size_t flight_off;
	struct conn *next_dirty;
	struct tls_conn *tls;
	struct xmlstream *xml;
	struct sasl_session *sasl;   /* only during authentication */
	void *proto;                 /* protocol state owned by c2s.c */
	char *jid;                   /* full JID once bound (heap) */
	size_t bare_len;
	char stream_id[24];
	char peer[SESSDIR_ADDR_MAX];
	int64_t opened_ms;
	int64_t last_input_ms;       /* bytes last arrived (or opened_ms) */
	int64_t close_deadline_ms;
};

/* The worker process's state: one per process, so a single global. */
struct worker {
	int index;
	uint32_t generation;
	const struct config *cfg;
	struct shm_segment *shm;
	struct shm_worker *slot;
	struct sessdir *sessdir;
	struct ring *inbox;
	int *doorbells;
	struct accounts *accounts;
	struct tls_ctx *tls;
	bool stopping;
	int64_t now_ms;          /* wall clock, refreshed each loop turn */
	char *scratch;           /* max_stanza_size + slack, for ring pops and rewrites */
	size_t scratch_cap;
};

extern struct worker worker;

/* --- provided by workers/worker.c ---------------------------------------- */

/* Queue plaintext for the peer (encrypted first when TLS is active).
 * Returns 0, or -ENOMEM/-EPIPE: the caller then closes the connection. */
int conn_write(struct conn *c, const void *data, size_t len);
int conn_write_str(struct conn *c, const char *s);
/* Start TLS on C after <proceed/> was queued: output queued so far goes out
 * in plaintext, everything after is TLS. */
int conn_start_tls(struct conn *c);
/* Close after the queued output is sent. */
void conn_close(struct conn *c);
/* The peer sent </stream:stream> (an xmlstream on_stream_close callback;
 * CONN is the struct conn): answer with ours unless already closing, then
 * close. */
void conn_answer_stream_close(void *conn);
/* The connection (id, gen) if it is still the same one, else NULL. */
struct conn *conn_lookup(uint32_t id, uint32_t gen);
/* BYTES of heap went back to malloc (a hibernated parser, a trimmed
 * buffer): once enough has, the once-a-second sweep returns the free pages
 * to the kernel (see worker.c, heap_trim). */
void worker_released(size_t bytes);

/* Push a message for worker TARGET's inbound ring (kept locally and retried
 * when the ring is full; never dropped). */
int worker_send_to(int target, const void *hdr, size_t hdr_len, const void *body,
		   size_t body_len);

/* --- provided by workers/c2s.c ------------------------------------------- */

/* Send bound client C's current presence to FROM (a probe). */
void c2s_answer_probe(struct conn *c, const char *from);
/* The login hand-off's answer (workers/router.h) for C's attempt SEQ. */
void c2s_auth_answer(struct conn *c, uint32_t seq, bool ok, const char *condition);
/* Called once in the worker after fork, and when closing. */
int c2s_init(void);
void c2s_fini(void);

/* --- provided by workers/component.c ------------------------------------- */

/* A client logging in with auth: callbridge: ask a connected call bridge
 * about USER / PASSWORD for client connection C, attempt SEQ. 0 when asked
 * (the answer comes through c2s_auth_answer; BRIDGE is then the directory
 * entry of the bridge stream asked), -ENOENT when no call bridge is
 * connected, -errno otherwise. */
int component_auth_request(struct conn *c, uint32_t seq, const char *user, const char *password,
			   struct sessdir_entry *bridge);
void component_fini(void);

#endif
