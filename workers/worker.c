/*
 * worker.c: the io_uring loop of a listener worker (see worker.h).
 *
 * One loop turn: queue a send for every connection with new output, retry
 * stanzas waiting for room in another worker's ring, ring those workers'
 * doorbells, then one io_uring_submit_and_wait; then handle every
 * completion. Protocol work happens in c2s.c, called from the completion
 * handlers; this file does connections, buffers and I/O only.
 *
 * Closing a connection: conn_close() marks it closing (c2s has already
 * queued </stream:stream> or a stream error); once its output is sent we
 * shut down our write side and keep reading until the peer closes or the
 * close deadline passes; conn_destroy() then shuts the socket down, which
 * completes the outstanding receive, and the slot is freed when no
 * operation on it is left in flight.
 */
#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <malloc.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/slab.h"
#include "shm/ring.h"
#include "shm/sessdir.h"
#include "storage/accounts.h"
#include "workers/tls.h"
#include "workers/router.h"
#include "workers/worker.h"
#include "workers/xmlstream.h"

struct worker worker;

enum op {
	OP_ACCEPT = 1,
	OP_RECV,
	OP_SEND,
	OP_DOORBELL,
	OP_SIGNAL,
	OP_TIMER,
	OP_CANCEL,
};

#define RECV_GROUP 1
#define RECV_BUFS 512          /* power of two */
#define RECV_BUF_SIZE 8192
#define RING_ENTRIES 4096
#define TICK_MS 100
#define CLOSE_GRACE_MS 2000     /* wait this long for the peer's </stream> */
#define OUTPUT_LIMIT (16u << 20) /* a peer that does not read: close it */

static inline uint64_t ud_pack(enum op op, uint32_t id, uint32_t gen)
{
	return ((uint64_t)op << 56) | ((uint64_t)(gen & 0xffffff) << 32) | id;
}
static inline enum op ud_op(uint64_t ud) { return (enum op)(ud >> 56); }
static inline uint32_t ud_id(uint64_t ud) { return (uint32_t)ud; }

/* A message that did not fit into another worker's ring yet. */
struct backlog_msg {
	struct backlog_msg *next;
	size_t len;
	char data[];
};

static struct io_uring uring;
static struct io_uring_buf_ring *recv_ring;
static char *recv_bufs;
static struct conn **conns;
static uint32_t conn_cap, conn_live;
static uint32_t *free_ids;
static uint32_t free_count;
static uint32_t next_gen = 1;
static struct conn *dirty_head;
static int signal_fd = -1;
static int listen_fds[CONFIG_MAX_LISTENERS];
static bool accept_armed[CONFIG_MAX_LISTENERS];
static bool accepting;
static uint64_t doorbell_value;
static struct signalfd_siginfo signal_info;
static struct __kernel_timespec tick_ts = { .tv_sec = 0, .tv_nsec = TICK_MS * 1000000L };
static struct backlog_msg **backlog_head, **backlog_tail;
static bool *doorbell_owed;
static bool backlog_pending;
static int64_t drain_deadline_ms;
static int64_t last_sweep_ms;
/* Heap bytes freed since the last malloc_trim (worker_released). */
static size_t released_since_trim;
static uint64_t reload_seen;
static char tls_plain[16384];
static pid_t supervisor_pid;

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&uring);
	while (!sqe) {
		io_uring_submit(&uring);
		sqe = io_uring_get_sqe(&uring);
	}
	return sqe;
}

/* ---- buffers ------------------------------------------------------------- */

/* ---- connections ---------------------------------------------------------- */

static void mark_dirty(struct conn *c)
{
	if (!c->dirty && !c->fd_closed) {
		c->dirty = true;
		c->next_dirty = dirty_head;
		dirty_head = c;
	}
}

