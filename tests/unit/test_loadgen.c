/*
 * test_loadgen: the load generator's protocol code (bench/loadgen).
 *
 * The pure pieces are tested directly: account name patterns, source address
 * ranges, XML escaping, chat bodies, the latency histogram, and the streaming
 * XML reader (fed whole and one byte at a time). The engine is then driven
 * for real: a thread's loop (lg_thread_poll) connects over loopback TCP to a
 * server played by this test, which checks every byte the client sends and
 * answers by the script of RFC 6120: PLAIN and SCRAM-SHA-256 (with the
 * server side of workers/sasl.c), bind, the legacy session, presence, pings,
 * stream errors, timeouts, a chat pair with reordered delivery, and the
 * closing handshake. The SCRAM key cache is checked through the logins it
 * makes succeed or fail, and SCRAM-SHA-256-PLUS runs over STARTTLS against a
 * wolfSSL server whose own tls-exporter value must match the client's.
 * Precomputed keys (--scram-keys) are parsed against the keys the server
 * side derives, and a login shows whether it used them (a wrong key under
 * the server's salt fails) or derived its own (the same under another salt
 * succeeds). The component scenario runs a component (XEP-0114 handshake
 * checked against a known SHA-1) and a client against the test server, which
 * relays their messages both ways.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/pwdbased.h>
#include <wolfssl/wolfcrypt/sha256.h>

#include "bench/loadgen/lg.h"
#include "tests/unit/check.h"
#include "workers/sasl.h"

/* ---- pure pieces --------------------------------------------------------- */

static void test_pattern(void)
{
	struct lg_pattern p;
	char out[64];

	CHECK(lg_pattern_parse(&p, "user%d") == 0);
	CHECK(lg_pattern_format(&p, 7, out, sizeof out) == 5);
	CHECK_STR(out, "user7");
	CHECK(lg_pattern_parse(&p, "100%%-%u.x") == 0);
	CHECK(lg_pattern_format(&p, 12, out, sizeof out) > 0);
	CHECK_STR(out, "100%-12.x");
	CHECK(lg_pattern_format(&p, 12, out, 5) == -ENOSPC);
	CHECK(lg_pattern_parse(&p, "user") == -EINVAL);
	CHECK(lg_pattern_parse(&p, "u%d%d") == -EINVAL);
	CHECK(lg_pattern_parse(&p, "u%s%d") == -EINVAL);
	CHECK(lg_pattern_parse(&p, "u%d%") == -EINVAL);
	char long_fmt[100];
	memset(long_fmt, 'a', 80);
	strcpy(long_fmt + 80, "%d");
	CHECK(lg_pattern_parse(&p, long_fmt) == -EINVAL);
}

static void test_range(void)
{
	uint32_t first = 0, count = 0;

	CHECK(lg_range_parse("127.0.1.1-127.0.1.254", &first, &count) == 0);
	CHECK(first == 0x7f000101u && count == 254);
	CHECK(lg_range_parse("127.0.0.9", &first, &count) == 0);
	CHECK(first == 0x7f000009u && count == 1);
	CHECK(lg_range_parse("127.0.0.255-127.0.1.0", &first, &count) == 0);
	CHECK(count == 2);
	CHECK(lg_range_parse("127.0.1.9-127.0.1.1", &first, &count) == -EINVAL);
	CHECK(lg_range_parse("127.0.1-127.0.1.3", &first, &count) == -EINVAL);
	CHECK(lg_range_parse("127.0.1.1-", &first, &count) == -EINVAL);
	CHECK(lg_range_parse("0.0.0.0-255.255.255.255", &first, &count) == -EINVAL);
}

static void test_escape(void)
{
	char out[64];

	CHECK(lg_xml_escape("a&b<'\">", out, sizeof out) == 27);
	CHECK_STR(out, "a&amp;b&lt;&apos;&quot;&gt;");
	CHECK(lg_xml_escape("plain", out, sizeof out) == 5);
	CHECK(lg_xml_escape("a&b", out, 5) == -ENOSPC);
	CHECK(lg_xml_escape("abcd", out, 4) == -ENOSPC);
}

static void test_body(void)
{
	char body[600];
	uint64_t seq, ts;

	int n = lg_body_encode(body, sizeof body, 42, 123456789012345ull, 0);
	CHECK(n == (int)strlen("lg1 42 123456789012345"));
	CHECK(lg_body_decode(body, (size_t)n, &seq, &ts) == 0);
	CHECK(seq == 42 && ts == 123456789012345ull);

	n = lg_body_encode(body, sizeof body, UINT64_MAX, UINT64_MAX, 0);
	CHECK(n > 0 && n <= LG_BODY_HEADER_MAX);

	n = lg_body_encode(body, sizeof body, 1, 2, 500);
	CHECK(n == 500 && strlen(body) == 500 && body[499] == 'x');
	/* the receiver keeps only a prefix of long bodies: still decodes */
	CHECK(lg_body_decode(body, 60, &seq, &ts) == 0 && seq == 1 && ts == 2);
	CHECK(lg_body_encode(body, 100, 1, 2, 100) == -ENOSPC);

	CHECK(lg_body_decode("lg1 1", 5, &seq, &ts) == -EINVAL);
	CHECK(lg_body_decode("lg1 1 2x", 8, &seq, &ts) == -EINVAL);
	CHECK(lg_body_decode("lg2 1 2", 7, &seq, &ts) == -EINVAL);
	CHECK(lg_body_decode("lg1  2", 6, &seq, &ts) == -EINVAL);
	CHECK(lg_body_decode("lg1 1 99999999999999999999", 26, &seq, &ts) == -EINVAL);
	CHECK(lg_body_decode("hello", 5, &seq, &ts) == -EINVAL);
}

static void test_hist(void)
{
	static struct lg_hist h, other;

	memset(&h, 0, sizeof h);
	CHECK(lg_hist_percentile(&h, 50) == 0);
	for (uint64_t v = 0; v < 128; v++)
		lg_hist_add(&h, v);
	CHECK(lg_hist_percentile(&h, 50) == 63); /* exact below 128 */
	CHECK(lg_hist_percentile(&h, 100) == 127);

	memset(&h, 0, sizeof h);
	for (uint64_t v = 1; v <= 100000; v++)
		lg_hist_add(&h, v * 1000); /* 1 us .. 100 ms */
	uint64_t p50 = lg_hist_percentile(&h, 50), p99 = lg_hist_percentile(&h, 99);
	CHECK(p50 >= 50000000ull && p50 <= 50000000ull * 1016 / 1000);
	CHECK(p99 >= 99000000ull && p99 <= 99000000ull * 1016 / 1000);
	CHECK(lg_hist_percentile(&h, 100) == 100000000ull); /* capped at the max */
	CHECK(h.max == 100000000ull && h.count == 100000);

	memset(&other, 0, sizeof other);
	lg_hist_add(&other, (uint64_t)1 << 50); /* beyond the range: clamped */
	CHECK(other.max == (uint64_t)1 << 50);
	CHECK(lg_hist_percentile(&other, 50) >= ((uint64_t)1 << 40) * 98 / 100);
	lg_hist_merge(&h, &other);
	CHECK(h.count == 100001 && h.max == (uint64_t)1 << 50);
	CHECK(lg_hist_percentile(&h, 50) == p50);
}

/* ---- the XML reader --------------------------------------------------------- */

struct recorder {
	int events;
	enum lg_ev_type last;
	struct lg_features features;
	char text[LG_XML_TEXT_MAX];
	size_t text_len;
	bool overflow, error, ping;
	enum lg_iq_type iq_type;
	char id[LG_XML_ID_MAX], from[LG_XML_FROM_MAX];
	enum lg_ev_type restart_on; /* answer LG_XML_RESTART to this event */
};

static int record(void *arg, const struct lg_xml_event *ev)
{
	struct recorder *r = arg;

	r->events++;
	r->last = ev->type;
	if (ev->features)
		r->features = *ev->features;
	r->text[0] = '\0';
	if (ev->text)
		memcpy(r->text, ev->text, ev->text_len + 1);
	r->text_len = ev->text_len;
	r->overflow = ev->text_overflow;
	r->error = ev->error;
	r->ping = ev->iq_ping;
	r->iq_type = ev->iq_type;
	snprintf(r->id, sizeof r->id, "%s", ev->id ? ev->id : "(none)");
	snprintf(r->from, sizeof r->from, "%s", ev->from ? ev->from : "(none)");
	return ev->type == r->restart_on ? LG_XML_RESTART : 0;
}

#define STREAM_HEAD "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
		    "xmlns:stream='http://etherx.jabber.org/streams' id='s1' version='1.0'>"

static int feed_bytewise(struct lg_xml *x, const char *s)
{
	for (; *s; s++) {
		int r = lg_xml_feed(x, s, 1);
		if (r != 0)
			return r;
	}
	return 0;
}

static void test_xml_features(void)
{
	struct recorder r = { .restart_on = -1 };
	struct lg_xml x;
	const char *features =
		"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
		"</starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
		"<mechanism>SCRAM-SHA-256</mechanism><mechanism>X-UNKNOWN</mechanism>"
		"<mechanism>PLAIN</mechanism></mechanisms></stream:features>";

	CHECK(lg_xml_init(&x, record, &r) == 0);
	CHECK(feed_bytewise(&x, STREAM_HEAD) == 0);
	CHECK(r.events == 1 && r.last == LG_EV_STREAM_OPEN);
	CHECK(feed_bytewise(&x, features) == 0);
	CHECK(r.events == 2 && r.last == LG_EV_FEATURES);
	CHECK(r.features.starttls && !r.features.bind && !r.features.session);
	CHECK(r.features.mechs == ((1u << SASL_MECH_SCRAM_SHA256) | (1u << SASL_MECH_PLAIN)));
	CHECK(!r.features.cb_listed && !r.features.cb_exporter);

	/* XEP-0440: the channel-binding types, tls-exporter among others */
	const char *cb = "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
			 "<mechanism>SCRAM-SHA-256-PLUS</mechanism></mechanisms>"
			 "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
			 "<channel-binding type='tls-unique'/><channel-binding type='tls-exporter'/>"
			 "</sasl-channel-binding></stream:features>";
	CHECK(feed_bytewise(&x, cb) == 0);
	CHECK(r.features.mechs == 1u << SASL_MECH_SCRAM_SHA256_PLUS);
	CHECK(r.features.cb_listed && r.features.cb_exporter);
	/* a list without it, and the type outside the list, do not count */
	const char *no_exporter = "<stream:features><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
				  "<channel-binding type='tls-server-end-point'/>"
				  "</sasl-channel-binding><channel-binding xmlns='urn:xmpp:sasl-cb:0' "
				  "type='tls-exporter'/></stream:features>";
	CHECK(lg_xml_feed(&x, no_exporter, strlen(no_exporter)) == 0);
	CHECK(r.last == LG_EV_FEATURES && r.features.cb_listed && !r.features.cb_exporter);

	/* after the restart the features are read afresh, with other prefixes */
	lg_xml_reset(&x);
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);
	const char *bound = "<features xmlns='http://etherx.jabber.org/streams'>"
			    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
			    "<s:session xmlns:s='urn:ietf:params:xml:ns:xmpp-session'><s:optional/>"
			    "</s:session></features>";
	CHECK(lg_xml_feed(&x, bound, strlen(bound)) == 0);
	CHECK(r.last == LG_EV_FEATURES && r.features.bind && r.features.session &&
	      r.features.session_optional && r.features.mechs == 0 && !r.features.starttls);
	lg_xml_free(&x);
}

