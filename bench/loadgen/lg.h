/*
 * xmpp-loadgen: a load generator that speaks plain XMPP (RFC 6120/6121), so
 * xmppd and the servers it is compared with are driven by the same client.
 *
 * Files: loadgen.c parses the options, runs the phases from the main thread
 * and prints the figures; lg_conn.c is the engine (one epoll loop per thread,
 * non-blocking sockets, wolfSSL over our own I/O callbacks, a streaming expat
 * parser and the one XMPP client state machine); lg_scenarios.c says what the
 * connections of each scenario do and measures it.
 *
 * Threads share nothing but the read-only options, the phase word the main
 * thread sets, and counters the main thread reads for progress (relaxed
 * atomics, one writer each). Both ends of a chat pair live on the same
 * thread, so a delivery is seen by the sender's bookkeeping without locks.
 *
 * Memory is bounded by construction: a fixed array of connection slots per
 * thread, per-thread receive and scratch buffers, a per-connection output
 * backlog that is allocated only while the socket is full and capped, and
 * fixed-size histograms. Nothing grows with the number of messages.
 *
 * Errors are negative errno values throughout.
 */
#ifndef XMPPD_LG_H
#define XMPPD_LG_H

#include <expat.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "workers/sasl.h"

struct WOLFSSL;
struct WOLFSSL_CTX;

/* ---- options ---------------------------------------------------------- */

enum lg_tls_mode {
	LG_TLS_STARTTLS, /* RFC 6120 STARTTLS on the c2s port */
	LG_TLS_DIRECT,   /* XEP-0368: TLS from the first byte */
	LG_TLS_NONE,     /* plaintext, for servers configured to allow it */
};

/* An account name pattern such as "user%d": exactly one %d, "%%" for '%'. */
struct lg_pattern {
	char prefix[64];
	char suffix[64];
};

struct lg_opts {
	struct sockaddr_storage server;
	socklen_t server_len;
	const char *domain;
	char domain_xml[256];       /* DOMAIN escaped for an XML attribute */
	struct lg_pattern user, password;
	uint32_t first;             /* number of the first account */
	uint32_t accounts;          /* idle, login, connect: accounts used */
	uint32_t pairs, window;     /* chat */
	uint32_t size;              /* chat: body length in bytes (at least the header) */
	double rate;                /* chat: offered messages/s in all, 0 = closed loop */
	enum lg_tls_mode tls;
	enum sasl_mech mech;
	const char *ca_file;        /* NULL: the server certificate is not checked */
	uint32_t src_first;         /* source addresses, host byte order */
	uint32_t src_count;         /* 0: the kernel chooses */
	unsigned threads;
	unsigned concurrency;       /* connections logging in at once, all threads */
	double ramp;                /* new connections per second, all threads; 0 = no limit */
	double duration, timeout, drain; /* seconds */
	bool no_warmup;             /* login: measure uncached SCRAM logins */
	bool json;
	const struct lg_keys *keys; /* --scram-keys, NULL without */
	/* component: the XEP-0114 connection (--component NAME, --secret) */
	struct sockaddr_storage comp_server;
	socklen_t comp_server_len;
	const char *comp_name;      /* its address, e.g. cb1.example.org */
	char comp_name_xml[256];
	const char *comp_secret;
	enum lg_tls_mode comp_tls;  /* LG_TLS_DIRECT or LG_TLS_NONE */
};

/* V in decimal into OUT (at least LG_U64_DEC_MAX bytes, not terminated);
 * returns the length. The generator builds each stanza from pieces: snprintf
 * was a tenth of its time in chat runs. */
