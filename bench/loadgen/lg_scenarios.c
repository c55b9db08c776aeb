/*
 * lg_scenarios: what the connections of each scenario do, and the figures
 * they produce.
 *
 *   idle     every account logs in with initial presence and stays.
 *   chat     pairs of accounts send each other messages: closed loop (each
 *            client keeps --window messages in flight, a delivery lets the
 *            sender send the next) or open loop (--rate messages/s offered
 *            whatever happens). Bodies carry a sequence number and the
 *            CLOCK_MONOTONIC time they were sent; the receiver, in the same
 *            process, turns that into latency.
 *   login    --concurrency slots each log in, close, and start again; with
 *            SCRAM, a warm-up first logs every account in once so that the
 *            measured logins reuse cached keys (see lg_scenario_warmup).
 *   connect  the same up to the TLS handshake (the stream features without
 *            TLS), then closes its side and starts again at once, without
 *            waiting for the server's close.
 *   component  one XEP-0114 component and --accounts clients: each client
 *            sends to the component's address and the component to each
 *            client, closed loop (--window in flight per client and
 *            direction) or open loop (--rate in all, half each way). Latency
 *            as in chat. All on one thread: the component is one connection,
 *            and both ends of every exchange must share a clock and
 *            bookkeeping without locks.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bench/loadgen/lg.h"

#define CHAT_TICK_MIN_NS 1000000u /* open loop: at most one tick per ms */

/* ---- histogram ---------------------------------------------------------- */

static unsigned hist_index(uint64_t v)
{
	const uint64_t exact = 2u << LG_HIST_SUB_BITS;

	if (v >= (uint64_t)1 << LG_HIST_MAX_BITS)
		v = ((uint64_t)1 << LG_HIST_MAX_BITS) - 1;
	if (v < exact)
		return (unsigned)v;
	unsigned shift = (unsigned)(63 - __builtin_clzll(v)) - LG_HIST_SUB_BITS;
	/* v >> shift lies in [2^SUB, 2^(SUB+1)): the bucket within the octave */
	return (shift << LG_HIST_SUB_BITS) + (unsigned)(v >> shift);
}

/* The largest value that falls into bucket I. */
static uint64_t hist_bucket_top(unsigned i)
{
	const unsigned exact = 2u << LG_HIST_SUB_BITS;

	if (i < exact)
		return i;
	unsigned shift = (i >> LG_HIST_SUB_BITS) - 1;
	uint64_t mantissa = i - (shift << LG_HIST_SUB_BITS);
	return ((mantissa + 1) << shift) - 1;
}

void lg_hist_add(struct lg_hist *h, uint64_t ns)
{
	h->bucket[hist_index(ns)]++;
	h->count++;
	if (ns > h->max)
		h->max = ns;
}

void lg_hist_merge(struct lg_hist *into, const struct lg_hist *from)
{
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++)
		into->bucket[i] += from->bucket[i];
	into->count += from->count;
	if (from->max > into->max)
		into->max = from->max;
}

uint64_t lg_hist_percentile(const struct lg_hist *h, double p)
{
	if (h->count == 0)
		return 0;
	/* the smallest value with at least P% of the samples at or below it */
	double exact = p / 100.0 * (double)h->count;
	uint64_t rank = (uint64_t)exact;
	if ((double)rank < exact)
		rank++;
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (unsigned i = 0; i < LG_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen >= rank) {
			uint64_t top = hist_bucket_top(i);
			return top < h->max ? top : h->max;
		}
	}
	return h->max;
}

/* ---- message bodies ----------------------------------------------------- */

int lg_body_encode(char *out, size_t cap, uint64_t seq, uint64_t sent_ns, size_t size)
{
	char head[LG_BODY_HEADER_MAX];
	size_t len = 4;

	memcpy(head, "lg1 ", 4);
	len += lg_u64_dec(head + len, seq);
	head[len++] = ' ';
	len += lg_u64_dec(head + len, sent_ns);
	if (len >= cap)
		return -ENOSPC;
	memcpy(out, head, len);
	out[len] = '\0';
	if (size > len) {
		if (size >= cap)
			return -ENOSPC;
		out[len] = ' ';
		memset(out + len + 1, 'x', size - len - 1);
		len = size;
		out[len] = '\0';
	}
	return (int)len;
}

