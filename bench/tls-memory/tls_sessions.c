/*
 * tls_sessions: what an idle TLS server session of xmppd costs in heap.
 *
 * Makes N server sessions with workers/tls.c exactly as a worker does
 * (tls_ctx_load, tls_conn_new, tls_conn_feed, tls_conn_handshake,
 * tls_conn_trim, tls_conn_read/write), each against a wolfSSL client in the
 * same process over in-memory pipes. Each pair does a TLS 1.3 (or 1.2)
 * handshake with X25519 and then the record exchange of an XMPP login
 * (stream headers, features, SASL, bind, presence: small records both ways),
 * as xmpp-loadgen and real clients do. Then every client is freed and the
 * server sessions sit idle.
 *
 * Every allocation goes through wolfSSL's allocator (workers/tls.c makes sure
 * of that), so a counting hook set with wolfSSL_SetAllocators() sees the
 * whole footprint. Allocations made while a server-side call runs are
 * counted as the server's, the rest as the client's. Printed at the end:
 * live server bytes per idle session (as requested and as glibc rounds
 * them), and the same split by allocation size, so each block can be matched
 * with wolfSSL's structures.
 *
 * Under valgrind --tool=massif the program also takes a detailed massif
 * snapshot of the idle state (the clients already freed), which gives the
 * call site of every live block: link against libwolfssl.a, whose symbol
 * table names wolfSSL's internal functions (Debian's .so is stripped).
 *
 * Usage: tls_sessions [-n N] [-2] [-c CIPHERS] [-s SNAPSHOT_FILE]
 *   -2   offer TLS 1.2 only from the client
 *   -c   the client's cipher list (default: wolfSSL's default order)
 * bench/tls-memory/run.sh builds and runs it.
 */
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <valgrind/valgrind.h>
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/memory.h>

#include "workers/tls.h"

/* ---- counting allocator -------------------------------------------------- */

/* Each block carries a 16-byte header: the requested size and which side
 * allocated it, so frees and reallocs are attributed to the same side. */
struct hdr {
	uint32_t size;
	uint32_t server;
	uint64_t pad;
};

#define SIZE_CLASSES 64
static bool on_server;              /* a server-side call is running */
static int64_t live[2], usable[2];  /* [server] bytes requested / as glibc keeps them */
static int64_t live_blocks[2];
/* live server blocks by requested size: the size identifies the structure */
static struct { uint32_t size; int64_t count; } by_size[SIZE_CLASSES];

static void by_size_add(uint32_t size, int delta)
{
	for (int i = 0; i < SIZE_CLASSES; i++) {
		if (by_size[i].size == size || by_size[i].count == 0) {
			if (by_size[i].count == 0)
				by_size[i].size = size;
			by_size[i].count += delta;
			return;
		}
	}
}

/* Live server blocks of at least LARGE bytes, for the page census. */
#define LARGE 4096
static void **large;
static size_t nlarge, large_cap;

static void large_track(void *p, uint32_t size, int sign)
{
	if (size < LARGE)
		return;
	if (sign > 0) {
		if (nlarge == large_cap) {
			size_t cap = large_cap ? 2 * large_cap : 1024;
			void **l = realloc(large, cap * sizeof *l);
			if (!l)
				abort();
			large = l;
			large_cap = cap;
		}
		large[nlarge++] = p;
		return;
	}
	for (size_t i = nlarge; i-- > 0;) {
		if (large[i] == p) {
			large[i] = large[--nlarge];
			return;
		}
	}
}

static void account(struct hdr *h, int sign)
{
	int s = (int)h->server;

	live[s] += sign * (int64_t)h->size;
	usable[s] += sign * (int64_t)(malloc_usable_size(h) + sizeof(size_t));
	live_blocks[s] += sign;
	if (s) {
		by_size_add(h->size, sign);
		large_track(h, h->size, sign);
	}
}

/* Pages wholly inside the large server blocks: how many hold only zeros,
 * and how many are resident (mincore), summed over all blocks. */