#define LG_U64_DEC_MAX 20
size_t lg_u64_dec(char *out, uint64_t v);
int lg_pattern_parse(struct lg_pattern *p, const char *fmt);
/* Writes the name for account N; returns its length or -ENOSPC. */
int lg_pattern_format(const struct lg_pattern *p, uint32_t n, char *out, size_t cap);
/* "A.B.C.D-E.F.G.H" or one address; FIRST in host byte order. 0 or -EINVAL. */
int lg_range_parse(const char *s, uint32_t *first, uint32_t *count);
/* Escape for an XML attribute or text; returns the length or -ENOSPC. */
int lg_xml_escape(const char *in, char *out, size_t cap);
/* The number N when NAME (LEN bytes) is the pattern with N in it, written
 * as lg_pattern_format() writes it. 0 or -EINVAL. */
int lg_pattern_match(const struct lg_pattern *p, const char *name, size_t len, uint32_t *n);

/* ---- precomputed SCRAM keys (lg_keys.c, --scram-keys FILE) -------------- */

/* Lines "USER SALT_B64 ITERATIONS SALTEDPASSWORD_HEX" give account USER's
 * SCRAM-SHA-256 ClientKey and ServerKey for that salt and iteration count, so
 * a first login needs no PBKDF2. A login uses them only when the server sends
 * the same salt and count; otherwise it derives its keys as without them. */
struct lg_keys {
	uint32_t first, count;            /* the accounts a run uses */
	uint32_t loaded;                  /* how many of them the file had */
	struct scram_client_keys *keys;   /* [account - first]; mech NONE: no line */
};
/* One line (modified in place). 1 with *ACCOUNT and OUT filled, 0 for a
 * blank or '#' line, -EINVAL when malformed or USER does not match the
 * pattern, -EIO. */
int lg_keys_parse_line(char *line, const struct lg_pattern *user, uint32_t *account,
		       struct scram_client_keys *out);
/* Read F, keeping accounts FIRST .. FIRST+COUNT-1 (others are skipped).
 * 0, or -EINVAL with *BAD_LINE the line number, -ENOMEM, -EIO. */
int lg_keys_load(struct lg_keys *k, FILE *f, const struct lg_pattern *user, uint32_t first,
		 uint32_t count, unsigned *bad_line);
/* The keys of ACCOUNT, or NULL (K may be NULL). */
const struct scram_client_keys *lg_keys_find(const struct lg_keys *k, uint32_t account);
void lg_keys_free(struct lg_keys *k);

/* ---- measurements (lg_scenarios.c) ------------------------------------- */

/* Log-linear latency histogram over nanoseconds: exact below 128 ns, then 64
 * buckets per power of two (at most 1.6% relative error), up to 2^40 ns
 * (18 minutes), larger values clamped. 18 KB, no allocation after creation. */
#define LG_HIST_SUB_BITS 6
#define LG_HIST_MAX_BITS 40
#define LG_HIST_BUCKETS (((LG_HIST_MAX_BITS - LG_HIST_SUB_BITS - 1) << LG_HIST_SUB_BITS) + \
			 (2 << LG_HIST_SUB_BITS))
struct lg_hist {
	uint64_t count, max;
	uint64_t bucket[LG_HIST_BUCKETS];
};
void lg_hist_add(struct lg_hist *h, uint64_t ns);
void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from);
/* The value at percentile P (0 < P <= 100): the top of its bucket, never
 * above the largest value seen; 0 when empty. */
uint64_t lg_hist_percentile(const struct lg_hist *h, double p);

/* Chat bodies: "lg1 SEQ SENT_NS" padded to SIZE bytes. The receiver keeps
 * only the first LG_XML_TEXT_MAX bytes, which always hold the header. */
#define LG_BODY_HEADER_MAX 46
int lg_body_encode(char *out, size_t cap, uint64_t seq, uint64_t sent_ns, size_t size);
int lg_body_decode(const char *body, size_t len, uint64_t *seq, uint64_t *sent_ns);

/* ---- the XML side of the protocol (lg_conn.c) --------------------------- */

/* What one top-level element (a child of <stream:stream>) or the stream's own
 * start and end mean to a client. */