static int parse_u64(const char **p, const char *end, uint64_t *out)
{
	const char *s = *p;
	uint64_t v = 0;

	if (s == end || *s < '0' || *s > '9')
		return -EINVAL;
	for (; s < end && *s >= '0' && *s <= '9'; s++) {
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EINVAL;
		v = v * 10 + d;
	}
	*p = s;
	*out = v;
	return 0;
}

int lg_body_decode(const char *body, size_t len, uint64_t *seq, uint64_t *sent_ns)
{
	const char *p = body + 4, *end = body + len;

	if (len < 4 || memcmp(body, "lg1 ", 4) != 0)
		return -EINVAL;
	if (parse_u64(&p, end, seq) < 0 || p == end || *p++ != ' ')
		return -EINVAL;
	if (parse_u64(&p, end, sent_ns) < 0 || (p != end && *p != ' '))
		return -EINVAL;
	return 0;
}

/* ---- shared helpers ----------------------------------------------------- */

/* A message sent at SENT_NS arrived: its latency into the histogram, and
 * into the slowest of this second for the progress line. */
static void delivered(struct lg_thread *t, uint64_t sent_ns)
{
	uint64_t ns = lg_now_ns() - sent_ns;

	lg_hist_add(t->msg_hist, ns);
	if (ns > __atomic_load_n(&t->slowest_ns, __ATOMIC_RELAXED))
		__atomic_store_n(&t->slowest_ns, ns, __ATOMIC_RELAXED);
}

static unsigned share(uint32_t total, unsigned id, unsigned n)
{
	return total / n + (id < total % n);
}

static void nothing_conn(struct lg_conn *c)
{
	(void)c;
}

static void nothing_thread(struct lg_thread *t)
{
	(void)t;
}

static void ignore_message(struct lg_conn *c, const struct lg_xml_event *ev)
{
	(void)c, (void)ev;
}

/* ---- idle --------------------------------------------------------------- */

static unsigned idle_slots(const struct lg_opts *o, unsigned id, unsigned n)
{
	return share(o->accounts, id, n);
}

static void idle_setup(struct lg_thread *t)
{
	for (unsigned k = 0; k < t->nconns; k++) {
		t->conns[k].account = t->opts->first + t->id + k * t->nthreads;
		lg_conn_queue(&t->conns[k]);
	}
}

/* ---- chat --------------------------------------------------------------- */

static unsigned chat_slots(const struct lg_opts *o, unsigned id, unsigned n)
{
	return 2 * share(o->pairs, id, n);
}

/* Pair I (over all threads) is accounts FIRST+2I and FIRST+2I+1. */
static void chat_setup(struct lg_thread *t)
{
	for (unsigned k = 0; k + 1 < t->nconns; k += 2) {
		uint32_t pair = t->id + (k / 2) * t->nthreads;
		struct lg_conn *a = &t->conns[k], *b = &t->conns[k + 1];

		a->account = t->opts->first + 2 * pair;
		b->account = a->account + 1;
		a->peer = b;
		b->peer = a;
		lg_conn_queue(a);
		lg_conn_queue(b);
	}
}

static int chat_send(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;
	char body[LG_BODY_HEADER_MAX + 4096];
	int len = lg_body_encode(body, sizeof body, c->tx_seq, lg_now_ns(), t->opts->size);

	if (len < 0 || lg_conn_send_chat(c, c->peer->account, body, (size_t)len) < 0)
		return -ENOBUFS;
	c->tx_seq++;
	c->inflight++;
	lg_count(t, LG_C_SENT, 1);
	return 0;
}

static bool chat_pair_online(const struct lg_conn *c)
{
	return lg_conn_online(c) && lg_conn_online(c->peer);
}

/* Closed loop: keep WINDOW messages in flight. */
static void chat_fill(struct lg_conn *c)
{
	while (c->inflight < c->thread->opts->window && chat_pair_online(c))
		if (chat_send(c) < 0)
			break;
}