static int queue_wire(struct conn *c, const void *data, size_t len)
{
	if (c->pending.len + c->flight.len + len > OUTPUT_LIMIT)
		return -ENOBUFS;
	int rc = buf_add(&c->pending, data, len);
	if (rc == 0)
		mark_dirty(c);
	return rc;
}

static int tls_output(void *arg, const void *data, size_t len)
{
	return queue_wire(arg, data, len) == 0 ? 0 : -1;
}

int conn_write(struct conn *c, const void *data, size_t len)
{
	if (c->fd_closed)
		return -EPIPE;
	atomic_fetch_add_explicit(&worker.slot->bytes_out, len, memory_order_relaxed);
	if (c->tls_active)
		return tls_conn_write(c->tls, data, len) == 0 ? 0 : -EPIPE;
	return queue_wire(c, data, len);
}

int conn_write_str(struct conn *c, const char *s)
{
	return conn_write(c, s, strlen(s));
}

int conn_start_tls(struct conn *c)
{
	c->tls = tls_conn_new(worker.tls, tls_output, c);
	if (!c->tls)
		return -ENOMEM;
	c->tls_active = true;
	return 0;
}

struct conn *conn_lookup(uint32_t id, uint32_t gen)
{
	if (id >= conn_cap || !conns[id])
		return NULL;
	struct conn *c = conns[id];
	return c->gen == gen && !c->fd_closed ? c : NULL;
}

static struct conn *conn_new(int fd, int listener)
{
	if (free_count == 0) {
		uint32_t cap = conn_cap ? conn_cap * 2 : 1024;
		struct conn **nc = realloc(conns, cap * sizeof *nc);
		if (!nc)
			return NULL;
		conns = nc;
		uint32_t *nf = realloc(free_ids, cap * sizeof *nf);
		if (!nf)
			return NULL;
		free_ids = nf;
		for (uint32_t i = cap; i > conn_cap; i--) {
			conns[i - 1] = NULL;
			free_ids[free_count++] = i - 1;
		}
		conn_cap = cap;
	}
	struct conn *c = slab_alloc(sizeof *c);
	if (!c)
		return NULL;
	c->id = free_ids[--free_count];
	c->gen = next_gen++ & 0xffffff;
	if (c->gen == 0)
		c->gen = next_gen++ & 0xffffff;
	c->fd = fd;
	c->listener = listener;
	c->opened_ms = worker.now_ms;
	c->last_input_ms = worker.now_ms;
	conns[c->id] = c;
	conn_live++;
	atomic_fetch_add_explicit(&worker.slot->connections, 1, memory_order_relaxed);
	c->counted = true;
	return c;
}

static void conn_free(struct conn *c)
{
	released_since_trim += sizeof *c + c->flight.cap + c->pending.cap +
			       (c->xml ? xmlstream_memory(c->xml) : 0) +
			       (c->tls ? TLS_CONN_HEAP_ESTIMATE : 0);
	if (c->fd >= 0)
		close(c->fd);
	if (c->tls)
		tls_conn_free(c->tls);
	if (c->xml)
		xmlstream_free(c->xml);
	buf_free(&c->flight);
	buf_free(&c->pending);
	conns[c->id] = NULL;
	free_ids[free_count++] = c->id;
	conn_live--;
	slab_free(c, sizeof *c);
}

/* Stop everything on C now; the slot goes when no operation is in flight. */
static void conn_destroy(struct conn *c)
{
	if (!c->fd_closed)
		log_debug("connection %u from %s closed after %lld ms", c->id, c->peer,
			  (long long)(worker.now_ms - c->opened_ms));
	if (!c->closed_notified) {
		c->closed_notified = true;
		c->handler->closed(c);
	}
	if (c->counted) {
		c->counted = false;
		atomic_fetch_sub_explicit(&worker.slot->connections, 1, memory_order_relaxed);
	}
	if (!c->fd_closed) {
		c->fd_closed = true;
		shutdown(c->fd, SHUT_RDWR); /* completes the outstanding receive */
	}
	if (c->ops == 0 && !c->dirty)
		conn_free(c);
}