enum lg_ev_type {
	LG_EV_STREAM_OPEN,
	LG_EV_STREAM_CLOSE,
	LG_EV_STREAM_ERROR,
	LG_EV_FEATURES,
	LG_EV_PROCEED,
	LG_EV_TLS_FAILURE,
	LG_EV_CHALLENGE,
	LG_EV_SUCCESS,
	LG_EV_SASL_FAILURE,
	LG_EV_IQ,
	LG_EV_MESSAGE,
	LG_EV_PRESENCE,
	LG_EV_HANDSHAKE, /* XEP-0114: the server accepted the component */
	LG_EV_OTHER,
};

enum lg_iq_type { LG_IQ_NONE, LG_IQ_GET, LG_IQ_SET, LG_IQ_RESULT, LG_IQ_ERROR };

struct lg_features {
	bool starttls, bind, session, session_optional;
	unsigned mechs; /* bit (1 << enum sasl_mech) per offered mechanism */
	bool cb_listed;   /* XEP-0440: the server lists its channel-binding types */
	bool cb_exporter; /* ... and tls-exporter is one of them */
};

#define NS_STREAM "http://etherx.jabber.org/streams"
#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_SASL_CB "urn:xmpp:sasl-cb:0"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"
#define NS_CLIENT "jabber:client"
#define NS_COMPONENT "jabber:component:accept"
#define NS_PING "urn:xmpp:ping"
#define NS_STANZAS "urn:ietf:params:xml:ns:xmpp-stanzas"

#define LG_XML_TEXT_MAX 512
#define LG_XML_ID_MAX 64
#define LG_XML_FROM_MAX 320

/* Pointers are valid only during the handler call; TEXT and FEATURES are
 * NULL for the stream's own start and end. */
struct lg_xml_event {
	enum lg_ev_type type;
	const char *text;   /* challenge/success data, message body (NUL-terminated) */
	size_t text_len;
	bool text_overflow; /* TEXT is only the first LG_XML_TEXT_MAX - 1 bytes */
	bool error;         /* type='error' (message) */
	enum lg_iq_type iq_type;
	bool iq_ping;       /* XEP-0199 ping request */
	/* attributes, NULL when absent or too long: id of an iq or of the
	 * stream's own start, from of an iq or a message */
	const char *id, *from;
	const struct lg_features *features;
};

/* Returned by an event handler: 0 go on, LG_XML_RESTART stop here and reset
 * the parser for a new stream (after <proceed/> and <success/>), negative
 * stop with that error. */
#define LG_XML_RESTART 1
typedef int (*lg_xml_handler)(void *arg, const struct lg_xml_event *ev);

struct lg_xml {
	XML_Parser parser;
	lg_xml_handler handler;
	void *arg;
	int result;                 /* the handler's first non-zero answer */
	unsigned depth;             /* open elements, the stream is depth 1 */
	unsigned collect_depth;     /* element whose text goes into TEXT, 0 none */
	enum lg_ev_type top;        /* what the open depth-2 element is */
	uint8_t sub;                /* where inside it we are (lg_xml.c) */
	bool error, overflow, ping, id_ok, from_ok;
	enum lg_iq_type iq_type;
	struct lg_features features;
	size_t text_len;
	char text[LG_XML_TEXT_MAX];
	char id[LG_XML_ID_MAX];
	char from[LG_XML_FROM_MAX];
	/* the splitter in front of expat (lg_xml.c) */
	uint8_t sp_state;
	char sp_quote;
	bool sp_closing, sp_slash, sp_pi;
	unsigned sp_depth;
	bool stream_ns_ok;          /* the stream's default namespace is a stanza one */
	uint64_t fast_messages;     /* messages read without expat (tests, stats) */
};