static void chat_on_message(struct lg_conn *c, const struct lg_xml_event *ev)
{
	struct lg_thread *t = c->thread;
	struct lg_conn *sender = c->peer;
	uint64_t seq, sent_ns;

	if (ev->error || lg_body_decode(ev->text, ev->text_len, &seq, &sent_ns) < 0) {
		lg_count(t, LG_C_MSG_ERRORS, 1);
		return;
	}
	delivered(t, sent_ns);
	lg_count(t, LG_C_RECEIVED, 1);
	if (seq < c->rx_next)
		lg_count(t, LG_C_OUT_OF_ORDER, 1);
	else
		c->rx_next = seq + 1;
	if (sender->inflight)
		sender->inflight--;
	if (t->opts->rate == 0 && t->phase == LG_PHASE_RUN)
		chat_fill(sender);
}

/* Open loop (shared by chat and component): messages due by NOW at RATE per
 * second since the measured window began, and when the next one is due (at
 * least CHAT_TICK_MIN_NS away; 0 outside the window). */
static uint64_t paced_due(const struct lg_thread *t, uint64_t now, double rate)
{
	return (uint64_t)((double)(now - t->run_t0) * rate / 1e9);
}

static uint64_t paced_next_tick(const struct lg_thread *t, uint64_t now, double rate)
{
	if (t->phase != LG_PHASE_RUN || rate <= 0)
		return 0;
	uint64_t due = t->run_t0 + (uint64_t)((double)(t->paced + 1) * 1e9 / rate);
	return due > now + CHAT_TICK_MIN_NS ? due : now + CHAT_TICK_MIN_NS;
}

/* On a phase change: true when the measured window just began (pacing
 * restarts from now) and the loop is closed, so the caller fills the
 * windows. */
static bool window_begins_closed(struct lg_thread *t)
{
	if (t->phase != LG_PHASE_RUN)
		return false;
	t->run_t0 = lg_now_ns();
	t->paced = 0;
	return t->opts->rate == 0;
}

static double chat_thread_rate(const struct lg_thread *t)
{
	return t->opts->rate * (double)(t->nconns / 2) / (double)t->opts->pairs;
}

static void chat_on_phase(struct lg_thread *t)
{
	if (window_begins_closed(t))
		for (unsigned k = 0; k < t->nconns; k++)
			chat_fill(&t->conns[k]);
}

static uint64_t chat_next_tick(const struct lg_thread *t, uint64_t now)
{
	return paced_next_tick(t, now, chat_thread_rate(t));
}

/* Open loop: send what is due by now, round-robin over the clients. A client
 * whose backlog is not drained is skipped and the skip counted: the offered
 * load stays what was asked, and the report says when it was not met. */
static void chat_on_tick(struct lg_thread *t, uint64_t now)
{
	double rate = chat_thread_rate(t);

	if (t->phase != LG_PHASE_RUN || rate <= 0 || t->nconns == 0)
		return;
	uint64_t due = paced_due(t, now, rate);
	while (t->paced < due) {
		struct lg_conn *c = &t->conns[t->rr++ % t->nconns];

		t->paced++;
		if (!chat_pair_online(c) || lg_conn_backlog(c) > 0 || chat_send(c) < 0)
			lg_count(t, LG_C_STALLED, 1);
	}
}

/* ---- component ------------------------------------------------------------ */

/* Slot 0 of thread 0 is the component, slots 1..N the clients; other
 * threads get nothing. */
static unsigned comp_slots(const struct lg_opts *o, unsigned id, unsigned n)
{
	(void)n;
	return id == 0 ? o->accounts + 1 : 0;
}

static void comp_setup(struct lg_thread *t)
{
	if (t->nconns == 0)
		return;
	t->conns[0].component = true;
	lg_conn_queue(&t->conns[0]);
	for (unsigned k = 1; k < t->nconns; k++) {
		t->conns[k].account = t->opts->first + k - 1;
		t->conns[k].peer = &t->conns[0];
		lg_conn_queue(&t->conns[k]);
	}
}

static bool comp_pair_online(const struct lg_conn *client)
{
	return lg_conn_online(client) && lg_conn_online(client->peer);
}

static int comp_body(const struct lg_thread *t, uint64_t seq, char *out, size_t cap)
{
	return lg_body_encode(out, cap, seq, lg_now_ns(), t->opts->size);
}

/* CLIENT sends its next message to the component. */
static int comp_client_send(struct lg_conn *client)
{
	struct lg_thread *t = client->thread;
	char body[LG_BODY_HEADER_MAX + 4096];
	int len = comp_body(t, client->tx_seq, body, sizeof body);

	if (len < 0 || lg_conn_send_to_component(client, body, (size_t)len) < 0)
		return -ENOBUFS;
	client->tx_seq++;
	client->inflight++;
	lg_count(t, LG_C_SENT, 1);
	return 0;
}