void conn_close(struct conn *c)
{
	if (c->closing || c->fd_closed)
		return;
	c->closing = true;
	c->close_deadline_ms = worker.now_ms + CLOSE_GRACE_MS;
	if (c->tls && tls_conn_handshake_done(c->tls))
		tls_conn_shutdown(c->tls);
	mark_dirty(c);
}

void conn_answer_stream_close(void *conn)
{
	struct conn *c = conn;
	if (c->state != C2S_CLOSING) {
		conn_write_str(c, "</stream:stream>");
		c->state = C2S_CLOSING;
	}
	conn_close(c);
}

/* Graceful stop of one stream: system-shutdown where a stream is open. */
static void conn_shutdown(struct conn *c)
{
	if (c->state == C2S_CLOSING)
		return;
	if (c->stream_open && c->state != C2S_TLS_HANDSHAKE) {
		c->handler->stream_error(c, "system-shutdown", NULL);
	} else {
		c->state = C2S_CLOSING;
		conn_close(c);
	}
}

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = RECV_GROUP;
	io_uring_sqe_set_data64(sqe, ud_pack(OP_RECV, c->id, c->gen));
	c->ops++;
	c->recv_armed = true;
}

static void queue_send(struct conn *c)
{
	if (c->flight.len == 0 && c->pending.len) {
		struct buf t = c->flight;
		c->flight = c->pending;
		c->pending = t;
		c->pending.len = 0;
		c->flight_off = 0;
	}
	if (c->flight.len == c->flight_off)
		return;
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_send(sqe, c->fd, c->flight.data + c->flight_off,
			   c->flight.len - c->flight_off, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_SEND, c->id, c->gen));
	c->ops++;
	c->send_in_flight = true;
}

static void flush_dirty(void)
{
	while (dirty_head) {
		struct conn *c = dirty_head;
		dirty_head = c->next_dirty;
		c->dirty = false;
		if (c->fd_closed) {
			if (c->ops == 0)
				conn_free(c);
			continue;
		}
		if (!c->send_in_flight)
			queue_send(c);
		if (!c->send_in_flight && c->closing && !c->write_shut) {
			c->write_shut = true;
			shutdown(c->fd, SHUT_WR);
		}
	}
}

/* ---- accept ---------------------------------------------------------------- */

static void arm_accept(int l)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_multishot_accept(sqe, listen_fds[l], NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_ACCEPT, (uint32_t)l, 0));
	accept_armed[l] = true;
}

static void set_accepting(bool on)
{
	if (on == accepting)
		return;
	accepting = on;
	for (int l = 0; l < worker.cfg->listener_count; l++) {
		if (on && !accept_armed[l]) {
			arm_accept(l);
		} else if (!on && accept_armed[l]) {
			struct io_uring_sqe *sqe = get_sqe();
			io_uring_prep_cancel64(sqe, ud_pack(OP_ACCEPT, (uint32_t)l, 0), 0);
			io_uring_sqe_set_data64(sqe, ud_pack(OP_CANCEL, 0, 0));
		}
	}
}

static void peer_name(int fd, char *out, size_t cap)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0) {
		if (ss.ss_family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
			port = ntohs(in->sin_port);
		} else if (ss.ss_family == AF_INET6) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
			port = ntohs(in6->sin6_port);
		}
	}
	snprintf(out, cap, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
}