int lg_xml_init(struct lg_xml *x, lg_xml_handler handler, void *arg); /* 0 / -ENOMEM */
void lg_xml_reset(struct lg_xml *x); /* for a new stream; not from inside a handler */
void lg_xml_free(struct lg_xml *x);
/* Parse LEN bytes: messages of the usual shape that lie whole in them are
 * read directly, everything else by expat, in stream order. Returns 0,
 * LG_XML_RESTART (bytes after the restarting element are dropped: servers
 * send nothing there), the handler's negative value, or -EPROTO for XML that
 * is not well-formed or has a DOCTYPE. */
int lg_xml_feed(struct lg_xml *x, const char *data, size_t len);

/* ---- connections and threads (lg_conn.c) -------------------------------- */

enum lg_phase {
	LG_PHASE_LOGIN, /* accounts log in (login: warm up), nothing measured yet */
	LG_PHASE_RUN,   /* the measured window */
	LG_PHASE_DRAIN, /* chat: no new messages, in-flight ones still counted */
	LG_PHASE_STOP,  /* close everything, the thread then ends */
};

/* How far a connection goes before the scenario takes over. */
enum lg_goal {
	LG_GOAL_CONNECT, /* TCP + TLS handshake (stream features when plaintext) */
	LG_GOAL_LOGIN,   /* authenticated and bound */
	LG_GOAL_ONLINE,  /* bound and initial presence sent */
};

enum lg_err {
	LG_ERR_CONNECT,  /* TCP connect failed or was refused */
	LG_ERR_TLS,      /* no STARTTLS, handshake or certificate failure */
	LG_ERR_AUTH,     /* SASL failure, mechanism not offered, bad server proof */
	LG_ERR_BIND,     /* no bind feature or bind/session iq failed */
	LG_ERR_PROTOCOL, /* bad XML or an unexpected element */
	LG_ERR_STREAM,   /* <stream:error/> */
	LG_ERR_CLOSED,   /* the server closed the connection first */
	LG_ERR_TIMEOUT,  /* no goal within --timeout, or no close within it */
	LG_ERR_LOCAL,    /* out of file descriptors, ports, memory, or a full backlog */
	LG_ERR_COUNT
};
const char *lg_err_name(enum lg_err e);

enum lg_counter {
	LG_C_STARTED,     /* connection attempts */
	LG_C_DONE,        /* attempts that reached their goal */
	LG_C_FAILED,      /* attempts that ended in an error before it */
	LG_C_ONLINE,      /* gauge: past the goal and still open */
	LG_C_SENT,        /* chat messages sent */
	LG_C_RECEIVED,    /* chat messages received */
	LG_C_OUT_OF_ORDER,
	LG_C_MSG_ERRORS,  /* messages of type 'error' and bodies not ours */
	LG_C_STALLED,     /* open loop: sends skipped because the backlog was full */
	LG_C_COMP_SENT,   /* component: messages the component sent (in LG_C_SENT too) */
	LG_C_COMP_RECEIVED, /* component: messages it received (in LG_C_RECEIVED too) */
	LG_C_ERRORS,      /* all errors, the sum of the kinds below */
	LG_C_COUNT
};

/* Written by the owning thread only, read by the main thread: relaxed atomics. */
struct lg_counters {
	uint64_t v[LG_C_COUNT];
	uint64_t err[LG_ERR_COUNT];
};

struct lg_thread;

/* SCRAM keys of one account (RFC 5802 section 5.1 lets a client keep them):
 * a login scenario logs the same accounts in again and again, and without
 * them every login would cost the generator a PBKDF2, making it rather than
 * the server the limit. Per thread, so no locks; direct-mapped on the
 * account number, an entry of another account is simply replaced. */
#define LG_KEY_CACHE_MAX 65536u /* entries per thread, about 150 bytes each */
struct lg_key_slot {
	uint32_t account;
	struct scram_client_keys keys;
};

/* A per-thread intrusive FIFO: the start queue and the deadline lists. */
struct lg_list {
	struct lg_conn *head, *tail;
};