static void test_xml_restart(void)
{
	struct recorder r = { .restart_on = LG_EV_SUCCESS };
	struct lg_xml x;
	const char *in = STREAM_HEAD "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1h"
			 "</success><junk-the-server-never-sends/>";

	CHECK(lg_xml_init(&x, record, &r) == 0);
	CHECK(lg_xml_feed(&x, in, strlen(in)) == LG_XML_RESTART);
	CHECK(r.last == LG_EV_SUCCESS && strcmp(r.text, "dj1h") == 0);
	/* the parser is ready for the new stream's header */
	r.events = 0;
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);
	CHECK(r.events == 1 && r.last == LG_EV_STREAM_OPEN);
	lg_xml_free(&x);
}

static void test_xml_stanzas(void)
{
	struct recorder r = { .restart_on = -1 };
	struct lg_xml x;
	char big[LG_XML_TEXT_MAX + 200];

	CHECK(lg_xml_init(&x, record, &r) == 0);
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);

	const char *msg = "<message from='a@b/c' type='chat'><subject>no</subject>"
			  "<body>lg1 5 &amp;9</body><body>second</body></message>";
	CHECK(feed_bytewise(&x, msg) == 0);
	CHECK(r.last == LG_EV_MESSAGE && !r.error && strcmp(r.text, "lg1 5 &9") == 0);

	const char *err = "<message type='error'><body>x</body><error type='cancel'/></message>";
	CHECK(lg_xml_feed(&x, err, strlen(err)) == 0);
	CHECK(r.last == LG_EV_MESSAGE && r.error);

	int n = snprintf(big, sizeof big, "<message><body>lg1 1 2 ");
	memset(big + n, 'x', sizeof big - (size_t)n);
	CHECK(lg_xml_feed(&x, big, sizeof big) == 0);
	const char *tail = "</body></message>";
	CHECK(lg_xml_feed(&x, tail, strlen(tail)) == 0);
	CHECK(r.last == LG_EV_MESSAGE && r.overflow && r.text_len == LG_XML_TEXT_MAX - 1);

	const char *ping = "<iq type='get' id='p&amp;1' from='example.test'>"
			   "<ping xmlns='urn:xmpp:ping'/></iq>";
	CHECK(feed_bytewise(&x, ping) == 0);
	CHECK(r.last == LG_EV_IQ && r.ping && r.iq_type == LG_IQ_GET);
	CHECK_STR(r.id, "p&1");
	CHECK_STR(r.from, "example.test");

	const char *result = "<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:"
			     "xmpp-bind'><jid>u@d/r</jid></bind></iq>";
	CHECK(lg_xml_feed(&x, result, strlen(result)) == 0);
	CHECK(r.last == LG_EV_IQ && !r.ping && r.iq_type == LG_IQ_RESULT);
	CHECK_STR(r.id, "bind");
	CHECK_STR(r.from, "(none)");

	const char *serr = "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
			   "</stream:error></stream:stream>";
	int before = r.events;
	CHECK(lg_xml_feed(&x, serr, strlen(serr)) == 0);
	CHECK(r.events == before + 2 && r.last == LG_EV_STREAM_CLOSE);
	lg_xml_free(&x);
}

/* XEP-0114: the component's stream (jabber:component:accept), its id, the
 * server's <handshake/>, and stanzas in the component namespace. */
static void test_xml_component(void)
{
	struct recorder r = { .restart_on = -1 };
	struct lg_xml x;
	char hex[LG_HANDSHAKE_HEX];

	/* hex SHA-1 of "3BF96D32" + "sesame" (sha1sum) */
	CHECK(lg_component_handshake("3BF96D32", "sesame", hex) == 0);
	CHECK_STR(hex, "7a98dc4c9e92493d7fd66a25364c862637789c45");
	char long_id[1100];
	memset(long_id, 'a', sizeof long_id - 1);
	long_id[sizeof long_id - 1] = '\0';
	CHECK(lg_component_handshake(long_id, "s", hex) == -ENOSPC);

	CHECK(lg_xml_init(&x, record, &r) == 0);
	const char *head = "<stream:stream xmlns='jabber:component:accept' xmlns:stream="
			   "'http://etherx.jabber.org/streams' from='cb1.example.test' id='c&amp;9'>";
	CHECK(feed_bytewise(&x, head) == 0);
	CHECK(r.last == LG_EV_STREAM_OPEN);
	CHECK_STR(r.id, "c&9");
	CHECK(lg_xml_feed(&x, "<handshake/>", 12) == 0 && r.last == LG_EV_HANDSHAKE);
	const char *msg = "<message from='user3@example.test/r' to='cb1.example.test'>"
			  "<body>lg1 4 5</body></message>";
	CHECK(feed_bytewise(&x, msg) == 0);
	CHECK(r.last == LG_EV_MESSAGE && strcmp(r.text, "lg1 4 5") == 0);
	CHECK_STR(r.from, "user3@example.test/r");
	/* a handshake element of the client namespace is not one */
	const char *other = "<handshake xmlns='jabber:client'/>";
	CHECK(lg_xml_feed(&x, other, strlen(other)) == 0);
	CHECK(r.last == LG_EV_OTHER);
	lg_xml_free(&x);

	/* a client stream: no <handshake/>, the stream id still reported */
	CHECK(lg_xml_init(&x, record, &r) == 0);
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);
	CHECK(r.last == LG_EV_STREAM_OPEN);
	CHECK_STR(r.id, "s1");
	lg_xml_free(&x);
}

static void test_xml_rejects(void)
{
	struct recorder r = { .restart_on = -1 };
	struct lg_xml x;
	const char *doctype = "<?xml version='1.0'?><!DOCTYPE s [<!ENTITY a 'aaaa'>]>"
			      "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>";
	const char *wrong_root = "<html xmlns='http://www.w3.org/1999/xhtml'>";
	const char *broken = STREAM_HEAD "<message><body>x</message>";

	CHECK(lg_xml_init(&x, record, &r) == 0);
	CHECK(lg_xml_feed(&x, doctype, strlen(doctype)) == -EPROTO);
	lg_xml_reset(&x);
	CHECK(lg_xml_feed(&x, wrong_root, strlen(wrong_root)) == -EPROTO);
	lg_xml_reset(&x);
	r.events = 0;
	CHECK(lg_xml_feed(&x, broken, strlen(broken)) == -EPROTO);
	CHECK(r.events == 1); /* the stream opened, the bad message never came out */
	lg_xml_free(&x);
}

/* ---- the splitter: messages read without expat ----------------------------- */

#define LOG_MAX 16

struct ev_log {
	int n;
	struct logged {
		enum lg_ev_type type;
		char text[LG_XML_TEXT_MAX], from[LG_XML_FROM_MAX];
		size_t text_len;
		bool overflow, error;
	} ev[LOG_MAX];
};

static int log_event(void *arg, const struct lg_xml_event *ev)
{
	struct ev_log *l = arg;

	if (l->n == LOG_MAX)
		return -E2BIG;
	struct logged *e = &l->ev[l->n++];
	e->type = ev->type;
	snprintf(e->text, sizeof e->text, "%s", ev->text ? ev->text : "(none)");
	snprintf(e->from, sizeof e->from, "%s", ev->from ? ev->from : "(none)");
	e->text_len = ev->text ? ev->text_len : 0;
	e->overflow = ev->text_overflow;
	e->error = ev->error;
	return 0;
}

/* Feeds HEAD, then IN in one piece (the splitter sees whole stanzas) and,
 * on a second parser, one byte at a time (expat reads every stanza): both
 * must report the same events. Returns the messages read without expat, or
 * -1 when the two disagree or either failed. */
static int split_vs_expat(const char *head, const char *in, struct ev_log *whole)
{
	struct ev_log bytewise = { 0 };
	struct lg_xml a, b;
	int fast = -1;

	memset(whole, 0, sizeof *whole);
	CHECK(lg_xml_init(&a, log_event, whole) == 0);
	CHECK(lg_xml_init(&b, log_event, &bytewise) == 0);
	if (lg_xml_feed(&a, head, strlen(head)) != 0 || lg_xml_feed(&a, in, strlen(in)) != 0 ||
	    feed_bytewise(&b, head) != 0 || feed_bytewise(&b, in) != 0)
		goto out;
	CHECK(b.fast_messages == 0);
	if (whole->n != bytewise.n)
		goto out;
	for (int i = 0; i < whole->n; i++) {
		const struct logged *x = &whole->ev[i], *y = &bytewise.ev[i];
		if (x->type != y->type || strcmp(x->text, y->text) != 0 ||
		    strcmp(x->from, y->from) != 0 || x->text_len != y->text_len ||
		    x->overflow != y->overflow || x->error != y->error)
			goto out;
	}
	fast = (int)a.fast_messages;
out:
	lg_xml_free(&a);
	lg_xml_free(&b);
	return fast;
}