static void on_accept(struct io_uring_cqe *cqe)
{
	int l = (int)ud_id(cqe->user_data);
	if (!(cqe->flags & IORING_CQE_F_MORE)) {
		accept_armed[l] = false;
		if (accepting && !worker.stopping)
			arm_accept(l);
	}
	if (cqe->res < 0) {
		if (cqe->res != -ECANCELED)
			log_warn("accept on listener %d failed: %s", l, strerror(-cqe->res));
		return;
	}
	int fd = cqe->res;
	if (worker.stopping || conn_live >= worker.cfg->max_connections) {
		if (!worker.stopping)
			log_warn("connection refused: %u connections is this worker's limit",
				 worker.cfg->max_connections);
		close(fd);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct conn *c = conn_new(fd, l);
	if (!c) {
		log_error("out of memory accepting a connection");
		close(fd);
		return;
	}
	atomic_fetch_add_explicit(&worker.slot->accepted, 1, memory_order_relaxed);
	peer_name(fd, c->peer, sizeof c->peer);
	log_debug("connection %u from %s accepted on listener %d", c->id, c->peer, l);
	const struct listener_config *lc = &worker.cfg->listeners[l];
	c->handler = lc->type == LISTENER_COMPONENT ? &component_handler : &c2s_handler;
	if (c->handler->open(c) < 0) {
		conn_destroy(c);
		return;
	}
	if (lc->tls == TLS_MODE_DIRECT) {
		/* TLS from the first byte: the stream begins after the handshake */
		if (conn_start_tls(c) < 0) {
			log_error("out of memory for TLS with %s", c->peer);
			conn_destroy(c);
			return;
		}
		c->state = C2S_TLS_HANDSHAKE;
	}
	arm_recv(c);
}

/* ---- receive ---------------------------------------------------------------- */

static void tls_input(struct conn *c, const char *data, size_t len)
{
	if (tls_conn_feed(c->tls, data, len) < 0) {
		conn_destroy(c);
		return;
	}
	if (!tls_conn_handshake_done(c->tls)) {
		enum tls_status st = tls_conn_handshake(c->tls);
		if (st == TLS_WANT_READ)
			return;
		if (st != TLS_OK) {
			log_info("TLS handshake with %s failed: %s", c->peer, tls_conn_error(c->tls));
			conn_destroy(c);
			return;
		}
		/* The client's Finished needs no answer from a TLS 1.3 server
		 * that sends no session tickets, so its ACK waits for the
		 * delayed-ACK timer; a client with Nagle on (tsung, Erlang's
		 * default) holds its next stream header until then: 40 ms per
		 * login. Acknowledge at once. */
		int one = 1;
		setsockopt(c->fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof one);
		c->handler->tls_ready(c);
		/* the handshake's temporaries and the arrays tls_conn_trim freed */
		released_since_trim += TLS_HANDSHAKE_HEAP_ESTIMATE;
	}
	while (!c->fd_closed) {
		enum tls_status st = TLS_OK;
		long n = tls_conn_read(c->tls, tls_plain, sizeof tls_plain, &st);
		if (n > 0) {
			c->handler->input(c, tls_plain, (size_t)n);
			continue;
		}
		if (st == TLS_WANT_READ)
			break;
		if (st == TLS_CLOSED && !c->closing) {
			conn_close(c); /* answers close_notify with ours, then FIN */
			break;
		}
		if (st == TLS_ERROR)
			log_info("TLS error from %s: %s", c->peer, tls_conn_error(c->tls));
		conn_destroy(c);
		break;
	}
}

static void on_recv(struct io_uring_cqe *cqe)
{
	struct conn *c = conns[ud_id(cqe->user_data)];
	bool more = cqe->flags & IORING_CQE_F_MORE;
	/* The operation's reference (c->ops) is dropped only at the end, so
	 * nothing called from here can free C under us. */
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		char *data = recv_bufs + (size_t)bid * RECV_BUF_SIZE;
		if (cqe->res > 0 && !c->fd_closed) {
			c->last_input_ms = worker.now_ms;
			atomic_fetch_add_explicit(&worker.slot->bytes_in, (uint64_t)cqe->res,
						  memory_order_relaxed);
			if (c->tls_active)
				tls_input(c, data, (size_t)cqe->res);
			else
				c->handler->input(c, data, (size_t)cqe->res);
		}
		io_uring_buf_ring_add(recv_ring, data, RECV_BUF_SIZE, (unsigned short)bid,
				      io_uring_buf_ring_mask(RECV_BUFS), 0);
		io_uring_buf_ring_advance(recv_ring, 1);
	}
	if (!c->fd_closed && (cqe->res == 0 || (cqe->res < 0 && cqe->res != -ENOBUFS)))
		conn_destroy(c); /* peer closed, or a socket error */
	if (more)
		return;
	c->ops--;
	c->recv_armed = false;
	if (!c->fd_closed)
		arm_recv(c);
	else if (c->ops == 0 && !c->dirty)
		conn_free(c);
}