static void page_census(int64_t *inner, int64_t *zero, int64_t *resident)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	*inner = *zero = *resident = 0;
	for (size_t i = 0; i < nlarge; i++) {
		struct hdr *h = large[i];
		uintptr_t lo = ((uintptr_t)(h + 1) + page - 1) & ~(uintptr_t)(page - 1);
		uintptr_t hi = ((uintptr_t)(h + 1) + h->size) & ~(uintptr_t)(page - 1);

		for (uintptr_t a = lo; a < hi; a += page) {
			unsigned char in_core = 0;
			const uint64_t *w = (const uint64_t *)a;
			size_t k = 0;

			(*inner)++;
			/* mincore first: reading the page would fault it back in */
			if (mincore((void *)a, page, &in_core) == 0 && (in_core & 1))
				(*resident)++;
			else
				continue; /* not resident: it reads as zeros */
			while (k < page / 8 && w[k] == 0)
				k++;
			if (k == page / 8)
				(*zero)++;
		}
	}
}

static void *count_malloc(size_t size)
{
	struct hdr *h = malloc(sizeof *h + size);

	if (!h)
		return NULL;
	h->size = (uint32_t)size;
	h->server = on_server;
	account(h, 1);
	return h + 1;
}

static void count_free(void *p)
{
	struct hdr *h;

	if (!p)
		return;
	h = (struct hdr *)p - 1;
	account(h, -1);
	free(h);
}

static void *count_realloc(void *p, size_t size)
{
	struct hdr *h, *n;

	if (!p)
		return count_malloc(size);
	h = (struct hdr *)p - 1;
	account(h, -1);
	n = realloc(h, sizeof *n + size);
	if (!n) {
		account(h, 1);
		return NULL;
	}
	n->size = (uint32_t)size;
	account(n, 1);
	return n + 1;
}

/* ---- in-memory pipes ------------------------------------------------------ */

struct pipe {
	uint8_t *data;
	size_t len, cap, off;
};

static int pipe_put(struct pipe *p, const void *data, size_t len)
{
	if (p->len + len > p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 4096;
		while (cap < p->len + len)
			cap *= 2;
		uint8_t *d = realloc(p->data, cap); /* not wolfSSL's: not counted */
		if (!d)
			return -1;
		p->data = d;
		p->cap = cap;
	}
	memcpy(p->data + p->len, data, len);
	p->len += len;
	return 0;
}

static void pipe_free(struct pipe *p)
{
	free(p->data);
	memset(p, 0, sizeof *p);
}

struct pair {
	struct tls_conn *server;
	WOLFSSL *client;
	struct pipe to_client, to_server;
};

static int server_out(void *arg, const void *data, size_t len)
{
	struct pair *p = arg;

	return pipe_put(&p->to_client, data, len);
}

static int client_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct pipe *in = &((struct pair *)arg)->to_client;
	size_t n = in->len - in->off;

	(void)ssl;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, in->data + in->off, n);
	in->off += n;
	if (in->off == in->len)
		in->off = in->len = 0;
	return (int)n;
}

static int client_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	(void)ssl;
	return pipe_put(&((struct pair *)arg)->to_server, buf, (size_t)sz) < 0
		       ? WOLFSSL_CBIO_ERR_GENERAL : sz;
}

/* Hand what the client wrote to the server, as io_uring would. */
static int deliver_to_server(struct pair *p)
{
	int r = 0;

	if (p->to_server.len) {
		on_server = true;
		r = tls_conn_feed(p->server, p->to_server.data, p->to_server.len);
		on_server = false;
		p->to_server.len = 0;
	}
	return r;
}

static int handshake(struct pair *p)
{
	for (int turn = 0; turn < 20; turn++) {
		int cr = wolfSSL_connect(p->client);
		if (cr != WOLFSSL_SUCCESS &&
		    wolfSSL_get_error(p->client, cr) != WOLFSSL_ERROR_WANT_READ)
			return -1;
		if (deliver_to_server(p) < 0)
			return -1;
		on_server = true;
		enum tls_status st = tls_conn_handshake(p->server);
		if (st == TLS_OK)
			tls_conn_trim(p->server); /* as c2s_tls_ready() does */
		on_server = false;
		if (st == TLS_ERROR || st == TLS_CLOSED)
			return -1;
		if (cr == WOLFSSL_SUCCESS && st == TLS_OK)
			return 0;
	}
	return -1;
}