static void test_xml_splitter(void)
{
	struct ev_log l;
	char big[LG_XML_TEXT_MAX + 300];
	const char *comp_head = "<stream:stream xmlns='jabber:component:accept' xmlns:stream="
				"'http://etherx.jabber.org/streams' id='c1'>";

	/* the shapes servers send: read directly, same events as expat */
	CHECK(split_vs_expat(STREAM_HEAD, "<message from='a@b/c' to='d@b/e' type='chat'>"
			     "<body>lg1 1 2</body></message>", &l) == 1);
	CHECK(l.n == 2 && l.ev[1].type == LG_EV_MESSAGE && !l.ev[1].error);
	CHECK_STR(l.ev[1].text, "lg1 1 2");
	CHECK_STR(l.ev[1].from, "a@b/c");
	CHECK(split_vs_expat(STREAM_HEAD, "<message xmlns=\"jabber:client\" xml:lang='en' "
			     "id=\"7\" type='chat' from=\"a@b/c\" >\n <active xmlns='http://"
			     "jabber.org/protocol/chatstates'/><body xml:lang='en'>hi there</body>"
			     "<stanza-id xmlns='urn:xmpp:sid:0' by='b' id='9'/><thread>t1</thread>"
			     "</message >", &l) == 1);
	CHECK_STR(l.ev[1].text, "hi there");
	CHECK(split_vs_expat(STREAM_HEAD, "<message/><message type='error'><body/></message>"
			     "<message><body>one</body><body>two</body></message>", &l) == 3);
	CHECK(l.n == 4 && l.ev[1].text_len == 0 && l.ev[2].error);
	CHECK_STR(l.ev[3].text, "one");
	CHECK(split_vs_expat(comp_head, "<message from='u3@b/r' to='cb.b'><body>lg1 4 5</body>"
			     "</message>", &l) == 1);
	CHECK_STR(l.ev[1].from, "u3@b/r");
	int n = snprintf(big, sizeof big, "<message><body>lg1 1 2 ");
	memset(big + n, 'x', sizeof big - (size_t)n);
	memcpy(big + sizeof big - 18, "</body></message>", 18);
	CHECK(split_vs_expat(STREAM_HEAD, big, &l) == 1);
	CHECK(l.ev[1].overflow && l.ev[1].text_len == LG_XML_TEXT_MAX - 1);
	/* a sender too long to keep: none, as expat's reader says */
	const char tail[] = "'><body>b</body></message>";
	char long_from[LG_XML_FROM_MAX + 80];
	n = snprintf(long_from, sizeof long_from, "<message from='");
	memset(long_from + n, 'f', sizeof long_from - (size_t)n);
	memcpy(long_from + sizeof long_from - sizeof tail, tail, sizeof tail);
	CHECK(split_vs_expat(STREAM_HEAD, long_from, &l) == 1);
	CHECK_STR(l.ev[1].from, "(none)");

	/* what the splitter leaves to expat, with the same result */
	CHECK(split_vs_expat(STREAM_HEAD, "<message from='a&amp;b@c'><body>x</body></message>",
			     &l) == 0);
	CHECK_STR(l.ev[1].from, "a&b@c");
	CHECK(split_vs_expat(STREAM_HEAD, "<message><body>a &lt; b</body></message>", &l) == 0);
	CHECK_STR(l.ev[1].text, "a < b");
	CHECK(split_vs_expat(STREAM_HEAD, "<message xmlns='urn:other'><body>x</body></message>",
			     &l) == 0);
	CHECK(l.ev[1].type == LG_EV_OTHER);
	CHECK(split_vs_expat(STREAM_HEAD, "<c:message xmlns:c='jabber:client'><c:body>x</c:body>"
			     "</c:message>", &l) == 0);
	CHECK(l.ev[1].type == LG_EV_MESSAGE);
	CHECK_STR(l.ev[1].text, "x");
	CHECK(split_vs_expat(STREAM_HEAD, "<message><body xmlns='urn:other'>no</body>"
			     "<body>yes</body></message>", &l) == 0);
	CHECK_STR(l.ev[1].text, "yes");
	CHECK(split_vs_expat(STREAM_HEAD, "<message type='error'><body>x</body><error type='cancel'>"
			     "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error>"
			     "</message>", &l) == 0);
	CHECK(l.ev[1].error);
	/* "<!" hands the rest of the stream to expat */
	CHECK(split_vs_expat(STREAM_HEAD, "<message><body><![CDATA[a<b]]></body></message>"
			     "<message><body>after</body></message>", &l) == 0);
	CHECK_STR(l.ev[1].text, "a<b");
	CHECK_STR(l.ev[2].text, "after");
	/* a stream whose default namespace is not a stanza one: all to expat */
	CHECK(split_vs_expat("<stream:stream xmlns='urn:other' xmlns:stream='http://etherx.jabber"
			     ".org/streams'>", "<message><body>x</body></message>", &l) == 0);
	/* the splitter keeps its place around what expat reads: a presence, an
	 * iq with children, then a quoted '>' and "/>" in attribute values */
	CHECK(split_vs_expat(STREAM_HEAD, "<presence from='a@b/c'/><iq type='result' id='x'>"
			     "<q xmlns='jabber:iq:roster'><item jid='a@b'/></q></iq>"
			     "<message id='a>b/>'><body>lg1 9 9</body></message>", &l) == 1);
	CHECK(l.n == 4 && l.ev[1].type == LG_EV_PRESENCE && l.ev[2].type == LG_EV_IQ);
	CHECK_STR(l.ev[3].text, "lg1 9 9");

	/* a message cut between reads goes to expat, the next whole one does not */
	struct lg_xml x;
	memset(&l, 0, sizeof l);
	CHECK(lg_xml_init(&x, log_event, &l) == 0);
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);
	const char *m1 = "<message><body>first</body></message><message><body>sec";
	const char *m2 = "ond</body></message><message><body>third</body></message>";
	CHECK(lg_xml_feed(&x, m1, strlen(m1)) == 0);
	CHECK(lg_xml_feed(&x, m2, strlen(m2)) == 0);
	CHECK(x.fast_messages == 2 && l.n == 4);
	CHECK_STR(l.ev[2].text, "second");
	CHECK_STR(l.ev[3].text, "third");
	/* not well-formed in a way only the tags' names show: expat says so */
	const char *bad = "<message><body>x</bodx></message>";
	CHECK(lg_xml_feed(&x, bad, strlen(bad)) == -EPROTO);
	CHECK(x.fast_messages == 2 && l.n == 4);
	lg_xml_free(&x);

	/* a restart asked for by a handler drops the rest and resets the splitter */
	struct recorder r = { .restart_on = LG_EV_MESSAGE };
	CHECK(lg_xml_init(&x, record, &r) == 0);
	const char *two = STREAM_HEAD "<message/>";
	CHECK(lg_xml_feed(&x, two, strlen(two)) == LG_XML_RESTART); /* header unread: expat's */
	CHECK(r.last == LG_EV_MESSAGE && x.fast_messages == 0);
	r.restart_on = -1;
	CHECK(lg_xml_feed(&x, STREAM_HEAD, strlen(STREAM_HEAD)) == 0);
	r.restart_on = LG_EV_MESSAGE;
	const char *pair = "<message/><message><body>dropped</body></message>";
	CHECK(lg_xml_feed(&x, pair, strlen(pair)) == LG_XML_RESTART);
	CHECK(x.fast_messages == 1 && x.sp_depth == 0 && strcmp(r.text, "") == 0);
	lg_xml_free(&x);
}

/* ---- the engine against a scripted server --------------------------------- */

#define DOMAIN "example.test"
#define SERVER_HEAD "<?xml version='1.0'?><stream:stream xmlns='jabber:client' " \
		    "xmlns:stream='http://etherx.jabber.org/streams' from='" DOMAIN \
		    "' id='x1' version='1.0'>"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"

struct server {
	int listener;
	int fd[2];
	WOLFSSL *ssl[2]; /* after STARTTLS */
	char buf[2][16384];
	size_t len[2];
};

struct harness {
	struct lg_opts opts;
	int phase;
	struct lg_thread *t;
	struct server srv;
};

static int listen_loopback(struct sockaddr_in *addr)
{
	socklen_t len = sizeof *addr;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	memset(addr, 0, sizeof *addr);
	addr->sin_family = AF_INET;
	addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)addr, sizeof *addr) < 0 || listen(fd, 8) < 0 ||
	    getsockname(fd, (struct sockaddr *)addr, &len) < 0)
		abort();
	return fd;
}

/* Options for one account, user7/pass7, plaintext; tests change them before
 * harness_start(). */
static void harness_init(struct harness *h, enum sasl_mech mech)
{
	struct sockaddr_in addr;

	memset(h, 0, sizeof *h);
	h->srv.fd[0] = h->srv.fd[1] = -1;
	h->srv.listener = listen_loopback(&addr);
	memcpy(&h->opts.server, &addr, sizeof addr);
	h->opts.server_len = sizeof addr;
	h->opts.domain = DOMAIN;
	strcpy(h->opts.domain_xml, DOMAIN);
	if (lg_pattern_parse(&h->opts.user, "user%d") < 0 ||
	    lg_pattern_parse(&h->opts.password, "pass%d") < 0)
		abort();
	h->opts.first = 7;
	h->opts.accounts = 1;
	h->opts.pairs = 1;
	h->opts.window = 2;
	h->opts.tls = LG_TLS_NONE;
	h->opts.mech = mech;
	h->opts.threads = 1;
	h->opts.concurrency = 2;
	h->opts.timeout = 5;
}

static bool harness_start(struct harness *h, const char *scenario)
{
	const struct lg_scenario *scn = lg_scenario_find(scenario);

	h->phase = scn->login_phase ? LG_PHASE_LOGIN : LG_PHASE_RUN;
	return lg_thread_new(&h->t, 0, 1, &h->opts, scn, &h->phase) == 0;
}

/* The server's end of connection I, and what it had read. */
static void server_close(struct harness *h, int i)
{
	if (h->srv.ssl[i]) {
		wolfSSL_free(h->srv.ssl[i]);
		h->srv.ssl[i] = NULL;
	}
	if (h->srv.fd[i] >= 0)
		close(h->srv.fd[i]);
	h->srv.fd[i] = -1;
	h->srv.len[i] = 0;
	h->srv.buf[i][0] = '\0';
}

static void harness_free(struct harness *h)
{
	lg_thread_free(h->t);
	for (int i = 0; i < 2; i++)
		server_close(h, i);
	close(h->srv.listener);
}

static void set_phase(struct harness *h, enum lg_phase p)
{
	__atomic_store_n(&h->phase, (int)p, __ATOMIC_RELEASE);
	lg_thread_wake(h->t);
}