static void on_send(struct io_uring_cqe *cqe)
{
	struct conn *c = conns[ud_id(cqe->user_data)];
	c->ops--;
	c->send_in_flight = false;
	if (c->fd_closed) {
		if (c->ops == 0 && !c->dirty)
			conn_free(c);
		return;
	}
	if (cqe->res < 0) {
		conn_destroy(c);
		return;
	}
	c->flight_off += (size_t)cqe->res;
	if (c->flight_off == c->flight.len) {
		c->flight.len = c->flight_off = 0;
		if (c->flight.cap > 65536 || !c->pending.len)
			buf_free(&c->flight); /* idle connections hold no output buffer */
	}
	mark_dirty(c);
}

/* ---- inter-worker messages ------------------------------------------------ */

int worker_send_to(int target, const void *hdr, size_t hdr_len, const void *body,
		   size_t body_len)
{
	struct ring *r = shm_ring(worker.shm, (uint32_t)target);
	if (!backlog_head[target]) {
		int rc = ring_push2(r, (uint16_t)worker.index, hdr, hdr_len, body, body_len);
		if (rc == 0) {
			doorbell_owed[target] = true;
			return 0;
		}
		if (rc != -EAGAIN)
			return rc;
	}
	struct backlog_msg *m = malloc(sizeof *m + hdr_len + body_len);
	if (!m)
		return -ENOMEM;
	m->next = NULL;
	m->len = hdr_len + body_len;
	memcpy(m->data, hdr, hdr_len);
	memcpy(m->data + hdr_len, body, body_len);
	if (backlog_tail[target])
		backlog_tail[target]->next = m;
	else
		backlog_head[target] = m;
	backlog_tail[target] = m;
	backlog_pending = true;
	doorbell_owed[target] = true;
	return 0;
}

static void retry_backlog(void)
{
	backlog_pending = false;
	for (int t = 0; t < worker.cfg->worker_count; t++) {
		struct ring *r = shm_ring(worker.shm, (uint32_t)t);
		while (backlog_head[t]) {
			struct backlog_msg *m = backlog_head[t];
			if (ring_push(r, (uint16_t)worker.index, m->data, m->len) != 0)
				break;
			backlog_head[t] = m->next;
			if (!backlog_head[t])
				backlog_tail[t] = NULL;
			free(m);
			doorbell_owed[t] = true;
		}
		if (backlog_head[t])
			backlog_pending = true;
	}
}

static void ring_doorbells(void)
{
	for (int t = 0; t < worker.cfg->worker_count; t++) {
		if (!doorbell_owed[t])
			continue;
		doorbell_owed[t] = false;
		uint64_t one = 1;
		if (write(worker.doorbells[t], &one, sizeof one) < 0 && errno != EAGAIN)
			log_warn("doorbell of worker %d: %s", t, strerror(errno));
	}
}

static void arm_doorbell(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_read(sqe, worker.doorbells[worker.index], &doorbell_value,
			   sizeof doorbell_value, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_DOORBELL, 0, 0));
}

static void drain_inbox(void)
{
	for (;;) {
		long n = ring_pop(worker.inbox, worker.scratch, worker.scratch_cap);
		if (n == -EMSGSIZE) {
			log_error("inbound ring: a message larger than %zu bytes", worker.scratch_cap);
			return;
		}
		if (n < 0) {
			log_error("inbound ring is corrupt (%s): messages for this worker are stuck",
				  strerror((int)-n));
			return;
		}
		if (n == 0)
			return;
		router_inbound(worker.scratch, (size_t)n);
	}
}