/* The client says MSG; the server reads it all and answers REPLY. */
static int exchange(struct pair *p, const char *msg, const char *reply)
{
	char buf[4096];
	size_t want = strlen(msg), got = 0;

	if (wolfSSL_write(p->client, msg, (int)want) != (int)want || deliver_to_server(p) < 0)
		return -1;
	on_server = true;
	while (got < want) {
		enum tls_status st;
		long n = tls_conn_read(p->server, buf, sizeof buf, &st);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	int w = got == want && reply ? tls_conn_write(p->server, reply, strlen(reply)) : 0;
	on_server = false;
	if (got != want || w < 0)
		return -1;
	for (size_t left = reply ? strlen(reply) : 0; left > 0;) {
		int n = wolfSSL_read(p->client, buf, sizeof buf);
		if (n <= 0)
			return -1;
		left -= (size_t)n < left ? (size_t)n : left;
	}
	return 0;
}

/* The records of an XMPP login after STARTTLS, sizes as xmppd sends them. */
static int xmpp_login(struct pair *p)
{
	static const char features1[] =
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
		"'http://etherx.jabber.org/streams' id='0123456789abcdef' from='localhost' "
		"version='1.0' xml:lang='en'><stream:features><mechanisms xmlns='urn:ietf:params:"
		"xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-256-PLUS</mechanism><mechanism>SCRAM-SHA-"
		"256</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN</mechanism>"
		"</mechanisms><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding "
		"type='tls-exporter'/></sasl-channel-binding></stream:features>";
	static const char open[] =
		"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
		"'http://etherx.jabber.org/streams' to='localhost' version='1.0'>";

	return exchange(p, open, features1) ||
	       exchange(p, "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-"
			   "256'>biwsbj11c2VyMSxyPWZ5a28rZDJsYmJGZ09OUnY5cWt4ZGF3TA==</auth>",
			"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1meWtvK2QybGJiRmdP"
			"TlJ2OXFreGRhd0wzcmZjTkhZSlkxWlZ2V1ZzN2oscz1RU1hDUitRNnNlazhiZjkyLGk9NDA5Ng"
			"==</challenge>") ||
	       exchange(p, "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>Yz1iaXdzLHI9Znlr"
			   "bytkMmxiYkZnT05Sdjlxa3hkYXdMM3JmY05IWUpZMVpWdldWczdqLHA9djBYOHYzQnoyVDBD"
			   "SkdiSlF5RjBYK0hJNFRzPQ==</response>",
			"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dj1ybUY5cHFWOFM3c3VBb1pX"
			"amE0ZEpSa0ZzS1E9</success>") ||
	       exchange(p, open,
			"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream="
			"'http://etherx.jabber.org/streams' id='fedcba9876543210' from='localhost' "
			"version='1.0'><stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-"
			"bind'/></stream:features>") ||
	       exchange(p, "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-"
			   "bind'/></iq>",
			"<iq type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
			"<jid>user1@localhost/0123456789abcdef</jid></bind></iq>") ||
	       exchange(p, "<presence/>", NULL);
}

/* ---- main ---------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr, "usage: tls_sessions [-n N] [-2] [-c CIPHERS] [-s SNAPSHOT_FILE]\n");
	exit(2);
}

static int by_bytes_desc(const void *a, const void *b)
{
	const typeof(by_size[0]) *x = a, *y = b;
	int64_t bx = (int64_t)x->size * x->count, by = (int64_t)y->size * y->count;

	return bx < by ? 1 : bx > by ? -1 : 0;
}

int main(int argc, char **argv)
{
	const char *ciphers = NULL, *snapshot = NULL;
	bool tls12 = false;
	long n = 1000;
	char err[256], dir[] = "/tmp/tls-sessions.XXXXXX", key[64], cert[64];
	int opt;

	while ((opt = getopt(argc, argv, "n:2c:s:")) != -1) {
		switch (opt) {
		case 'n': n = strtol(optarg, NULL, 10); break;
		case '2': tls12 = true; break;
		case 'c': ciphers = optarg; break;
		case 's': snapshot = optarg; break;
		default: usage();
		}
	}
	if (n <= 0 || optind != argc)
		usage();
	if (wolfSSL_SetAllocators(count_malloc, count_free, count_realloc) != 0 ||
	    tls_global_init() < 0 || !mkdtemp(dir))
		return 1;
	snprintf(key, sizeof key, "%s/key.pem", dir);
	snprintf(cert, sizeof cert, "%s/cert.pem", dir);
	/* an ECDSA P-256 certificate, as xmppd makes at first start */
	if (tls_make_self_signed(key, cert, "localhost", NULL, err, sizeof err) < 0) {
		fprintf(stderr, "tls_sessions: %s\n", err);
		return 1;
	}
	struct tls_ctx *sctx = tls_ctx_load(key, cert, NULL, err, sizeof err);
	unlink(key);
	unlink(cert);
	rmdir(dir);
	if (!sctx) {
		fprintf(stderr, "tls_sessions: %s\n", err);
		return 1;
	}
	WOLFSSL_CTX *cctx = wolfSSL_CTX_new(tls12 ? wolfTLSv1_2_client_method()
						  : wolfTLS_client_method());
	int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1 };
	if (!cctx || wolfSSL_CTX_set_groups(cctx, groups, 2) != WOLFSSL_SUCCESS ||
	    (ciphers && wolfSSL_CTX_set_cipher_list(cctx, ciphers) != WOLFSSL_SUCCESS))
		return 1;
	wolfSSL_CTX_set_verify(cctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_SetIORecv(cctx, client_recv);
	wolfSSL_CTX_SetIOSend(cctx, client_send);

	struct pair *pairs = calloc((size_t)n, sizeof *pairs);
	if (!pairs)
		return 1;
	int64_t base = live[1], base_usable = usable[1], base_blocks = live_blocks[1];
	struct mallinfo2 m0 = mallinfo2();
	for (long i = 0; i < n; i++) {
		struct pair *p = &pairs[i];
		on_server = true;
		p->server = tls_conn_new(sctx, server_out, p);
		on_server = false;
		p->client = wolfSSL_new(cctx);
		if (!p->server || !p->client)
			return 1;
		wolfSSL_SetIOReadCtx(p->client, p);
		wolfSSL_SetIOWriteCtx(p->client, p);
		wolfSSL_UseSNI(p->client, WOLFSSL_SNI_HOST_NAME, "localhost", 9);
		if (handshake(p) < 0 || xmpp_login(p) < 0) {
			fprintf(stderr, "tls_sessions: pair %ld failed: %s\n", i,
				tls_conn_error(p->server));
			return 1;
		}
		if (i == 0)
			fprintf(stderr, "tls_sessions: %s %s\n", tls_conn_version(p->server),
				tls_conn_cipher(p->server));
	}
	/* the clients go: what is left is the idle server sessions */
	for (long i = 0; i < n; i++) {
		wolfSSL_free(pairs[i].client);
		pairs[i].client = NULL;
		pipe_free(&pairs[i].to_client);
		pipe_free(&pairs[i].to_server);
	}
	struct mallinfo2 m1 = mallinfo2();
	if (snapshot) {
		char cmd[512];
		snprintf(cmd, sizeof cmd, "detailed_snapshot %s", snapshot);
		VALGRIND_MONITOR_COMMAND(cmd);
	}

	int64_t inner, zero, resident;
	page_census(&inner, &zero, &resident);
	long page = sysconf(_SC_PAGESIZE);
	printf("sessions=%ld wolfssl_bytes=%.0f malloc_bytes=%.0f blocks=%.1f "
	       "heap_in_use=%.0f\n", n, (double)(live[1] - base) / (double)n,
	       (double)(usable[1] - base_usable) / (double)n,
	       (double)(live_blocks[1] - base_blocks) / (double)n,
	       ((double)m1.uordblks - (double)m0.uordblks) / (double)n);
	printf("pages wholly inside blocks of %d bytes or more, bytes per session: %.0f, "
	       "resident %.0f, of which all zeros %.0f; not resident (released) %.0f\n",
	       LARGE, (double)(inner * page) / (double)n, (double)(resident * page) / (double)n,
	       (double)(zero * page) / (double)n,
	       (double)((inner - resident) * page) / (double)n);
	printf("wolfssl_bytes less the released pages: %.0f\n",
	       (double)(live[1] - base - (inner - resident) * page) / (double)n);
	qsort(by_size, SIZE_CLASSES, sizeof by_size[0], by_bytes_desc);
	printf("live server blocks per session, by requested size (the context's included):\n");
	for (int i = 0; i < SIZE_CLASSES; i++)
		if (by_size[i].count > 0 && by_size[i].count >= n / 2)
			printf("  %6u bytes x %.2f\n", by_size[i].size,
			       (double)by_size[i].count / (double)n);

	for (long i = 0; i < n; i++)
		tls_conn_free(pairs[i].server);
	free(pairs);
	wolfSSL_CTX_free(cctx);
	tls_ctx_free(sctx);
	wolfSSL_Cleanup();
	return 0;
}