/* Let the client run until server connection I has received NEEDLE (kept in
 * the buffer, everything before it consumed) or two seconds passed. */
static bool expect(struct harness *h, int i, const char *needle)
{
	struct server *s = &h->srv;

	for (int turn = 0; turn < 400; turn++) {
		char *hit = memmem(s->buf[i], s->len[i], needle, strlen(needle));
		if (hit) {
			size_t used = (size_t)(hit - s->buf[i]) + strlen(needle);
			memmove(s->buf[i], s->buf[i] + used, s->len[i] - used);
			s->len[i] -= used;
			s->buf[i][s->len[i]] = '\0';
			return true;
		}
		lg_thread_poll(h->t, 5);
		size_t room = sizeof s->buf[i] - 1 - s->len[i];
		ssize_t n = s->ssl[i] ? wolfSSL_read(s->ssl[i], s->buf[i] + s->len[i], (int)room)
				      : recv(s->fd[i], s->buf[i] + s->len[i], room, MSG_DONTWAIT);
		if (n > 0) {
			s->len[i] += (size_t)n;
			s->buf[i][s->len[i]] = '\0';
		}
	}
	return false;
}

static void say(struct harness *h, int i, const char *text)
{
	int len = (int)strlen(text);

	if (h->srv.ssl[i] ? wolfSSL_write(h->srv.ssl[i], text, len) != len
			  : send(h->srv.fd[i], text, (size_t)len, MSG_NOSIGNAL) != len)
		abort();
}

static bool accept_client(struct harness *h, int i)
{
	struct pollfd p = { .fd = h->srv.listener, .events = POLLIN };

	for (int turn = 0; turn < 200 && poll(&p, 1, 0) == 0; turn++)
		lg_thread_poll(h->t, 5);
	if (poll(&p, 1, 0) != 1)
		return false; /* the client never connected: fail, do not block */
	h->srv.fd[i] = accept(h->srv.listener, NULL, NULL);
	return h->srv.fd[i] >= 0;
}

static uint64_t counter(struct harness *h, enum lg_counter c)
{
	return lg_counter_read(&h->t->ctr, c);
}

static uint64_t errors_of(struct harness *h, enum lg_err e)
{
	return lg_err_read(&h->t->ctr, e);
}

/* Base64 between "<TAG ...>" and "</TAG>" in connection I's input, decoded. */
static int take_sasl(struct harness *h, int i, const char *tag, char *out, size_t cap)
{
	char open[32], close[32];
	struct server *s = &h->srv;

	snprintf(open, sizeof open, "<%s ", tag);
	snprintf(close, sizeof close, "</%s>", tag);
	if (!expect(h, i, open) || !expect(h, i, ">"))
		return -1;
	char *end = strstr(s->buf[i], close);
	if (!end)
		return -1;
	int n = base64_decode(s->buf[i], (size_t)(end - s->buf[i]), (uint8_t *)out, cap - 1);
	if (n >= 0)
		out[n] = '\0';
	expect(h, i, close);
	return n;
}

/* The server's half of a stream's start: the client's header, our header
 * and features with CHILDREN. */
static bool open_stream_with(struct harness *h, int i, const char *children)
{
	char features[1024];

	if (!expect(h, i, "<stream:stream") || !expect(h, i, "to='" DOMAIN "'") ||
	    !expect(h, i, "version='1.0'>"))
		return false;
	snprintf(features, sizeof features, SERVER_HEAD "<stream:features>%s</stream:features>",
		 children);
	say(h, i, features);
	return true;
}

/* The server's half of a login up to the first stream's features. */
static bool open_stream(struct harness *h, int i, const char *mechs)
{
	char children[512];

	snprintf(children, sizeof children, "<mechanisms xmlns='" NS_SASL "'>%s</mechanisms>",
		 mechs);
	return open_stream_with(h, i, children);
}

/* After <success/>: the restarted stream, bind, session when asked, presence. */
static bool bind_stream(struct harness *h, int i, bool session, const char *who)
{
	if (!expect(h, i, "<stream:stream"))
		return false;
	say(h, i, SERVER_HEAD "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>");
	/* the features arrive in two writes: the client must wait for the end */
	say(h, i, session ? "<session xmlns='urn:ietf:params:xml:ns:xmpp-session'/>"
			    "</stream:features>" : "</stream:features>");
	if (!expect(h, i, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
			  "</iq>"))
		return false;
	char result[256];
	snprintf(result, sizeof result, "<iq type='result' id='bind'><bind xmlns='urn:ietf:params:"
		 "xml:ns:xmpp-bind'><jid>%s@" DOMAIN "/r1</jid></bind></iq>", who);
	say(h, i, result);
	if (session) {
		if (!expect(h, i, "<iq type='set' id='sess'>"))
			return false;
		say(h, i, "<iq type='result' id='sess'/>");
	}
	return true;
}

static bool plain_login(struct harness *h, int i, const char *who, const char *password)
{
	char got[256], want[256];

	if (!open_stream(h, i, "<mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>"))
		return false;
	int n = take_sasl(h, i, "auth", got, sizeof got);
	int wn = snprintf(want, sizeof want, "%c%s%c%s", 0, who, 0, password);
	if (n != wn || memcmp(got, want, (size_t)n) != 0)
		return false;
	say(h, i, "<success xmlns='" NS_SASL "'/>");
	return true;
}

/* A stream close from the client, answered, and the connection closed. */
static bool close_stream(struct harness *h, int i)
{
	if (!expect(h, i, "</stream:stream>"))
		return false;
	say(h, i, "</stream:stream>");
	server_close(h, i);
	return true;
}

/* Run the client until it has failed N connections in all. */
static bool wait_failed(struct harness *h, uint64_t n)
{
	for (int turn = 0; turn < 200 && counter(h, LG_C_FAILED) < n; turn++)
		lg_thread_poll(h->t, 5);
	return counter(h, LG_C_FAILED) == n;
}

static bool run_until_stopped(struct harness *h)
{
	for (int turn = 0; turn < 400; turn++)
		if (lg_thread_poll(h->t, 5) == 0)
			return true;
	return false;
}

static void test_engine_plain_idle(void)
{
	struct harness h;

	harness_init(&h, SASL_MECH_PLAIN);
	CHECK(harness_start(&h, "idle"));
	CHECK(accept_client(&h, 0));
	CHECK(plain_login(&h, 0, "user7", "pass7"));
	CHECK(bind_stream(&h, 0, true, "user7"));
	CHECK(expect(&h, 0, "<presence/>"));
	CHECK(counter(&h, LG_C_DONE) == 1 && counter(&h, LG_C_ONLINE) == 1);
	CHECK(h.t->goal_hist->count == 1);

	/* requests from the server: a ping is answered, anything else refused */
	say(&h, 0, "<iq type='get' id='p&amp;1' from='" DOMAIN "'><ping xmlns='urn:xmpp:ping'/></iq>");
	CHECK(expect(&h, 0, "<iq type='result' id='p&amp;1' to='" DOMAIN "'/>"));
	say(&h, 0, "<iq type='get' id='v1'><query xmlns='jabber:iq:version'/></iq>");
	CHECK(expect(&h, 0, "<iq type='error' id='v1'><error type='cancel'><service-unavailable"));

	set_phase(&h, LG_PHASE_RUN);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(close_stream(&h, 0));
	CHECK(run_until_stopped(&h));
	CHECK(counter(&h, LG_C_ONLINE) == 0);
	CHECK(counter(&h, LG_C_ERRORS) == 0 && counter(&h, LG_C_FAILED) == 0);
	harness_free(&h);
}

static struct scram_creds scram_account;

static int scram_lookup(void *arg, const char *username, struct scram_creds *out)
{
	(void)arg;
	if (strcmp(username, "user7") != 0)
		return -ENOENT;
	*out = scram_account;
	return 0;
}

/* The server side of MECH from workers/sasl.c against the client, whose
 * client-first must start with FIRST; CB is the server's tls-exporter value
 * for -PLUS. The features are sent already. */
static bool scram_exchange(struct harness *h, int i, enum sasl_mech mech, const uint8_t *cb,
			   const char *first)
{
	static struct sasl_session s;
	uint8_t out[512];
	char in[512], b64[800], stanza[1024];
	size_t out_len;

	int n = take_sasl(h, i, "auth", in, sizeof in);
	if (n <= 0 || strncmp(in, first, strlen(first)) != 0)
		return false;
	if (sasl_start(&s, mech, scram_lookup, NULL, DOMAIN, cb, cb ? 32 : 0, cb != NULL,
		       (const uint8_t *)in, (size_t)n, true, out, sizeof out, &out_len) !=
	    SASL_CONTINUE)
		return false;
	base64_encode(out, out_len, b64, sizeof b64);
	snprintf(stanza, sizeof stanza, "<challenge xmlns='" NS_SASL "'>%s</challenge>", b64);
	say(h, i, stanza);
	n = take_sasl(h, i, "response", in, sizeof in);
	if (n <= 0)
		return false;
	enum sasl_result r = sasl_step(&s, (const uint8_t *)in, (size_t)n, out, sizeof out,
				       &out_len);
	if (r == SASL_FAILURE) {
		say(h, i, "<failure xmlns='" NS_SASL "'><not-authorized/></failure>");
		sasl_session_clear(&s);
		return true;
	}
	if (r != SASL_SUCCESS)
		return false;
	base64_encode(out, out_len, b64, sizeof b64);
	snprintf(stanza, sizeof stanza, "<success xmlns='" NS_SASL "'>%s</success>", b64);
	say(h, i, stanza);
	sasl_session_clear(&s);
	return true;
}

/* SCRAM-SHA-256 without TLS: features, then the exchange. */
static bool scram_login(struct harness *h, int i)
{
	return open_stream(h, i, "<mechanism>PLAIN</mechanism><mechanism>SCRAM-SHA-256</mechanism>") &&
	       scram_exchange(h, i, SASL_MECH_SCRAM_SHA256, NULL, "n,,n=user7,r=");
}