/* ---- signals, reload, timers --------------------------------------------- */

static void arm_signal(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_read(sqe, signal_fd, &signal_info, sizeof signal_info, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_SIGNAL, 0, 0));
}

static void arm_timer(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_timeout(sqe, &tick_ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_pack(OP_TIMER, 0, 0));
}

static void check_reload(void)
{
	struct shm_control *ctl = &worker.shm->control;
	uint64_t gen = atomic_load_explicit(&ctl->reload_generation, memory_order_acquire);
	if (gen == reload_seen)
		return;
	log_set_level((enum log_level)atomic_load(&ctl->log_level));
	char err[512];
	struct tls_ctx *fresh = tls_ctx_load(ctl->tls_key, ctl->tls_cert, ctl->tls_bundle, err,
					     sizeof err);
	if (fresh) {
		tls_ctx_free(worker.tls); /* sessions still using it keep it alive */
		worker.tls = fresh;
		atomic_store(&worker.slot->tls_reload_failed, 0);
		log_info("TLS certificate reloaded (%s)", ctl->tls_cert);
	} else {
		atomic_store(&worker.slot->tls_reload_failed, 1);
		log_error("reload failed: %s; the previous certificate stays in service", err);
	}
	reload_seen = gen;
	atomic_store_explicit(&worker.slot->reload_generation_seen, gen, memory_order_release);
}

static void begin_stop(void)
{
	if (worker.stopping)
		return;
	worker.stopping = true;
	atomic_store(&worker.slot->state, WORKER_STOPPING);
	set_accepting(false);
	drain_deadline_ms = worker.now_ms + worker.cfg->drain_timeout_ms;
	for (uint32_t i = 0; i < conn_cap; i++)
		if (conns[i] && !conns[i]->fd_closed)
			conn_shutdown(conns[i]);
	log_info("stopping: closing %u connections", conn_live);
}

static void on_signal(void)
{
	switch (signal_info.ssi_signo) {
	case SIGTERM:
	case SIGINT:
		begin_stop();
		break;
	case SIGQUIT:
		_exit(0);
	case SIGHUP:
		check_reload();
		break;
	case SIGUSR1:
		log_open(worker.cfg->log_file);
		break;
	case SIGUSR2:
		if (!worker.stopping)
			set_accepting(atomic_load(&worker.shm->control.accepting) != 0);
		break;
	default:
		break;
	}
}

void worker_released(size_t bytes)
{
	released_since_trim += bytes;
}

/* glibc keeps freed chunks in its heap and gives back only the top of it:
 * after a crowd logs in, each parser and handshake buffer freed between the
 * sessions that stay leaves pages resident that no one uses. With one
 * worker, 10,000 idle plaintext sessions held 16 KB of PSS each; this trim
 * took them to 11 KB, and keeping the sessions' long-lived objects in the
 * pools of common/slab.h (off the heap) to 4.3 KB. malloc_trim
 * hands every whole free page back with MADV_DONTNEED. It walks the free
 * chunks, so it runs from the sweep, only after a megabyte has been
 * released: a busy worker that reuses what it frees pays nothing. */
#define HEAP_TRIM_AFTER_BYTES (1u << 20)

static void heap_trim(void)
{
	if (released_since_trim < HEAP_TRIM_AFTER_BYTES)
		return;
	released_since_trim = 0;
	malloc_trim(0);
}