struct lg_conn {
	struct lg_thread *thread;
	struct lg_conn *prev, *next; /* in at most one of the thread's lists */
	struct lg_list *list;
	int fd;
	uint8_t state;               /* enum lg_state, lg_conn.c */
	uint8_t sasl_step;
	bool in_progress;            /* counted against --concurrency */
	bool reached_goal;
	bool tls_done;               /* handshake complete, output goes through TLS */
	bool authed;
	bool stream_open;            /* we sent a stream header on the current layer */
	bool session_needed;         /* the server wants the RFC 3921 session iq */
	bool failed;
	bool drop_when_sent;         /* lg_conn_drop: release once the backlog is sent */
	bool component;              /* an XEP-0114 component, not a client */
	enum lg_err err;             /* why it failed, when FAILED */
	int io_err;                  /* a write error met inside wolfSSL's callback */
	uint32_t events;             /* what epoll watches */
	uint32_t account;
	uint64_t started_ns, deadline_ns;
	struct WOLFSSL *ssl;
	struct scram_client *scram;  /* only while authenticating */
	const uint8_t *rx;           /* ciphertext wolfSSL has not taken yet */
	size_t rx_len;
	uint8_t *out;                /* backlog the socket has not taken yet */
	size_t out_len, out_cap;
	struct lg_xml xml;
	bool xml_ready;
	/* chat: the partner on this thread, messages in flight, sequence.
	 * component: on a client, PEER is the component, and INFLIGHT, TX_SEQ
	 * the client's messages to it; RX_NEXT what the client expects next
	 * from the component; the COMP_ fields the other direction as the
	 * component keeps it for this client. */
	struct lg_conn *peer;
	uint32_t inflight, comp_inflight;
	uint64_t tx_seq, rx_next, comp_tx_seq, comp_rx_next;
};

struct lg_scenario;

struct lg_thread {
	unsigned id, nthreads;
	const struct lg_opts *opts;
	const struct lg_scenario *scn;
	const int *phase_word;       /* the main thread's phase, atomic */
	enum lg_phase phase;
	pthread_t tid;
	int exited;                  /* atomic: the loop has ended */
	int phase_seen;              /* atomic: the last phase this thread acted on */
	int exit_err;
	int epfd, timerfd, ctlfd;
	uint64_t timer_at;           /* armed deadline, 0 disarmed */
	struct WOLFSSL_CTX *tls;
	struct lg_conn *conns;
	unsigned nconns;
	unsigned open;               /* slots with a socket */
	unsigned in_progress, max_in_progress;
	struct lg_list start_queue, login_wait, close_wait;
	double ramp;                 /* this thread's share, per second */
	double ramp_tokens;          /* token bucket: starts allowed now */
	uint64_t ramp_at, backoff_until;
	uint32_t src_next;
	struct lg_conn *doomed;      /* torn down at the end of the loop turn */
	/* scenario state */
	uint64_t run_t0, paced, attempt;
	unsigned rr;
	struct lg_counters ctr;
	struct lg_key_slot *keys;    /* SCRAM key cache, NULL when not used */
	unsigned nkeys;
	struct lg_hist *goal_hist;   /* start to goal */
	struct lg_hist *msg_hist;    /* chat: send to delivery */
	uint64_t slowest_ns;         /* atomic: the slowest delivery since progress took it */
	uint8_t rxbuf[65536];        /* what one recv() brings */
	uint8_t plain[16384 + 512];  /* one decrypted TLS record */
	char scratch[8192];          /* stanzas being built */
};

/* Create thread ID of NTHREADS (not started): slots, epoll, TLS context. */
int lg_thread_new(struct lg_thread **out, unsigned id, unsigned nthreads,
		  const struct lg_opts *opts, const struct lg_scenario *scn,
		  const int *phase_word);
int lg_thread_start(struct lg_thread *t);   /* pthread running lg_thread_poll */
int lg_thread_wake(struct lg_thread *t);    /* the phase word changed */
/* One loop turn: wait up to TIMEOUT_MS (-1 forever) for events and handle
 * them. Returns 1 while the thread has work, 0 once it stopped. */