static void test_engine_scram_login(void)
{
	struct harness h;

	CHECK(scram_creds_new("pass7", 5, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	CHECK(harness_start(&h, "login"));
	CHECK(accept_client(&h, 0));
	CHECK(scram_login(&h, 0));
	CHECK(bind_stream(&h, 0, false, "user7"));
	/* login: closes right after binding, no presence */
	CHECK(close_stream(&h, 0));
	CHECK(counter(&h, LG_C_DONE) == 1);
	CHECK(memmem(h.srv.buf[0], h.srv.len[0], "<presence", 9) == NULL);

	/* the slot starts again; now the stored key is for another password */
	CHECK(scram_creds_new("other", 5, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	CHECK(accept_client(&h, 1));
	CHECK(scram_login(&h, 1));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(counter(&h, LG_C_FAILED) == 1 && errors_of(&h, LG_ERR_AUTH) == 1);
	CHECK(counter(&h, LG_C_DONE) == 1);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);
}

/* login: an account's keys are derived once and used again; keys the server
 * refuses are dropped. */
static void test_engine_key_cache(void)
{
	struct harness h;

	CHECK(scram_creds_new("pass7", 5, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	CHECK(harness_start(&h, "login"));
	CHECK(h.t->keys != NULL && h.t->nkeys == 1);
	struct lg_key_slot *slot = &h.t->keys[0];

	CHECK(accept_client(&h, 0));
	CHECK(scram_login(&h, 0));
	CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
	CHECK(counter(&h, LG_C_DONE) == 1);
	CHECK(slot->account == 7 && slot->keys.mech == SASL_MECH_SCRAM_SHA256);
	CHECK(slot->keys.iterations == SCRAM_DEFAULT_ITERATIONS && slot->keys.salt_len == 16 &&
	      memcmp(slot->keys.salt, scram_account.salt, 16) == 0);

	/* the next login of the account uses the cached keys: spoiled, it fails */
	slot->keys.client_key[0] ^= 1;
	CHECK(accept_client(&h, 0));
	CHECK(scram_login(&h, 0));
	CHECK(wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1);
	CHECK(slot->keys.mech == SASL_MECH_NONE); /* refused keys are dropped */
	server_close(&h, 0);

	/* derived again, then used again: both logins succeed */
	for (int k = 0; k < 2; k++) {
		CHECK(accept_client(&h, 0));
		CHECK(scram_login(&h, 0));
		CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
		CHECK(slot->keys.mech == SASL_MECH_SCRAM_SHA256);
	}
	for (int turn = 0; turn < 100 && counter(&h, LG_C_DONE) < 3; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(counter(&h, LG_C_DONE) == 3 && counter(&h, LG_C_FAILED) == 1);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);

	/* scenarios that log each account in once keep no keys */
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	CHECK(harness_start(&h, "idle"));
	CHECK(h.t->keys == NULL);
	harness_free(&h);
}

/* A --scram-keys line for user7 with PASSWORD's SaltedPassword under SALT. */
static void keys_line(char *out, size_t cap, const char *password, const uint8_t salt[16])
{
	uint8_t salted[32];
	char b64[40];
	int n;

	if (wc_PBKDF2(salted, (const byte *)password, (int)strlen(password), salt, 16,
		      SCRAM_DEFAULT_ITERATIONS, sizeof salted, WC_SHA256) != 0 ||
	    base64_encode(salt, 16, b64, sizeof b64) < 0)
		abort();
	n = snprintf(out, cap, "user7 %s %d ", b64, SCRAM_DEFAULT_ITERATIONS);
	for (size_t i = 0; i < sizeof salted; i++)
		n += snprintf(out + n, cap - (size_t)n, "%02x", salted[i]);
	snprintf(out + n, cap - (size_t)n, "\n");
}

static void test_keys_parse(void)
{
	struct lg_pattern p;
	struct scram_client_keys k;
	struct scram_creds creds;
	uint8_t salt[16], stored[32];
	uint32_t account = 0;
	char line[256], bad[256];

	CHECK(lg_pattern_parse(&p, "user%d") == 0);
	CHECK(lg_pattern_match(&p, "user7", 5, &account) == 0 && account == 7);
	CHECK(lg_pattern_match(&p, "user0", 5, &account) == 0 && account == 0);
	CHECK(lg_pattern_match(&p, "user", 4, &account) == -EINVAL);
	CHECK(lg_pattern_match(&p, "user07", 6, &account) == -EINVAL);
	CHECK(lg_pattern_match(&p, "user7x", 6, &account) == -EINVAL);
	CHECK(lg_pattern_match(&p, "usr7", 4, &account) == -EINVAL);
	CHECK(lg_pattern_match(&p, "user4294967296", 14, &account) == -EINVAL);
	struct lg_pattern q;
	CHECK(lg_pattern_parse(&q, "a%d.b") == 0);
	CHECK(lg_pattern_match(&q, "a12.b", 5, &account) == 0 && account == 12);

	/* the keys from a line are the ones the server stores for the password */
	memset(salt, 0x5a, sizeof salt);
	CHECK(scram_creds_derive("pass7", 5, salt, SCRAM_DEFAULT_ITERATIONS, &creds) == 0);
	keys_line(line, sizeof line, "pass7", salt);
	account = 0;
	CHECK(lg_keys_parse_line(strcpy(bad, line), &p, &account, &k) == 1);
	CHECK(account == 7 && k.mech == SASL_MECH_SCRAM_SHA256);
	CHECK(k.iterations == SCRAM_DEFAULT_ITERATIONS && k.salt_len == 16 &&
	      memcmp(k.salt, salt, 16) == 0);
	CHECK(wc_Sha256Hash(k.client_key, 32, stored) == 0);
	CHECK(memcmp(stored, creds.stored_key_sha256, 32) == 0);
	CHECK(memcmp(k.server_key, creds.server_key_sha256, 32) == 0);

	CHECK(lg_keys_parse_line(strcpy(bad, "\n"), &p, &account, &k) == 0);
	CHECK(lg_keys_parse_line(strcpy(bad, "# comment\n"), &p, &account, &k) == 0);
	static const char *const malformed[] = {
		"user7 AAAA 4096\n",                       /* a field missing */
		"bob7 WlpaWlpaWlpaWlpaWlpaWg== 4096 00\n", /* not the pattern */
		"user7 !!!! 4096 %s\n",                    /* salt not base64 */
		"user7 WlpaWlpaWlpaWlpaWlpaWg== 0 %s\n",    /* no iterations */
		"user7 WlpaWlpaWlpaWlpaWlpaWg== -1 %s\n",
		"user7 WlpaWlpaWlpaWlpaWlpaWg== 4096 %s extra\n",
		"user7 WlpaWlpaWlpaWlpaWlpaWg== 4096 %sab\n", /* 33 bytes */
		"user7 WlpaWlpaWlpaWlpaWlpaWg== 4096 zz%s\n",
	};
	const char *hex = strrchr(line, ' ') + 1;
	char hex31[63];
	memcpy(hex31, hex, 62); /* 31 bytes: a later "zz" makes 32 again */
	hex31[62] = '\0';
	for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
		snprintf(bad, sizeof bad, malformed[i], i == 7 ? hex31 : "0123456789abcdef0123456789"
			 "abcdef0123456789abcdef0123456789abcdef");
		k.mech = SASL_MECH_SCRAM_SHA1;
		CHECK(lg_keys_parse_line(bad, &p, &account, &k) == -EINVAL);
	}

	/* a file: accounts outside the run are skipped, a bad line is named */
	FILE *f = tmpfile();
	struct lg_keys keys;
	unsigned bad_line = 99;
	CHECK(f != NULL);
	fprintf(f, "# made by bench/compare\n%s", line);
	fprintf(f, "user8 WlpaWlpaWlpaWlpaWlpaWg== 4096 %s", hex);
	rewind(f);
	CHECK(lg_keys_load(&keys, f, &p, 7, 1, &bad_line) == 0 && bad_line == 0);
	CHECK(keys.loaded == 1 && lg_keys_find(&keys, 7) != NULL);
	CHECK(lg_keys_find(&keys, 8) == NULL && lg_keys_find(&keys, 6) == NULL);
	CHECK(lg_keys_find(NULL, 7) == NULL);
	lg_keys_free(&keys);
	rewind(f);
	CHECK(lg_keys_load(&keys, f, &p, 1, 100, &bad_line) == 0 && keys.loaded == 2);
	CHECK(lg_keys_find(&keys, 9) == NULL); /* in the range, not in the file */
	lg_keys_free(&keys);
	fprintf(f, "user9 WlpaWlpaWlpaWlpaWlpaWg== 4096\n");
	rewind(f);
	CHECK(lg_keys_load(&keys, f, &p, 1, 100, &bad_line) == -EINVAL && bad_line == 4);
	CHECK(keys.keys == NULL);
	fclose(f);
}

/* A login with --scram-keys: with the server's salt the file's keys are used
 * (wrong ones fail the login, right ones pass), with another salt the client
 * derives its own. In login (which keeps a cache) and idle (which does not). */
static bool keys_login(const char *scenario, const char *password, const uint8_t salt[16],
		       bool expect_ok)
{
	struct harness h;
	struct lg_keys keys;
	unsigned bad_line;
	char line[256];
	bool ok = true;
	FILE *f = tmpfile();

	if (!f)
		return false;
	keys_line(line, sizeof line, password, salt);
	fputs(line, f);
	rewind(f);
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	ok = lg_keys_load(&keys, f, &h.opts.user, 7, 1, &bad_line) == 0 && keys.loaded == 1;
	fclose(f);
	h.opts.keys = &keys;
	ok = ok && harness_start(&h, scenario) && accept_client(&h, 0) && scram_login(&h, 0);
	if (ok && expect_ok && strcmp(scenario, "idle") == 0) {
		ok = bind_stream(&h, 0, false, "user7") && expect(&h, 0, "<presence/>");
		set_phase(&h, LG_PHASE_STOP);
		ok = ok && close_stream(&h, 0);
	} else if (ok && expect_ok) {
		ok = bind_stream(&h, 0, false, "user7") && close_stream(&h, 0); /* login closes */
		set_phase(&h, LG_PHASE_STOP);
	} else if (ok) {
		ok = wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1;
		set_phase(&h, LG_PHASE_STOP);
	}
	ok = ok && counter(&h, LG_C_DONE) == (expect_ok ? 1 : 0) &&
	     counter(&h, LG_C_FAILED) == (expect_ok ? 0 : 1);
	ok = ok && run_until_stopped(&h);
	/* the file's table is read-only: a login never writes into it */
	ok = ok && lg_keys_find(&keys, 7) && memcmp(lg_keys_find(&keys, 7)->salt, salt, 16) == 0;
	harness_free(&h);
	lg_keys_free(&keys);
	return ok;
}

static void test_engine_scram_keys(void)
{
	uint8_t salt[16], other[16];

	memset(salt, 0x33, sizeof salt);
	memset(other, 0x44, sizeof other);
	CHECK(scram_creds_derive("pass7", 5, salt, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	for (int i = 0; i < 2; i++) {
		const char *scn = i ? "idle" : "login";

		CHECK(keys_login(scn, "pass7", salt, true));   /* used, right */
		CHECK(keys_login(scn, "wrong", salt, false));  /* used: so it fails */
		CHECK(keys_login(scn, "wrong", other, true));  /* salt differs: derived */
	}
}

static void test_engine_bad_server_proof(void)
{
	struct harness h;
	char in[512];

	harness_init(&h, SASL_MECH_SCRAM_SHA1);
	CHECK(harness_start(&h, "login"));
	CHECK(accept_client(&h, 0));
	CHECK(open_stream(&h, 0, "<mechanism>SCRAM-SHA-1</mechanism>"));
	int n = take_sasl(&h, 0, "auth", in, sizeof in);
	CHECK(n > 13);
	/* a server that does not know the password cannot make v= right */
	char server_first[600], b64[800], stanza[900];
	snprintf(server_first, sizeof server_first, "r=%sSRV,s=QSXCR+Q6sek8bf92,i=4096", in + 13);
	base64_encode((const uint8_t *)server_first, strlen(server_first), b64, sizeof b64);
	snprintf(stanza, sizeof stanza, "<challenge xmlns='" NS_SASL "'>%s</challenge>", b64);
	say(&h, 0, stanza);
	CHECK(take_sasl(&h, 0, "response", in, sizeof in) > 0);
	say(&h, 0, "<success xmlns='" NS_SASL "'>dj1ybUY5cHFWOFM3c3VBb1pXamE0ZEpSa0ZzS1E9</success>");
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(errors_of(&h, LG_ERR_AUTH) == 1 && counter(&h, LG_C_DONE) == 0);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);
}

static void test_engine_failures(void)
{
	struct harness h;

	/* a stream error */
	harness_init(&h, SASL_MECH_PLAIN);
	CHECK(harness_start(&h, "idle"));
	CHECK(accept_client(&h, 0));
	CHECK(expect(&h, 0, "<stream:stream"));
	say(&h, 0, SERVER_HEAD "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:"
		   "xmpp-streams'/></stream:error></stream:stream>");
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(errors_of(&h, LG_ERR_STREAM) == 1 && counter(&h, LG_C_ERRORS) == 1);
	harness_free(&h);

	/* the mechanism asked for is not offered */
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	CHECK(harness_start(&h, "idle"));
	CHECK(accept_client(&h, 0));
	CHECK(open_stream(&h, 0, "<mechanism>PLAIN</mechanism>"));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(errors_of(&h, LG_ERR_AUTH) == 1);
	harness_free(&h);

	/* silence: the login times out */
	harness_init(&h, SASL_MECH_PLAIN);
	h.opts.timeout = 0.1;
	CHECK(harness_start(&h, "idle"));
	CHECK(accept_client(&h, 0));
	CHECK(expect(&h, 0, "<stream:stream"));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 10);
	CHECK(errors_of(&h, LG_ERR_TIMEOUT) == 1);
	harness_free(&h);

	/* STARTTLS wanted but not offered */
	harness_init(&h, SASL_MECH_PLAIN);
	h.opts.tls = LG_TLS_STARTTLS;
	CHECK(harness_start(&h, "idle"));
	CHECK(accept_client(&h, 0));
	CHECK(open_stream(&h, 0, "<mechanism>PLAIN</mechanism>"));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_FAILED) == 0; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(errors_of(&h, LG_ERR_TLS) == 1);
	harness_free(&h);
}

/* ---- SCRAM-SHA-256-PLUS over STARTTLS ------------------------------------ */

/* A P-256 key and a self-signed certificate for example.test (openssl req
 * -x509 -days 36500); the client does not check it without --ca. */
static const char test_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgSsPUbMisPH/pgDnt\n"
	"cze1xt+Jg0RB4BWRawTJxSGci1ShRANCAAR/U+PxyyhiPaenZFhYkber5rBlfo0q\n"
	"GiaZWuzifUqQdt+uudxKb2fvcbw9H5RGotFzGw1HhcOE5RoPHQX58Nd/\n"
	"-----END PRIVATE KEY-----\n";
static const char test_cert_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBnTCCAUSgAwIBAgIUQmKz6pMzuwV2CIxaQ5DUCESbNcIwCgYIKoZIzj0EAwIw\n"
	"FzEVMBMGA1UEAwwMZXhhbXBsZS50ZXN0MCAXDTI2MTEyMjAwMzk1MloYDzIxMjYx\n"
	"MDI5MDAzOTUyWjAXMRUwEwYDVQQDDAxleGFtcGxlLnRlc3QwWTATBgcqhkjOPQIB\n"
	"BggqhkjOPQMBBwNCAAR/U+PxyyhiPaenZFhYkber5rBlfo0qGiaZWuzifUqQdt+u\n"
	"udxKb2fvcbw9H5RGotFzGw1HhcOE5RoPHQX58Nd/o2wwajAdBgNVHQ4EFgQUTRNn\n"
	"oMUpNy045sun7XjPlsgZWcwwHwYDVR0jBBgwFoAUTRNnoMUpNy045sun7XjPlsgZ\n"
	"WcwwDwYDVR0TAQH/BAUwAwEB/zAXBgNVHREEEDAOggxleGFtcGxlLnRlc3QwCgYI\n"
	"KoZIzj0EAwIDRwAwRAIgee5+cn1jrXaOa3NDptO0f3C9ZUpoKtRgdwQ07nezRugC\n"
	"IBSqHwqBKj//YCv0c5QvD8bervHaDVlyoLj+UQVnxzq1\n"
	"-----END CERTIFICATE-----\n";

static WOLFSSL_CTX *server_tls_ctx(bool tls12)
{
	WOLFSSL_CTX *ctx = wolfSSL_CTX_new(tls12 ? wolfTLSv1_2_server_method()
						 : wolfTLSv1_3_server_method());

	if (!ctx ||
	    wolfSSL_CTX_use_PrivateKey_buffer(ctx, (const unsigned char *)test_key_pem,
					      sizeof test_key_pem - 1, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_use_certificate_buffer(ctx, (const unsigned char *)test_cert_pem,
					       sizeof test_cert_pem - 1, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS)
		abort();
	return ctx;
}

/* The first stream offers STARTTLS; <proceed/>, then the server's handshake
 * on a non-blocking socket while the client's loop runs. */
static bool server_starttls(struct harness *h, int i, WOLFSSL_CTX *ctx)
{
	int fd = h->srv.fd[i];

	if (!open_stream_with(h, i, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
				    "</starttls>") ||
	    !expect(h, i, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"))
		return false;
	say(h, i, "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0 ||
	    !(h->srv.ssl[i] = wolfSSL_new(ctx)) || wolfSSL_set_fd(h->srv.ssl[i], fd) != WOLFSSL_SUCCESS)
		return false;
	for (int turn = 0; turn < 400; turn++) {
		int r = wolfSSL_accept(h->srv.ssl[i]);
		if (r == WOLFSSL_SUCCESS)
			return true;
		int e = wolfSSL_get_error(h->srv.ssl[i], r);
		if (e != WOLFSSL_ERROR_WANT_READ && e != WOLFSSL_ERROR_WANT_WRITE)
			return false;
		lg_thread_poll(h->t, 5);
	}
	return false;
}

static void server_exporter(struct harness *h, int i, uint8_t out[32])
{
	if (wolfSSL_export_keying_material(h->srv.ssl[i], out, 32, "EXPORTER-Channel-Binding", 24,
					   NULL, 0, 0) != WOLFSSL_SUCCESS)
		abort();
}

/* Read what connection I still sends until the client closes it. */
static void drain(struct harness *h, int i)
{
	struct server *s = &h->srv;

	for (int turn = 0; turn < 400; turn++) {
		size_t room = sizeof s->buf[i] - 1 - s->len[i];
		ssize_t n = s->ssl[i] ? wolfSSL_read(s->ssl[i], s->buf[i] + s->len[i], (int)room)
				      : recv(s->fd[i], s->buf[i] + s->len[i], room, MSG_DONTWAIT);
		if (n > 0) {
			s->len[i] += (size_t)n;
			s->buf[i][s->len[i]] = '\0';
			continue;
		}
		bool more = s->ssl[i] ? wolfSSL_get_error(s->ssl[i], (int)n) == WOLFSSL_ERROR_WANT_READ
				      : n < 0 && errno == EAGAIN;
		if (!more)
			return;
		lg_thread_poll(h->t, 5);
	}
}

#define PLUS_MECHS "<mechanisms xmlns='" NS_SASL "'><mechanism>SCRAM-SHA-256</mechanism>" \
		   "<mechanism>SCRAM-SHA-256-PLUS</mechanism></mechanisms>"
#define CB_TYPES(t) "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='" \
		    t "'/></sasl-channel-binding>"

static void test_engine_plus_over_tls(void)
{
	WOLFSSL_CTX *tls13 = server_tls_ctx(false), *tls12 = server_tls_ctx(true);
	struct harness h;
	uint8_t cb[32];

	CHECK(scram_creds_new("pass7", 5, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	harness_init(&h, SASL_MECH_SCRAM_SHA256_PLUS);
	h.opts.tls = LG_TLS_STARTTLS;
	CHECK(harness_start(&h, "login"));

	/* TLS 1.3, tls-exporter listed (XEP-0440): the server's sasl.c accepts
	 * the binding only if the client exported the same value */
	CHECK(accept_client(&h, 0));
	CHECK(server_starttls(&h, 0, tls13));
	CHECK(open_stream_with(&h, 0, PLUS_MECHS CB_TYPES("tls-exporter")));
	server_exporter(&h, 0, cb);
	CHECK(scram_exchange(&h, 0, SASL_MECH_SCRAM_SHA256_PLUS, cb, "p=tls-exporter,,n=user7,r="));
	CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
	CHECK(counter(&h, LG_C_DONE) == 1 && counter(&h, LG_C_ERRORS) == 0);

	/* a server listing only other binding types gets no -PLUS attempt */
	CHECK(accept_client(&h, 0));
	CHECK(server_starttls(&h, 0, tls13));
	CHECK(open_stream_with(&h, 0, PLUS_MECHS CB_TYPES("tls-server-end-point")));
	CHECK(wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1);
	drain(&h, 0);
	CHECK(!memmem(h.srv.buf[0], h.srv.len[0], "<auth", 5));
	server_close(&h, 0);

	/* nor does one over TLS 1.2, even offering -PLUS */
	CHECK(accept_client(&h, 0));
	CHECK(server_starttls(&h, 0, tls12));
	CHECK(open_stream_with(&h, 0, PLUS_MECHS));
	CHECK(wait_failed(&h, 2) && errors_of(&h, LG_ERR_AUTH) == 2);
	drain(&h, 0);
	CHECK(!memmem(h.srv.buf[0], h.srv.len[0], "<auth", 5));
	server_close(&h, 0);

	/* TLS 1.3 without a XEP-0440 list: tls-exporter, TLS 1.3's default */
	CHECK(accept_client(&h, 0));
	CHECK(server_starttls(&h, 0, tls13));
	CHECK(open_stream_with(&h, 0, PLUS_MECHS));
	server_exporter(&h, 0, cb);
	CHECK(scram_exchange(&h, 0, SASL_MECH_SCRAM_SHA256_PLUS, cb, "p=tls-exporter,,n=user7,r="));
	CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_DONE) < 2; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(counter(&h, LG_C_DONE) == 2 && counter(&h, LG_C_FAILED) == 2);

	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);
	wolfSSL_CTX_free(tls13);
	wolfSSL_CTX_free(tls12);

	/* no channel to bind to at all: refused before anything is sent */
	harness_init(&h, SASL_MECH_SCRAM_SHA256_PLUS);
	CHECK(harness_start(&h, "login"));
	CHECK(accept_client(&h, 0));
	CHECK(open_stream(&h, 0, "<mechanism>SCRAM-SHA-256-PLUS</mechanism>"));
	CHECK(wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1);
	drain(&h, 0);
	CHECK(!memmem(h.srv.buf[0], h.srv.len[0], "<auth", 5));
	harness_free(&h);
	wc_ecc_fp_free(); /* this thread's ECC cache, as the generator's threads do */
}

/* ---- login: the warm-up caches keys before the measured window ------------- */

/* Nothing new to accept on the listener after a few loop turns. */
static bool no_new_connection(struct harness *h)
{
	struct pollfd p = { .fd = h->srv.listener, .events = POLLIN };

	for (int turn = 0; turn < 20; turn++)
		lg_thread_poll(h->t, 5);
	return poll(&p, 1, 0) == 0;
}

/* With SCRAM, login starts in the warm-up phase: each account logs in once,
 * unmeasured, and the slots rest until the window opens; the window's logins
 * then reuse the keys the warm-up derived, and only they are timed. */
static void test_engine_login_warmup(void)
{
	const struct lg_scenario *scn = lg_scenario_find("login");
	struct harness h;

	CHECK(scram_creds_new("pass7", 5, SCRAM_DEFAULT_ITERATIONS, &scram_account) == 0);
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	h.opts.concurrency = 1;
	CHECK(lg_scenario_warmup(scn, &h.opts));
	h.phase = LG_PHASE_LOGIN; /* as xmpp-loadgen starts it */
	CHECK(lg_thread_new(&h.t, 0, 1, &h.opts, scn, &h.phase) == 0);
	struct lg_key_slot *slot = &h.t->keys[0];

	CHECK(accept_client(&h, 0));
	CHECK(scram_login(&h, 0));
	CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
	CHECK(slot->account == 7 && slot->keys.mech == SASL_MECH_SCRAM_SHA256);
	CHECK(no_new_connection(&h)); /* one account, one warm-up login: resting */
	CHECK(counter(&h, LG_C_DONE) == 1 && h.t->goal_hist->count == 1);

	set_phase(&h, LG_PHASE_RUN);
	CHECK(accept_client(&h, 0));
	/* the cached keys are used: spoiled, this login fails */
	slot->keys.client_key[0] ^= 1;
	CHECK(scram_login(&h, 0));
	CHECK(wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1);
	server_close(&h, 0);
	CHECK(accept_client(&h, 0));
	CHECK(scram_login(&h, 0));
	CHECK(bind_stream(&h, 0, false, "user7") && close_stream(&h, 0));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_DONE) < 2; turn++)
		lg_thread_poll(h.t, 5);
	/* the warm-up login is not in the window's latencies */
	CHECK(counter(&h, LG_C_DONE) == 2 && h.t->goal_hist->count == 1);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);

	/* PLAIN derives nothing, and --no-warmup asks for uncached logins */
	harness_init(&h, SASL_MECH_PLAIN);
	CHECK(!lg_scenario_warmup(scn, &h.opts));
	harness_free(&h);
	harness_init(&h, SASL_MECH_SCRAM_SHA256);
	h.opts.no_warmup = true;
	CHECK(!lg_scenario_warmup(scn, &h.opts));
	CHECK(!lg_scenario_warmup(lg_scenario_find("connect"), &h.opts));
	harness_free(&h);
}

/* ---- connect: the slot is free again without the server's close ------------ */

/* Run the client until server connection I reads the end of its input:
 * close_notify over TLS, then EOF. The server never closes its side. */
static bool client_hung_up(struct harness *h, int i)
{
	struct server *s = &h->srv;

	for (int turn = 0; turn < 400; turn++) {
		size_t room = sizeof s->buf[i] - 1 - s->len[i];
		ssize_t n = s->ssl[i] ? wolfSSL_read(s->ssl[i], s->buf[i] + s->len[i], (int)room)
				      : recv(s->fd[i], s->buf[i] + s->len[i], room, MSG_DONTWAIT);
		if (n > 0) {
			s->len[i] += (size_t)n;
			s->buf[i][s->len[i]] = '\0';
			continue;
		}
		if (s->ssl[i]) {
			int e = wolfSSL_get_error(s->ssl[i], (int)n);
			if (e == WOLFSSL_ERROR_ZERO_RETURN) {
				/* then the TCP close, with nothing after it */
				char byte;
				for (int k = 0; k < 200; k++) {
					ssize_t r = recv(s->fd[i], &byte, 1, MSG_DONTWAIT);
					if (r == 0)
						return true;
					if (r > 0 || errno != EAGAIN)
						return false;
					lg_thread_poll(h->t, 5);
				}
				return false;
			}
			if (e != WOLFSSL_ERROR_WANT_READ)
				return false;
		} else if (n == 0) {
			return true;
		} else if (errno != EAGAIN) {
			return false;
		}
		lg_thread_poll(h->t, 5);
	}
	return false;
}

/* connect reaches its goal at the end of the handshake (the features in
 * plaintext), sends its close and starts the next attempt in the same slot
 * at once: a server that is slow to close (ejabberd takes ~3 s after a bare
 * close_notify) must not bound the rate. */
static void test_engine_connect_no_close_wait(void)
{
	WOLFSSL_CTX *tls13 = server_tls_ctx(false);
	struct harness h;

	/* plaintext: the goal is the first stream's features */
	harness_init(&h, SASL_MECH_PLAIN);
	h.opts.concurrency = 1;
	CHECK(harness_start(&h, "connect"));
	CHECK(h.t->nconns == 1);
	CHECK(accept_client(&h, 0));
	CHECK(open_stream(&h, 0, "<mechanism>PLAIN</mechanism>"));
	CHECK(expect(&h, 0, "</stream:stream>"));
	CHECK(client_hung_up(&h, 0));
	CHECK(!memmem(h.srv.buf[0], h.srv.len[0], "<auth", 5));
	/* the server has not closed connection 0, and the slot's next one is here */
	CHECK(accept_client(&h, 1));
	CHECK(counter(&h, LG_C_DONE) == 1 && counter(&h, LG_C_FAILED) == 0);
	CHECK(counter(&h, LG_C_ERRORS) == 0 && counter(&h, LG_C_STARTED) == 2);
	CHECK(h.t->close_wait.head == NULL);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	CHECK(counter(&h, LG_C_ERRORS) == 0); /* the attempt in flight is interrupted */
	harness_free(&h);

	/* STARTTLS: the goal is the end of the TLS handshake */
	harness_init(&h, SASL_MECH_PLAIN);
	h.opts.concurrency = 1;
	h.opts.tls = LG_TLS_STARTTLS;
	CHECK(harness_start(&h, "connect"));
	CHECK(accept_client(&h, 0));
	CHECK(server_starttls(&h, 0, tls13));
	CHECK(client_hung_up(&h, 0));
	CHECK(h.srv.len[0] == 0); /* no stream on the TLS layer, so nothing before close_notify */
	CHECK(accept_client(&h, 1));
	CHECK(counter(&h, LG_C_DONE) == 1 && counter(&h, LG_C_FAILED) == 0);
	CHECK(counter(&h, LG_C_ERRORS) == 0 && counter(&h, LG_C_ONLINE) == 0);
	CHECK(h.t->goal_hist->count == 1);
	/* and the next handshake in the same slot completes too */
	CHECK(server_starttls(&h, 1, tls13));
	CHECK(client_hung_up(&h, 1));
	for (int turn = 0; turn < 100 && counter(&h, LG_C_STARTED) < 3; turn++)
		lg_thread_poll(h.t, 5);
	CHECK(counter(&h, LG_C_DONE) == 2 && counter(&h, LG_C_STARTED) == 3);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	CHECK(counter(&h, LG_C_ERRORS) == 0 && counter(&h, LG_C_FAILED) == 0);
	harness_free(&h);
	wolfSSL_CTX_free(tls13);
	wc_ecc_fp_free();
}

/* The next message stanza connection FROM sent, into HELD. */
static bool take_message(struct harness *h, int from, char *held, size_t cap)
{
	struct server *s = &h->srv;

	if (!expect(h, from, "<message "))
		return false;
	char *end = strstr(s->buf[from], "</message>");
	if (!end)
		return false;
	int n = snprintf(held, cap, "<message %.*s</message>", (int)(end - s->buf[from]),
			 s->buf[from]);
	expect(h, from, "</message>");
	return n > 0 && (size_t)n < cap;
}

static void test_engine_chat_pair(void)
{
	struct harness h;
	char m1[512], m2[512], m3[512];

	harness_init(&h, SASL_MECH_PLAIN);
	h.opts.first = 1;
	CHECK(harness_start(&h, "chat"));
	CHECK(accept_client(&h, 0));
	CHECK(accept_client(&h, 1));
	/* which socket is which account: the PLAIN payload says */
	CHECK(open_stream(&h, 0, "<mechanism>PLAIN</mechanism>"));
	CHECK(open_stream(&h, 1, "<mechanism>PLAIN</mechanism>"));
	char got[64];
	int n = take_sasl(&h, 0, "auth", got, sizeof got);
	CHECK(n > 6);
	int a = strcmp(got + 1, "user1") == 0 ? 0 : 1, b = 1 - a;
	CHECK(take_sasl(&h, 1, "auth", got, sizeof got) > 6);
	say(&h, 0, "<success xmlns='" NS_SASL "'/>");
	say(&h, 1, "<success xmlns='" NS_SASL "'/>");
	CHECK(bind_stream(&h, a, false, "user1"));
	CHECK(bind_stream(&h, b, false, "user2"));
	CHECK(expect(&h, a, "<presence/>") && expect(&h, b, "<presence/>"));
	CHECK(counter(&h, LG_C_ONLINE) == 2);
	CHECK(counter(&h, LG_C_SENT) == 0); /* nothing before the run */

	set_phase(&h, LG_PHASE_RUN);
	/* window 2: each side sends two and waits */
	CHECK(take_message(&h, a, m1, sizeof m1));
	CHECK(take_message(&h, a, m2, sizeof m2));
	CHECK(strstr(m1, "to='user2@" DOMAIN "' type='chat'") && strstr(m1, "<body>lg1 0 "));
	CHECK(strstr(m2, "<body>lg1 1 "));
	for (int turn = 0; turn < 20; turn++)
		lg_thread_poll(h.t, 1);
	CHECK(counter(&h, LG_C_SENT) == 4);
	CHECK(h.srv.len[a] == 0 || !memmem(h.srv.buf[a], h.srv.len[a], "<message", 8));

	/* deliver out of order: 1 then 0; each delivery lets user1 send one more */
	say(&h, b, m2);
	CHECK(take_message(&h, a, m3, sizeof m3));
	CHECK(strstr(m3, "<body>lg1 2 "));
	say(&h, b, m1);
	CHECK(expect(&h, a, "<body>lg1 3 "));
	CHECK(counter(&h, LG_C_RECEIVED) == 2 && counter(&h, LG_C_OUT_OF_ORDER) == 1);
	CHECK(h.t->msg_hist->count == 2 && h.t->msg_hist->max > 0);
	/* the next one in order is not out of order */
	say(&h, b, m3);
	CHECK(expect(&h, a, "<body>lg1 4 "));
	CHECK(counter(&h, LG_C_RECEIVED) == 3 && counter(&h, LG_C_OUT_OF_ORDER) == 1);

	/* an error bounce and a body that is not ours are counted, not timed */
	say(&h, b, "<message type='error' from='user1@" DOMAIN "'><body>x</body></message>"
		   "<message from='user1@" DOMAIN "'><body>hello</body></message>");
	for (int turn = 0; turn < 20; turn++)
		lg_thread_poll(h.t, 1);
	CHECK(counter(&h, LG_C_MSG_ERRORS) == 2 && counter(&h, LG_C_RECEIVED) == 3);

	set_phase(&h, LG_PHASE_DRAIN);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(close_stream(&h, a) && close_stream(&h, b));
	CHECK(run_until_stopped(&h));
	CHECK(counter(&h, LG_C_ERRORS) == 0);
	harness_free(&h);
}

/* The component scenario: the test server plays xmppd's component
 * listener and c2s (both plaintext) and relays messages between them. */
#define COMP_NAME "cb1." DOMAIN
#define COMP_HEAD "<stream:stream xmlns='jabber:component:accept' xmlns:stream=" \
		  "'http://etherx.jabber.org/streams' from='" COMP_NAME "' id='st1'>"

/* The body of the message in HELD, re-addressed FROM -> TO. */
static void relay(struct harness *h, int i, const char *held, const char *from, const char *to)
{
	char out[600];
	const char *body = strstr(held, "<body>"), *end = strstr(held, "</body>");

	if (!body || !end)
		abort();
	snprintf(out, sizeof out, "<message from='%s' to='%s' type='chat'>%.*s</message>", from,
		 to, (int)(end + 7 - body), body);
	say(h, i, out);
}

/* A harness whose component (plaintext, at the clients' server) uses SECRET. */
static void component_harness(struct harness *h, const char *secret)
{
	harness_init(h, SASL_MECH_PLAIN);
	memcpy(&h->opts.comp_server, &h->opts.server, sizeof h->opts.server);
	h->opts.comp_server_len = h->opts.server_len;
	h->opts.comp_tls = LG_TLS_NONE;
	h->opts.comp_name = COMP_NAME;
	strcpy(h->opts.comp_name_xml, COMP_NAME);
	h->opts.comp_secret = secret;
}

static void test_engine_component(void)
{
	struct harness h;
	char secret_hex[LG_HANDSHAKE_HEX], want[80], up[512], down[512];

	component_harness(&h, "s3cret");
	h.opts.window = 1;
	CHECK(harness_start(&h, "component"));
	CHECK(h.t->nconns == 2 && h.t->conns[0].component && !h.t->conns[1].component);
	/* slot 0, the component, is queued first and connects first */
	CHECK(accept_client(&h, 0) && accept_client(&h, 1));
	CHECK(expect(&h, 0, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='"
			    "http://etherx.jabber.org/streams' to='" COMP_NAME "'>"));
	say(&h, 0, COMP_HEAD);
	CHECK(lg_component_handshake("st1", "s3cret", secret_hex) == 0);
	snprintf(want, sizeof want, "<handshake>%s</handshake>", secret_hex);
	CHECK(expect(&h, 0, want));
	say(&h, 0, "<handshake/>");
	CHECK(plain_login(&h, 1, "user7", "pass7"));
	CHECK(bind_stream(&h, 1, false, "user7") && expect(&h, 1, "<presence/>"));
	CHECK(counter(&h, LG_C_ONLINE) == 2 && counter(&h, LG_C_SENT) == 0);

	set_phase(&h, LG_PHASE_RUN);
	/* window 1 each way: the client's first to the component, the
	 * component's first to the client (from its own address) */
	CHECK(take_message(&h, 1, up, sizeof up));
	CHECK(strstr(up, "to='" COMP_NAME "' type='chat'") && strstr(up, "<body>lg1 0 "));
	CHECK(take_message(&h, 0, down, sizeof down));
	CHECK(strstr(down, "to='user7@" DOMAIN "' from='" COMP_NAME "' type='chat'") &&
	      strstr(down, "<body>lg1 0 "));
	CHECK(counter(&h, LG_C_SENT) == 2 && counter(&h, LG_C_COMP_SENT) == 1);

	/* each delivery lets its sender send the next */
	relay(&h, 0, up, "user7@" DOMAIN "/r1", COMP_NAME);
	CHECK(take_message(&h, 1, up, sizeof up) && strstr(up, "<body>lg1 1 "));
	CHECK(counter(&h, LG_C_COMP_RECEIVED) == 1 && counter(&h, LG_C_RECEIVED) == 1);
	relay(&h, 1, down, COMP_NAME, "user7@" DOMAIN "/r1");
	CHECK(take_message(&h, 0, down, sizeof down) && strstr(down, "<body>lg1 1 "));
	CHECK(counter(&h, LG_C_RECEIVED) == 2 && counter(&h, LG_C_COMP_RECEIVED) == 1);
	CHECK(counter(&h, LG_C_OUT_OF_ORDER) == 0 && h.t->msg_hist->count == 2);

	/* at the component, a sender that is none of the clients is counted */
	relay(&h, 0, up, "stranger@" DOMAIN "/x", COMP_NAME);
	relay(&h, 0, up, "user8@" DOMAIN "/x", COMP_NAME); /* outside --accounts */
	for (int turn = 0; turn < 200 && counter(&h, LG_C_MSG_ERRORS) < 2; turn++)
		lg_thread_poll(h.t, 1);
	CHECK(counter(&h, LG_C_MSG_ERRORS) == 2 && counter(&h, LG_C_RECEIVED) == 2);

	/* a ping to the component is answered from its address */
	say(&h, 0, "<iq type='get' id='p1' from='" DOMAIN "' to='" COMP_NAME "'>"
		   "<ping xmlns='urn:xmpp:ping'/></iq>");
	CHECK(expect(&h, 0, "<iq type='result' id='p1' to='" DOMAIN "' from='" COMP_NAME "'/>"));

	set_phase(&h, LG_PHASE_DRAIN);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(close_stream(&h, 0) && close_stream(&h, 1));
	CHECK(run_until_stopped(&h));
	CHECK(counter(&h, LG_C_ERRORS) == 0);
	harness_free(&h);

	/* a refused handshake is an authentication failure */
	component_harness(&h, "wrong");
	CHECK(harness_start(&h, "component"));
	CHECK(accept_client(&h, 0));
	CHECK(expect(&h, 0, "to='" COMP_NAME "'>"));
	say(&h, 0, COMP_HEAD);
	CHECK(expect(&h, 0, "</handshake>"));
	say(&h, 0, "<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
		   "</stream:error></stream:stream>");
	CHECK(wait_failed(&h, 1) && errors_of(&h, LG_ERR_AUTH) == 1);
	set_phase(&h, LG_PHASE_STOP);
	CHECK(run_until_stopped(&h));
	harness_free(&h);
}

int main(void)
{
	RUN(test_pattern);
	RUN(test_range);
	RUN(test_escape);
	RUN(test_body);
	RUN(test_hist);
	RUN(test_xml_features);
	RUN(test_xml_restart);
	RUN(test_xml_stanzas);
	RUN(test_xml_component);
	RUN(test_xml_rejects);
	RUN(test_xml_splitter);
	RUN(test_engine_plain_idle);
	RUN(test_engine_scram_login);
	RUN(test_engine_key_cache);
	RUN(test_keys_parse);
	RUN(test_engine_scram_keys);
	RUN(test_engine_plus_over_tls);
	RUN(test_engine_bad_server_proof);
	RUN(test_engine_failures);
	RUN(test_engine_chat_pair);
	RUN(test_engine_component);
	RUN(test_engine_connect_no_close_wait);
	RUN(test_engine_login_warmup);
	return check_exit();
}