static void on_tick(void)
{
	atomic_store_explicit(&worker.slot->heartbeat_ms, (uint64_t)worker.now_ms,
			      memory_order_relaxed);
	if (getppid() != supervisor_pid && !worker.stopping) {
		log_warn("supervisor is gone; stopping");
		begin_stop();
	}
	if (worker.now_ms - last_sweep_ms >= 1000 || worker.stopping) {
		last_sweep_ms = worker.now_ms;
		for (uint32_t i = 0; i < conn_cap; i++) {
			struct conn *c = conns[i];
			if (!c || c->fd_closed)
				continue;
			if (c->closing && worker.now_ms >= c->close_deadline_ms)
				conn_destroy(c);
			else
				c->handler->tick(c);
		}
		heap_trim();
	}
	if (worker.stopping && worker.now_ms >= drain_deadline_ms) {
		for (uint32_t i = 0; i < conn_cap; i++)
			if (conns[i] && !conns[i]->fd_closed)
				conn_destroy(conns[i]);
	}
}

/* ---- set-up ---------------------------------------------------------------- */

static int setup_ring(void)
{
	/* DEFER_TASKRUN (Linux 6.1): the kernel work that turns socket events
	 * into completions runs when this loop waits for them, all at once,
	 * instead of interrupting whatever the worker is doing as each packet
	 * arrives. In the chat benchmark (one worker, TLS) it took the closed
	 * loop from ~90,000 to 130,000-143,000 msg/s and the worker's CPU at
	 * 44,000 msg/s open loop from 86% to 65%. Only this thread uses the
	 * ring (SINGLE_ISSUER, which it requires). A kernel that refuses a set
	 * of flags gets the next one. */
	static const unsigned flag_sets[] = {
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE |
			IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
		IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof flag_sets / sizeof *flag_sets && rc == -EINVAL; i++) {
		struct io_uring_params p;
		memset(&p, 0, sizeof p);
		p.flags = flag_sets[i];
		p.cq_entries = RING_ENTRIES * 8; /* read only with CQSIZE */
		rc = io_uring_queue_init_params(RING_ENTRIES, &uring, &p);
	}
	if (rc < 0) {
		log_error("io_uring_queue_init: %s", strerror(-rc));
		return rc;
	}
	/* liburing 2.3 has no io_uring_setup_buf_ring: map and register it here. */
	size_t ring_bytes = RECV_BUFS * sizeof(struct io_uring_buf);
	if (posix_memalign((void **)&recv_ring, 4096, ring_bytes) ||
	    posix_memalign((void **)&recv_bufs, 4096, (size_t)RECV_BUFS * RECV_BUF_SIZE)) {
		log_error("out of memory for the receive buffers");
		return -ENOMEM;
	}
	memset(recv_ring, 0, ring_bytes);
	struct io_uring_buf_reg reg = {
		.ring_addr = (uint64_t)(uintptr_t)recv_ring,
		.ring_entries = RECV_BUFS,
		.bgid = RECV_GROUP,
	};
	rc = io_uring_register_buf_ring(&uring, &reg, 0);
	if (rc < 0) {
		log_error("io_uring_register_buf_ring: %s", strerror(-rc));
		return rc;
	}
	io_uring_buf_ring_init(recv_ring);
	for (unsigned i = 0; i < RECV_BUFS; i++)
		io_uring_buf_ring_add(recv_ring, recv_bufs + (size_t)i * RECV_BUF_SIZE,
				      RECV_BUF_SIZE, (unsigned short)i,
				      io_uring_buf_ring_mask(RECV_BUFS), (int)i);
	io_uring_buf_ring_advance(recv_ring, RECV_BUFS);
	return 0;
}

static int setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	int sigs[] = { SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2 };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal_fd = signalfd(-1, &set, SFD_CLOEXEC);
	return signal_fd < 0 ? -errno : 0;
}

static void pin_cpu(void)
{
	const struct config *cfg = worker.cfg;
	if (cfg->cpu_count == 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cfg->cpus[worker.index % cfg->cpu_count], &set);
	if (sched_setaffinity(0, sizeof set, &set) < 0)
		log_warn("cannot pin to CPU %d: %s", cfg->cpus[worker.index % cfg->cpu_count],
			 strerror(errno));
}