int lg_thread_poll(struct lg_thread *t, int timeout_ms);
void lg_thread_free(struct lg_thread *t);

void lg_count(struct lg_thread *t, enum lg_counter which, uint64_t n);
uint64_t lg_counter_read(const struct lg_counters *c, enum lg_counter which);
uint64_t lg_err_read(const struct lg_counters *c, enum lg_err e);
uint64_t lg_now_ns(void);

/* For scenarios. */
void lg_conn_queue(struct lg_conn *c);  /* connect when ramp and concurrency allow */
void lg_conn_close(struct lg_conn *c);  /* close the stream and wait for the server */
/* Close our side (</stream:stream> when a stream is open, close_notify over
 * TLS) and release the slot as soon as the socket has taken it, without
 * waiting for the server's close: a server may take seconds over its side
 * (ejabberd waits about 3 s after a bare close_notify), which would otherwise
 * bound a connect rate by the close, not the handshake. */
void lg_conn_drop(struct lg_conn *c);
bool lg_conn_online(const struct lg_conn *c);
bool lg_conn_idle(const struct lg_conn *c); /* no socket: free to start again */
size_t lg_conn_backlog(const struct lg_conn *c);
/* Send a chat message with BODY to the bare JID of account TO (from a
 * component: from its address). 0, -ENOBUFS when the backlog is full,
 * -ENOTCONN. */
int lg_conn_send_chat(struct lg_conn *c, uint32_t to, const char *body, size_t len);
/* The same from a client to the component's address. */
int lg_conn_send_to_component(struct lg_conn *c, const char *body, size_t len);

/* XEP-0114 components: a slot whose COMPONENT flag the scenario set before
 * queueing it connects to --component-server (TLS from the first byte, or
 * plaintext), opens a jabber:component:accept stream to its address, and
 * reaches its goal (READY) when the server accepts the handshake. */
#define LG_HANDSHAKE_HEX 41
/* OUT = lower-case hex SHA-1 of STREAM_ID followed by SECRET, NUL-terminated.
 * 0, -ENOSPC (longer than 1 KiB together), -EIO. */
int lg_component_handshake(const char *stream_id, const char *secret,
			   char out[LG_HANDSHAKE_HEX]);

/* ---- scenarios (lg_scenarios.c) ----------------------------------------- */

struct lg_scenario {
	const char *name;
	enum lg_goal goal;
	bool login_phase;  /* all connections log in before the measured window */
	bool repeat_logins; /* accounts log in again and again: cache SCRAM keys */
	/* Slots on thread ID of N. */
	unsigned (*slots)(const struct lg_opts *o, unsigned id, unsigned n);
	/* Accounts, peers, and the first connections to queue. */
	void (*setup)(struct lg_thread *t);
	void (*on_goal)(struct lg_conn *c);
	void (*on_message)(struct lg_conn *c, const struct lg_xml_event *ev);
	void (*on_end)(struct lg_conn *c);     /* the slot is free again */
	void (*on_phase)(struct lg_thread *t); /* t->phase changed */
	/* When the scenario wants its tick (0: not at all); on_tick is then
	 * called at or after that time. */
	uint64_t (*next_tick)(const struct lg_thread *t, uint64_t now);
	void (*on_tick)(struct lg_thread *t, uint64_t now);
};

const struct lg_scenario *lg_scenario_find(const char *name);
/* Whether S with O starts with a warm-up (LG_PHASE_LOGIN): each account logs
 * in once, unmeasured, so that the measured logins find their SCRAM keys in
 * the cache and measure the server, not the generator's PBKDF2. */
bool lg_scenario_warmup(const struct lg_scenario *s, const struct lg_opts *o);
unsigned lg_scenario_slots(const struct lg_scenario *s, const struct lg_opts *o,
			   unsigned nthreads);

#endif