/* The component sends its next message to CLIENT. */
static int comp_send_to(struct lg_conn *client)
{
	struct lg_thread *t = client->thread;
	char body[LG_BODY_HEADER_MAX + 4096];
	int len = comp_body(t, client->comp_tx_seq, body, sizeof body);

	if (len < 0 || lg_conn_send_chat(client->peer, client->account, body, (size_t)len) < 0)
		return -ENOBUFS;
	client->comp_tx_seq++;
	client->comp_inflight++;
	lg_count(t, LG_C_SENT, 1);
	lg_count(t, LG_C_COMP_SENT, 1);
	return 0;
}

/* Closed loop: WINDOW in flight each way between CLIENT and the component. */
static void comp_fill(struct lg_conn *client)
{
	unsigned w = client->thread->opts->window;

	while (client->inflight < w && comp_pair_online(client))
		if (comp_client_send(client) < 0)
			break;
	while (client->comp_inflight < w && comp_pair_online(client))
		if (comp_send_to(client) < 0)
			break;
}

/* The client a message at the component came from: the local part of its
 * FROM (userN@domain/resource) names the account. NULL when not ours. */
static struct lg_conn *comp_sender(struct lg_thread *t, const char *from)
{
	const char *at = from ? strchr(from, '@') : NULL;
	uint32_t account;

	if (!at || lg_pattern_match(&t->opts->user, from, (size_t)(at - from), &account) < 0 ||
	    account < t->opts->first || account - t->opts->first >= t->opts->accounts)
		return NULL;
	return &t->conns[account - t->opts->first + 1];
}

/* A delivery: latency, order against *NEXT, one less in flight. */
static bool comp_received(struct lg_thread *t, const struct lg_xml_event *ev, uint64_t *next,
			  uint32_t *inflight)
{
	uint64_t seq, sent_ns;

	if (ev->error || lg_body_decode(ev->text, ev->text_len, &seq, &sent_ns) < 0) {
		lg_count(t, LG_C_MSG_ERRORS, 1);
		return false;
	}
	delivered(t, sent_ns);
	lg_count(t, LG_C_RECEIVED, 1);
	if (seq < *next)
		lg_count(t, LG_C_OUT_OF_ORDER, 1);
	else
		*next = seq + 1;
	if (*inflight)
		(*inflight)--;
	return true;
}

static void comp_on_message(struct lg_conn *c, const struct lg_xml_event *ev)
{
	struct lg_thread *t = c->thread;
	struct lg_conn *client = c;

	if (c->component) {
		client = comp_sender(t, ev->from);
		if (!client) {
			lg_count(t, LG_C_MSG_ERRORS, 1);
			return;
		}
		if (!comp_received(t, ev, &client->comp_rx_next, &client->inflight))
			return;
		lg_count(t, LG_C_COMP_RECEIVED, 1);
	} else if (!comp_received(t, ev, &c->rx_next, &c->comp_inflight)) {
		return;
	}
	if (t->opts->rate == 0 && t->phase == LG_PHASE_RUN)
		comp_fill(client);
}

static void comp_on_phase(struct lg_thread *t)
{
	if (window_begins_closed(t))
		for (unsigned k = 1; k < t->nconns; k++)
			comp_fill(&t->conns[k]);
}

static uint64_t comp_next_tick(const struct lg_thread *t, uint64_t now)
{
	return t->nconns < 2 ? 0 : paced_next_tick(t, now, t->opts->rate);
}

/* Open loop: what is due by now, alternately a client (round-robin) to the
 * component and the component to a client (round-robin); a sender whose
 * backlog is not drained skips its turn and the skip is counted. */
static void comp_on_tick(struct lg_thread *t, uint64_t now)
{
	double rate = t->opts->rate;

	if (t->phase != LG_PHASE_RUN || rate <= 0 || t->nconns < 2)
		return;
	uint64_t due = paced_due(t, now, rate);
	while (t->paced < due) {
		bool up = t->paced % 2 == 0;
		struct lg_conn *client = &t->conns[1 + (t->paced / 2) % (t->nconns - 1)];
		struct lg_conn *sender = up ? client : client->peer;

		t->paced++;
		if (!comp_pair_online(client) || lg_conn_backlog(sender) > 0 ||
		    (up ? comp_client_send(client) : comp_send_to(client)) < 0)
			lg_count(t, LG_C_STALLED, 1);
	}
}