int worker_main(const struct worker_args *args)
{
	char name[32];
	snprintf(name, sizeof name, "worker %d", args->index);
	log_set_name(name);
	prctl(PR_SET_NAME, "xmppd-worker");
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != args->supervisor_pid)
		return 0; /* the supervisor died before we got here */

	supervisor_pid = args->supervisor_pid;
	worker.index = args->index;
	worker.cfg = args->cfg;
	worker.shm = args->shm;
	worker.slot = &args->shm->workers[args->index];
	worker.sessdir = shm_sessdir(args->shm);
	worker.inbox = shm_ring(args->shm, (uint32_t)args->index);
	worker.doorbells = args->doorbells;
	worker.tls = args->tls;
	worker.now_ms = wall_ms();
	worker.scratch_cap = ring_max_payload(worker.inbox);
	worker.scratch = malloc(worker.scratch_cap);
	uint32_t nworkers = args->cfg->worker_count;
	backlog_head = calloc(nworkers, sizeof *backlog_head);
	backlog_tail = calloc(nworkers, sizeof *backlog_tail);
	doorbell_owed = calloc(nworkers, sizeof *doorbell_owed);
	if (!worker.scratch || !backlog_head || !backlog_tail || !doorbell_owed) {
		log_error("out of memory at start");
		return WORKER_EXIT_FATAL;
	}
	for (int l = 0; l < args->cfg->listener_count; l++)
		listen_fds[l] = args->listen_fds[l];
	pin_cpu();

	char err[512];
	worker.accounts = accounts_open(args->cfg->data_dir, err, sizeof err);
	if (!worker.accounts) {
		log_error("cannot open the account store: %s", err);
		return WORKER_EXIT_FATAL;
	}
	if (setup_signals() < 0 || setup_ring() < 0 || c2s_init() < 0)
		return WORKER_EXIT_FATAL;
	reload_seen = atomic_load(&args->shm->control.reload_generation);
	atomic_store(&worker.slot->reload_generation_seen, reload_seen);

	arm_signal();
	arm_doorbell();
	arm_timer();
	set_accepting(atomic_load(&args->shm->control.accepting) != 0);
	atomic_store(&worker.slot->heartbeat_ms, (uint64_t)worker.now_ms);
	atomic_store(&worker.slot->state, WORKER_RUNNING);
	log_info("worker %d started (pid %d)", args->index, (int)getpid());
	drain_inbox(); /* messages queued for our slot before a respawn */

	for (;;) {
		flush_dirty();
		if (backlog_pending)
			retry_backlog();
		ring_doorbells();
		if (worker.stopping && conn_live == 0)
			break;
		struct io_uring_cqe *cqe;
		if (backlog_pending) {
			struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 1000000 };
			io_uring_submit_and_wait_timeout(&uring, &cqe, 1, &ts, NULL);
		} else {
			io_uring_submit_and_wait(&uring, 1);
		}
		worker.now_ms = wall_ms();
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&uring, head, cqe) {
			seen++;
			switch (ud_op(cqe->user_data)) {
			case OP_ACCEPT:
				on_accept(cqe);
				break;
			case OP_RECV:
				on_recv(cqe);
				break;
			case OP_SEND:
				on_send(cqe);
				break;
			case OP_DOORBELL:
				drain_inbox();
				arm_doorbell();
				break;
			case OP_SIGNAL:
				if (cqe->res == (int)sizeof signal_info)
					on_signal();
				arm_signal();
				break;
			case OP_TIMER:
				on_tick();
				arm_timer();
				break;
			case OP_CANCEL:
				break;
			}
		}
		io_uring_cq_advance(&uring, seen);
	}
	flush_dirty();
	io_uring_submit(&uring);
	c2s_fini();
	component_fini();
	router_fini();
	accounts_close(worker.accounts);
	log_info("worker %d stopped", args->index);
	return 0;
}