/* ---- login and connect -------------------------------------------------- */

static unsigned login_slots(const struct lg_opts *o, unsigned id, unsigned n)
{
	return share(o->concurrency, id, n);
}

/* Each attempt takes the next account, spread over the threads. During the
 * warm-up each of the thread's accounts is taken once, then its slots rest
 * until the measured window starts. */
static void login_next(struct lg_conn *c)
{
	struct lg_thread *t = c->thread;
	uint64_t index = t->id + t->attempt * t->nthreads;

	if (t->phase == LG_PHASE_LOGIN && index >= t->opts->accounts)
		return;
	t->attempt++;
	c->account = t->opts->first + (uint32_t)(index % t->opts->accounts);
	lg_conn_queue(c);
}

static void login_setup(struct lg_thread *t)
{
	for (unsigned k = 0; k < t->nconns; k++)
		login_next(&t->conns[k]);
}

static void login_on_end(struct lg_conn *c)
{
	if (c->thread->phase == LG_PHASE_RUN || c->thread->phase == LG_PHASE_LOGIN)
		login_next(c);
}

/* The measured window after a warm-up: wake the slots that rested, and time
 * only the logins of the window. */
static void login_on_phase(struct lg_thread *t)
{
	if (t->phase != LG_PHASE_RUN)
		return;
	memset(t->goal_hist, 0, sizeof *t->goal_hist);
	for (unsigned k = 0; k < t->nconns; k++) {
		struct lg_conn *c = &t->conns[k];

		if (lg_conn_idle(c) && !c->list)
			login_next(c);
	}
}

bool lg_scenario_warmup(const struct lg_scenario *s, const struct lg_opts *o)
{
	return s->repeat_logins && !o->no_warmup && o->mech != SASL_MECH_PLAIN;
}

/* ---- the table ---------------------------------------------------------- */

static const struct lg_scenario scenarios[] = {
	{
		.name = "idle",
		.goal = LG_GOAL_ONLINE,
		.login_phase = true,
		.slots = idle_slots,
		.setup = idle_setup,
		.on_goal = nothing_conn,
		.on_message = ignore_message,
		.on_end = nothing_conn,
		.on_phase = nothing_thread,
	},
	{
		.name = "chat",
		.goal = LG_GOAL_ONLINE,
		.login_phase = true,
		.slots = chat_slots,
		.setup = chat_setup,
		.on_goal = nothing_conn,
		.on_message = chat_on_message,
		.on_end = nothing_conn,
		.on_phase = chat_on_phase,
		.next_tick = chat_next_tick,
		.on_tick = chat_on_tick,
	},
	{
		.name = "login",
		.goal = LG_GOAL_LOGIN,
		.repeat_logins = true,
		.slots = login_slots,
		.setup = login_setup,
		.on_goal = lg_conn_close,
		.on_message = ignore_message,
		.on_end = login_on_end,
		.on_phase = login_on_phase,
	},
	{
		.name = "connect",
		.goal = LG_GOAL_CONNECT,
		.slots = login_slots,
		.setup = login_setup,
		.on_goal = lg_conn_drop, /* the server's close is not what we measure */
		.on_message = ignore_message,
		.on_end = login_on_end,
		.on_phase = nothing_thread,
	},
	{
		.name = "component",
		.goal = LG_GOAL_ONLINE,
		.login_phase = true,
		.slots = comp_slots,
		.setup = comp_setup,
		.on_goal = nothing_conn,
		.on_message = comp_on_message,
		.on_end = nothing_conn,
		.on_phase = comp_on_phase,
		.next_tick = comp_next_tick,
		.on_tick = comp_on_tick,
	},
};

const struct lg_scenario *lg_scenario_find(const char *name)
{
	for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++)
		if (strcmp(scenarios[i].name, name) == 0)
			return &scenarios[i];
	return NULL;
}

unsigned lg_scenario_slots(const struct lg_scenario *s, const struct lg_opts *o,
			   unsigned nthreads)
{
	unsigned total = 0;

	for (unsigned id = 0; id < nthreads; id++)
		total += s->slots(o, id, nthreads);
	return total;
}
