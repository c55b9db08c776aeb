/*
 * test_tls: the TLS module against a real wolfSSL client, in memory.
 *
 * The client side is plain wolfSSL with its own custom I/O: what the server
 * module hands to its OUTPUT function lands in one buffer the client reads
 * from, and what the client sends lands in another that the test feeds to
 * tls_conn_feed(). Certificates are made by tls_make_self_signed() in a
 * temporary directory; one fixed certificate made with the openssl CLI
 * checks the parsing of dates, names and the fingerprint.
 *
 * wolfSSL's allocations go through a counting allocator, which is how the
 * idle-session memory figures are measured.
 */
#include "workers/tls.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/unit/check.h"

/* ---- counting allocator for wolfSSL ---- */

#define HDR 16   /* keeps the caller's pointer 16-byte aligned */
#define BIG_BLOCK 16384
static size_t heap_live;
/* The last block of at least BIG_BLOCK bytes handed out: wolfSSL's session
 * object is the only one a server connection makes. */
static unsigned char *last_big;
static size_t last_big_size;

static void *count_malloc(size_t n)
{
	unsigned char *p = malloc(n + HDR);

	if (!p)
		return NULL;
	memcpy(p, &n, sizeof n);
	heap_live += n;
	if (n >= BIG_BLOCK) {
		last_big = p + HDR;
		last_big_size = n;
	}
	return p + HDR;
}

static void count_free(void *ptr)
{
	unsigned char *p = ptr;
	size_t n;

	if (!p)
		return;
	p -= HDR;
	memcpy(&n, p, sizeof n);
	heap_live -= n;
	free(p);
}

static void *count_realloc(void *ptr, size_t n)
{
	unsigned char *p = ptr, *q;
	size_t old = 0;

	if (!p)
		return count_malloc(n);
	p -= HDR;
	memcpy(&old, p, sizeof old);
	q = realloc(p, n + HDR);
	if (!q)
		return NULL;
	memcpy(q, &n, sizeof n);
	heap_live = heap_live - old + n;
	return q + HDR;
}

/* ---- fixtures ---- */

static char dir[64];
static char key_a[128], cert_a[128], key_b[128], cert_b[128];

static void path_in_dir(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", dir, name);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* openssl ca -selfsign, P-256: notBefore UTCTime 240229120000Z (a leap
 * day), notAfter GeneralizedTime 20600101000000Z, SANs DNS, IP, email, DNS. */
static const char fixture_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBszCCAVqgAwIBAgIBATAKBggqhkjOPQQDAjApMRgwFgYDVQQDDA9maXh0dXJl\n"
	"LmV4YW1wbGUxDTALBgNVBAoMBFRlc3QwIBcNMjQwMjI5MTIwMDAwWhgPMjA2MDAx\n"
	"MDEwMDAwMDBaMCkxGDAWBgNVBAMMD2ZpeHR1cmUuZXhhbXBsZTENMAsGA1UECgwE\n"
	"VGVzdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABL0b2AP5ZC1+lAqwZ3b76lem\n"
	"M85SDv91W1FRQVL7oSLg2dJSfV/E4elZ4FIHx4Omg8RFTEMTDqtH/wTqoDHTYnqj\n"
	"cTBvMEMGA1UdEQQ8MDqCD2ZpeHR1cmUuZXhhbXBsZYcEfwAAAYELYUBiLmV4YW1w\n"
	"bGWCFHhtcHAuZml4dHVyZS5leGFtcGxlMAkGA1UdEwQCMAAwHQYDVR0OBBYEFFTA\n"
	"8alOo2MkVwWlFAfE/2FyfKvTMAoGCCqGSM49BAMCA0cAMEQCIBk7aHB/gMFAIjL4\n"
	"lyZ45I/Mh6WjK+Jp40b5g0mg+HYkAiBeTTY8XakOs01o5RV62wlq/BV4sPb6aqb3\n"
	"Y8uTk17gwQ==\n"
	"-----END CERTIFICATE-----\n";

/* The key of fixture_pem, PKCS#8 as openssl writes it. */
static const char fixture_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgp+eFV4shciezOvIn\n"
	"B3LT+euV5c4reLigxlnFeaoDul6hRANCAAS9G9gD+WQtfpQKsGd2++pXpjPOUg7/\n"
	"dVtRUUFS+6Ei4NnSUn1fxOHpWeBSB8eDpoPERUxDEw6rR/8E6qAx02J6\n"
	"-----END PRIVATE KEY-----\n";

/* An RSA-2048 pair (openssl req -x509, SAN DNS:rsa.example). */
static const char rsa_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDoM1vVtBmOUeGT\n"
	"AGsztB1wVe5h2Uz02dgIYH3hJuhiJtD2Ql61AYky9UFtwdePcAjEJldh4NslaXDl\n"
	"FvuDqynmmb4pydp/QkZzOaKdMzdOFPhV++MvKUSEhXqgpM3Kbjr4IJBRHfcKJzAX\n"
	"wD22HkKhZF11n1YMp85bQhBlF25H8Pw3XkaN0x5JVKEfF2tETx701wUyMFg/MAmL\n"
	"/P3AIPKL6/Ra/CiOaPZUtGn5f2NIfcG+3s2TSQODM93iCeHDi0EQFCtMyAQJGghk\n"
	"jylUfTE0ENWIJJX2FZv+h+J93YKPCwuEBKLIFKc+F9hyK58E//aqj55zzLO7HL9t\n"
	"bbO8vKYfAgMBAAECggEAIkb2nxDzltVSidtNd/f2Qo+E3a/w0tJXuEDaREL0mgyl\n"
	"2zyH84ty//FBg9zSH+wHd0E7tAi4AQlUL5VZcqHxUQfQESYpmZCkirzu2urlFqM0\n"
	"16iT7HHYmgGETTOW53OnQ9q2wyq7vaV0TYVE9t33sxB4VXU8hCi/ZyxU9D9lubu6\n"
	"1Dmja9MK49a2IuKaR3hGplPEkFnZ2Rkx9/GoKaaKxyDbmPiyk4yNjECRMnY+QqaF\n"
	"XY6E0NPjI0QC2JXMYANBa4mszHZTI9B8aJE4b2gW/NYs80mOgzVladsH/lF6eaYx\n"
	"84+W2xwzTHhXdv6S1DhxZo58oZlzJaJKQpaImG/YiQKBgQD7DRpMT427SKYbJzIM\n"
	"rt6kwYfqWoesJ0qVkh9Dq8PQ+Klydw5qjZdpRcziMKc8fJRuDBZ8tJ2I+l4ASzHB\n"
	"E5COQ0T2vjjFW7AFovmI+AHek8R1PRVMla9LlyQJ9TE7DtjdFdVL37p6mWQRUc8X\n"
	"Gcih29HBlDIsBVZbS5aNTWh6OQKBgQDsxyELca+z3yBH+utik9ZFV1n7u+c4tcoy\n"
	"M+fb1gdb00eEDSyPYpOTd45N34lYB9bALKqXCTo9BWlOGablv/VeRltgDj7QHkt0\n"
	"jToz1wzFKnmaqvfz+peYVREogQNec9xMauOwVA/BHQFCH3lWuC2kqvgL1wqPkR1O\n"
	"Xvi2IkMDFwKBgQCtByXV7Iqhxvt9AXG0Xh3jbeNwOT8C/v2fwts7d7n5YDjhRH8y\n"
	"Hy55Bvuj9aZ9wNtIUZp6Dr34954sE6dSDFr4QhLZANf95iiWafIUXeJj9nJT32q7\n"
	"ovrzXVMgbdalfqEnF3Iv3h4Xe3sFmN3jbQjjza5u/eXqgy82sw0rjGtyuQKBgQDP\n"
	"FWGbRrTq1gy/p37S2oWeY8V5W1/gw22x9p+kL06ESwbTQUplpUt4wCmfhg/zA/gY\n"
	"X3hbXGCpGeB9xAWqDvckmtgz7IGXN8e6igILcNvkXT+5vCncIqEPQ+cby6oMo7xa\n"
	"wWmdwAd/WETPdgODitWwnS8P++VqpvpAnuNbOB/vxQKBgFYIT01/BJ867NYf5eCD\n"
	"LwoVRK4rzqQee5cn00SFh03xtPuhu58POngBPA9GrmovKJc/S64Q1zZwQr23vuco\n"
	"OsyqvMi88GfkenlJQy39/2CbgAUOzBdHZRMj3FqNgUtL1eWZfnySAJv6KZn1BbQh\n"
	"cgrnwf+VOczRr8Px5C+8IFhL\n"
	"-----END PRIVATE KEY-----\n";

static const char rsa_cert_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIDJzCCAg+gAwIBAgIUa26kPIm8f/mZVxhw/nPBuv5+myYwDQYJKoZIhvcNAQEL\n"
	"BQAwFjEUMBIGA1UEAwwLcnNhLmV4YW1wbGUwIBcNMjYxMTIxMjM1NzQxWhgPMjEy\n"
	"NjEwMjgyMzU3NDFaMBYxFDASBgNVBAMMC3JzYS5leGFtcGxlMIIBIjANBgkqhkiG\n"
	"9w0BAQEFAAOCAQ8AMIIBCgKCAQEA6DNb1bQZjlHhkwBrM7QdcFXuYdlM9NnYCGB9\n"
	"4SboYibQ9kJetQGJMvVBbcHXj3AIxCZXYeDbJWlw5Rb7g6sp5pm+Kcnaf0JGczmi\n"
	"nTM3ThT4VfvjLylEhIV6oKTNym46+CCQUR33CicwF8A9th5CoWRddZ9WDKfOW0IQ\n"
	"ZRduR/D8N15GjdMeSVShHxdrRE8e9NcFMjBYPzAJi/z9wCDyi+v0Wvwojmj2VLRp\n"
	"+X9jSH3Bvt7Nk0kDgzPd4gnhw4tBEBQrTMgECRoIZI8pVH0xNBDViCSV9hWb/ofi\n"
	"fd2CjwsLhASiyBSnPhfYciufBP/2qo+ec8yzuxy/bW2zvLymHwIDAQABo2swaTAd\n"
	"BgNVHQ4EFgQUH4g0XcOXyYveoTqeg9I9Jc7Kg00wHwYDVR0jBBgwFoAUH4g0XcOX\n"
	"yYveoTqeg9I9Jc7Kg00wDwYDVR0TAQH/BAUwAwEB/zAWBgNVHREEDzANggtyc2Eu\n"
	"ZXhhbXBsZTANBgkqhkiG9w0BAQsFAAOCAQEAuuiu8mOEmjNmpP3b71sZ41abHk2Q\n"
	"qI6laMxaPTBfMy6CB9olGmxUl8srv3Alb/LC/SP8PBHPQMg6zd8Ov48f6QNxl9St\n"
	"vbn5YOrFy4MD43rw4DPtBARdMkpH0NsyiBx7W2x4bl5EMp6/XKXCqRHuWNuUsBD5\n"
	"1su0tplNXGcTunlHLhFaIy5n1N0v5E0kXvwT9AbtKy5Ex0klg6K0HWxOEwNRWIGz\n"
	"32LkekFFtUQIHU3KB5okJ2IFq4turwhDBeixrqUy7wkpLUEyQa93SH12zbYqG1pt\n"
	"wI7O9PUbRMifeIBuU/Rl+3l8YHLYyZEejRaSuoKWMNO5GXLqdHt/asICrw==\n"
	"-----END CERTIFICATE-----\n";

/* ---- an in-memory client/server pair ---- */

struct wire {
	uint8_t *buf;
	size_t len, off;
};

struct pair {
	struct tls_conn *srv;
	WOLFSSL_CTX *cctx;
	WOLFSSL *cli;
	struct wire to_server, to_client;
	bool refuse_output;
	bool client_done;
};

static int wire_push(struct wire *w, const void *data, size_t len)
{
	uint8_t *b = realloc(w->buf, w->len + len);

	if (!b)
		return -1;
	memcpy(b + w->len, data, len);
	w->buf = b;
	w->len += len;
	return 0;
}

static size_t wire_pending(const struct wire *w)
{
	return w->len - w->off;
}

static int server_output(void *arg, const void *data, size_t len)
{
	struct pair *p = arg;

	if (p->refuse_output)
		return -1;
	return wire_push(&p->to_client, data, len);
}

static int client_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct pair *p = arg;

	(void)ssl;
	return wire_push(&p->to_server, buf, (size_t)sz) < 0 ? WOLFSSL_CBIO_ERR_GENERAL : sz;
}

static int client_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct pair *p = arg;
	size_t n = wire_pending(&p->to_client);

	(void)ssl;
	if (n == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	if (n > (size_t)sz)
		n = (size_t)sz;
	memcpy(buf, p->to_client.buf + p->to_client.off, n);
	p->to_client.off += n;
	return (int)n;
}

enum client_kind {
	CLIENT_TLS13,
	CLIENT_TLS13_P256_FIRST,
	CLIENT_TLS12,
	CLIENT_TLS11,
	CLIENT_TLS12_CBC,
};

/* Client trusting CERT_PATH (the self-signed certificate, pinned as a
 * trusted peer) and checking the server name DOMAIN; CERT_PATH NULL means
 * a client that verifies against nothing and so rejects the server. */
static int pair_open(struct pair *p, struct tls_ctx *ctx, enum client_kind kind,
		     const char *cert_path, const char *domain)
{
	WOLFSSL_METHOD *m;

	memset(p, 0, sizeof *p);
	switch (kind) {
	case CLIENT_TLS13:
	case CLIENT_TLS13_P256_FIRST:
		m = wolfTLSv1_3_client_method();
		break;
	case CLIENT_TLS11:
		m = wolfTLSv1_1_client_method();
		break;
	default:
		m = wolfTLSv1_2_client_method();
		break;
	}
	p->cctx = wolfSSL_CTX_new(m);
	if (!p->cctx)
		return -1;
	if (kind == CLIENT_TLS11)
		wolfSSL_CTX_SetMinVersion(p->cctx, WOLFSSL_TLSV1_1);
	if (kind == CLIENT_TLS12_CBC &&
	    wolfSSL_CTX_set_cipher_list(p->cctx, "ECDHE-ECDSA-AES128-SHA256") != WOLFSSL_SUCCESS)
		return -1;
	wolfSSL_CTX_set_verify(p->cctx, WOLFSSL_VERIFY_PEER, NULL);
	if (cert_path && wolfSSL_CTX_trust_peer_cert(p->cctx, cert_path, WOLFSSL_FILETYPE_PEM) !=
				 WOLFSSL_SUCCESS)
		return -1;
	wolfSSL_CTX_SetIORecv(p->cctx, client_recv);
	wolfSSL_CTX_SetIOSend(p->cctx, client_send);
	p->cli = wolfSSL_new(p->cctx);
	if (!p->cli)
		return -1;
	wolfSSL_SetIOReadCtx(p->cli, p);
	wolfSSL_SetIOWriteCtx(p->cli, p);
	if (domain && wolfSSL_check_domain_name(p->cli, domain) != WOLFSSL_SUCCESS)
		return -1;
	if (kind == CLIENT_TLS13_P256_FIRST) {
		/* Both key shares offered, P-256 first: the server's order wins. */
		int groups[] = { WOLFSSL_ECC_SECP256R1, WOLFSSL_ECC_X25519 };

		if (wolfSSL_set_groups(p->cli, groups, 2) != WOLFSSL_SUCCESS ||
		    wolfSSL_UseKeyShare(p->cli, WOLFSSL_ECC_SECP256R1) != WOLFSSL_SUCCESS ||
		    wolfSSL_UseKeyShare(p->cli, WOLFSSL_ECC_X25519) != WOLFSSL_SUCCESS)
			return -1;
	}
	p->srv = tls_conn_new(ctx, server_output, p);
	return p->srv ? 0 : -1;
}

static void pair_close(struct pair *p)
{
	tls_conn_free(p->srv);
	wolfSSL_free(p->cli);
	wolfSSL_CTX_free(p->cctx);
	free(p->to_server.buf);
	free(p->to_client.buf);
	memset(p, 0, sizeof *p);
}

/* Hand the server what the client sent, CHUNK bytes per feed, driving the
 * handshake (or nothing, once it is done) after every feed. */
static enum tls_status feed_server(struct pair *p, size_t chunk)
{
	enum tls_status st = TLS_WANT_READ;

	while (wire_pending(&p->to_server)) {
		size_t n = wire_pending(&p->to_server);

		if (n > chunk)
			n = chunk;
		if (tls_conn_feed(p->srv, p->to_server.buf + p->to_server.off, n) < 0)
			return TLS_ERROR;
		p->to_server.off += n;
		if (!tls_conn_handshake_done(p->srv)) {
			st = tls_conn_handshake(p->srv);
			if (st == TLS_ERROR)
				return st;
		}
	}
	return tls_conn_handshake_done(p->srv) ? TLS_OK : st;
}

/* 0 when both sides finished the handshake, -1 when the server failed,
 * -2 when the client failed, -3 when nothing moves any more. */
static int pump_handshake(struct pair *p, size_t chunk)
{
	int round;

	for (round = 0; round < 50; round++) {
		size_t before = p->to_server.len + p->to_client.len;
		enum tls_status st;

		if (!p->client_done) {
			int r = wolfSSL_connect(p->cli);
			if (r == WOLFSSL_SUCCESS)
				p->client_done = true;
			else if (wolfSSL_get_error(p->cli, r) != WOLFSSL_ERROR_WANT_READ)
				return -2;
		}
		st = feed_server(p, chunk);
		if (st == TLS_ERROR)
			return -1;
		if (st == TLS_OK && p->client_done)
			return 0;
		if (p->to_server.len + p->to_client.len == before)
			return -3;
	}
	return -3;
}

/* Everything the server can decrypt from what the client sent. */
static long server_read_all(struct pair *p, char *buf, size_t cap, enum tls_status *st)
{
	long total = 0, n;

	if (feed_server(p, SIZE_MAX) == TLS_ERROR) {
		*st = TLS_ERROR;
		return 0;
	}
	while ((n = tls_conn_read(p->srv, buf + total, cap - (size_t)total, st)) > 0)
		total += n;
	return total;
}

static long client_read_all(struct pair *p, char *buf, size_t cap)
{
	long total = 0;
	int n;

	while ((size_t)total < cap &&
	       (n = wolfSSL_read(p->cli, buf + total, (int)(cap - (size_t)total))) > 0)
		total += n;
	return total;
}

static struct tls_ctx *load_a(void)
{
	char err[256] = "";

	return tls_ctx_load(key_a, cert_a, NULL, err, sizeof err);
}

/* Handshake, data both ways, exporter, close_notify. */
static void run_session(enum client_kind kind, const char *want_version)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	char buf[256];
	enum tls_status st;
	uint8_t ours[32], theirs[32];
	long n;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, kind, cert_a, "example.test") == 0);
	CHECK(!tls_conn_handshake_done(p.srv));
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK(tls_conn_handshake_done(p.srv));
	/* no NewSessionTicket (nor anything else) after the client's Finished */
	CHECK(wire_pending(&p.to_client) == 0);
	CHECK_STR(tls_conn_version(p.srv), want_version);
	CHECK_STR(wolfSSL_get_version(p.cli), want_version);
	CHECK(strstr(tls_conn_cipher(p.srv), "GCM") || strstr(tls_conn_cipher(p.srv), "CHACHA"));
	if (kind == CLIENT_TLS12)
		CHECK(strstr(tls_conn_cipher(p.srv), "ECDHE-ECDSA") != NULL);

	/* client -> server */
	CHECK(wolfSSL_write(p.cli, "<stream:stream>", 15) == 15);
	n = server_read_all(&p, buf, sizeof buf, &st);
	CHECK(n == 15 && memcmp(buf, "<stream:stream>", 15) == 0);
	CHECK(st == TLS_WANT_READ);

	/* server -> client */
	CHECK(tls_conn_write(p.srv, "<features/>", 11) == 0);
	n = client_read_all(&p, buf, sizeof buf);
	CHECK(n == 11 && memcmp(buf, "<features/>", 11) == 0);

	/* tls-exporter: both sides agree on TLS 1.3; refused on TLS 1.2 */
	if (kind == CLIENT_TLS13) {
		CHECK(tls_conn_exporter(p.srv, ours) == 0);
		CHECK(wolfSSL_export_keying_material(p.cli, theirs, 32, "EXPORTER-Channel-Binding",
						     24, NULL, 0, 0) == WOLFSSL_SUCCESS);
		CHECK(memcmp(ours, theirs, 32) == 0);
	} else {
		CHECK(tls_conn_exporter(p.srv, ours) == -1);
	}

	/* close_notify from the client, data before it still delivered */
	CHECK(wolfSSL_write(p.cli, "</stream:stream>", 16) == 16);
	wolfSSL_shutdown(p.cli);
	CHECK(feed_server(&p, SIZE_MAX) == TLS_OK);
	n = tls_conn_read(p.srv, buf, sizeof buf, &st);
	CHECK(n == 16 && memcmp(buf, "</stream:stream>", 16) == 0);
	CHECK(st == TLS_OK);
	CHECK(tls_conn_read(p.srv, buf, sizeof buf, &st) == 0);
	CHECK(st == TLS_CLOSED);
	CHECK(tls_conn_read(p.srv, buf, sizeof buf, &st) == 0 && st == TLS_CLOSED);

	/* and ours back: the client sees a clean close */
	tls_conn_shutdown(p.srv);
	CHECK(wolfSSL_read(p.cli, buf, sizeof buf) <= 0);
	CHECK(wolfSSL_get_error(p.cli, 0) == WOLFSSL_ERROR_ZERO_RETURN);
	pair_close(&p);
	tls_ctx_free(ctx);
}

/* ---- tests ---- */

enum { DER_UTC_TIME = 0x17 };

static void test_self_signed_files(void)
{
	struct tls_cert_info info;
	WOLFSSL_X509 *x509;
	struct stat st;
	time_t now = time(NULL);
	size_t i;

	CHECK(stat(key_a, &st) == 0 && (st.st_mode & 0777) == 0600);
	CHECK(stat(cert_a, &st) == 0 && (st.st_mode & 0777) == 0644);
	CHECK(tls_cert_file_info(cert_a, &info) == 0);
	CHECK_STR(info.subject_cn, "example.test");
	CHECK_STR(info.sans, "example.test,host1.example.test");
	CHECK(info.not_before <= now && info.not_before > now - 2 * 86400);
	CHECK(info.not_after > now + 3649L * 86400 && info.not_after < now + 3651L * 86400);
	CHECK(strlen(info.sha256_fp) == 95);
	/* RFC 5280: UTCTime for dates before 2050 */
	x509 = wolfSSL_X509_load_certificate_file(cert_a, WOLFSSL_FILETYPE_PEM);
	CHECK(x509 != NULL);
	if (x509) {
		CHECK(wolfSSL_X509_get_notBefore(x509)->type == DER_UTC_TIME);
		CHECK(wolfSSL_X509_get_notAfter(x509)->type == DER_UTC_TIME);
		wolfSSL_X509_free(x509);
	}
	for (i = 0; i < 95; i++)
		CHECK(i % 3 == 2 ? info.sha256_fp[i] == ':'
				 : strchr("0123456789ABCDEF", info.sha256_fp[i]) != NULL);
}

static void test_self_signed_same_names(void)
{
	char k[128], c[128], err[256] = "";
	struct tls_cert_info info;

	path_in_dir(k, sizeof k, "same.key");
	path_in_dir(c, sizeof c, "same.crt");
	CHECK(tls_make_self_signed(k, c, "Example.Test", "example.test", err, sizeof err) == 0);
	CHECK(tls_cert_file_info(c, &info) == 0);
	CHECK_STR(info.sans, "Example.Test");
	CHECK(tls_make_self_signed(k, c, "exa mple", "h", err, sizeof err) == -1);
	CHECK(strstr(err, "not a DNS name") != NULL);
}

static void test_self_signed_long_domain(void)
{
	char k[128], c[128], err[256] = "", domain[120];
	struct tls_cert_info info;

	memset(domain, 'a', sizeof domain);
	memcpy(domain + sizeof domain - 6, ".test", 6);   /* 119 bytes */
	path_in_dir(k, sizeof k, "long.key");
	path_in_dir(c, sizeof c, "long.crt");
	CHECK(tls_make_self_signed(k, c, domain, NULL, err, sizeof err) == 0);
	CHECK(tls_cert_file_info(c, &info) == 0);
	CHECK_STR(info.sans, domain);
	CHECK_STR(info.subject_cn, "");   /* too long for a common name */
}

static void test_self_signed_unwritable(void)
{
	char err[256] = "";

	CHECK(tls_make_self_signed("/nonexistent-dir/k.pem", "/nonexistent-dir/c.pem",
				   "example.test", "h", err, sizeof err) == -1);
	CHECK_STR(err, "cannot write /nonexistent-dir/k.pem: No such file or directory");
}

static void test_fixture_info(void)
{
	char path[128];
	struct tls_cert_info info;

	path_in_dir(path, sizeof path, "fixture.pem");
	write_text(path, fixture_pem);
	CHECK(tls_cert_file_info(path, &info) == 0);
	CHECK(info.not_before == 1709208000);   /* 2024-02-29T12:00:00Z */
	CHECK(info.not_after == 2840140800);    /* 2060-01-01T00:00:00Z */
	CHECK_STR(info.subject_cn, "fixture.example");
	CHECK_STR(info.sans, "fixture.example,xmpp.fixture.example");
	CHECK_STR(info.sha256_fp, "D0:85:82:EB:47:9A:09:D3:95:AA:EA:10:85:7A:8B:EB:"
				  "A8:62:87:A9:2D:89:6A:54:E5:84:19:44:86:38:42:46");
	CHECK(tls_cert_file_info(key_a, &info) == -EINVAL);
	path_in_dir(path, sizeof path, "missing.pem");
	CHECK(tls_cert_file_info(path, &info) == -ENOENT);
}

static void test_ctx_info(void)
{
	struct tls_cert_info from_file, from_ctx;
	struct tls_ctx *ctx = load_a();

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(tls_cert_file_info(cert_a, &from_file) == 0);
	CHECK(tls_ctx_cert_info(ctx, &from_ctx) == 0);
	CHECK_STR(from_ctx.sha256_fp, from_file.sha256_fp);
	CHECK_STR(from_ctx.sans, from_file.sans);
	CHECK(from_ctx.not_after == from_file.not_after);
	tls_ctx_free(ctx);
}

static void test_load_errors(void)
{
	char err[512], missing[128], garbage[128], want[512];

	path_in_dir(missing, sizeof missing, "nope.pem");
	path_in_dir(garbage, sizeof garbage, "garbage.pem");
	write_text(garbage, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
			    "-----END CERTIFICATE-----\n");

	CHECK(tls_ctx_load(missing, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "cannot read %s: No such file or directory", missing);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, missing, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "cannot read %s: No such file or directory", missing);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(garbage, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s: not a PEM private key", garbage);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(cert_a, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s: not a PEM private key", cert_a);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, garbage, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s: not a PEM certificate", garbage);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, key_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s: not a PEM certificate", key_a);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, cert_b, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "key %s does not match certificate %s", key_a, cert_b);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_b, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "key %s does not match certificate %s", key_b, cert_a);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, cert_a, garbage, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s: not a PEM certificate bundle", garbage);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, cert_a, missing, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "cannot read %s: No such file or directory", missing);
	CHECK_STR(err, want);

	CHECK(tls_ctx_load(key_a, dir, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "cannot read %s: Is a directory", dir);
	CHECK_STR(err, want);
}

/* Keys and certificates made elsewhere: PKCS#8 EC keys and RSA pairs load,
 * and mismatches across key types are caught. */
static void test_foreign_pairs(void)
{
	char fkey[128], fcert[128], rkey[128], rcert[128], err[512], want[512];
	struct tls_ctx *ctx;
	struct pair p;

	path_in_dir(fkey, sizeof fkey, "fixture.key");
	path_in_dir(fcert, sizeof fcert, "fixture.pem");
	path_in_dir(rkey, sizeof rkey, "rsa.key");
	path_in_dir(rcert, sizeof rcert, "rsa.crt");
	write_text(fkey, fixture_key_pem);
	write_text(fcert, fixture_pem);
	write_text(rkey, rsa_key_pem);
	write_text(rcert, rsa_cert_pem);

	ctx = tls_ctx_load(fkey, fcert, NULL, err, sizeof err);
	CHECK(ctx != NULL);
	tls_ctx_free(ctx);
	CHECK(tls_ctx_load(fkey, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "key %s does not match certificate %s", fkey, cert_a);
	CHECK_STR(err, want);
	CHECK(tls_ctx_load(rkey, cert_a, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "key %s does not match certificate %s", rkey, cert_a);
	CHECK_STR(err, want);
	CHECK(tls_ctx_load(key_a, rcert, NULL, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "key %s does not match certificate %s", key_a, rcert);
	CHECK_STR(err, want);

	ctx = tls_ctx_load(rkey, rcert, NULL, err, sizeof err);
	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS12, rcert, "rsa.example") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK_STR(tls_conn_cipher(p.srv), "ECDHE-RSA-CHACHA20-POLY1305");
	pair_close(&p);
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, rcert, "rsa.example") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_tls13_session(void)
{
	run_session(CLIENT_TLS13, "TLSv1.3");
}

static void test_tls12_session(void)
{
	run_session(CLIENT_TLS12, "TLSv1.2");
}

static void test_tls11_refused(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS11, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == -1);
	CHECK(!tls_conn_handshake_done(p.srv));
	CHECK(strlen(tls_conn_error(p.srv)) > 0);
	/* the refusal reached the client as an alert */
	CHECK(wolfSSL_connect(p.cli) != WOLFSSL_SUCCESS);
	CHECK(tls_conn_handshake(p.srv) == TLS_ERROR);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_cbc_refused(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS12_CBC, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == -1);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_client_alert_is_reported(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	int r;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	/* A client that trusts nothing rejects our certificate. */
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, NULL, NULL) == 0);
	r = pump_handshake(&p, SIZE_MAX);
	CHECK(r == -2);
	/* its alert reaches the server */
	CHECK(feed_server(&p, SIZE_MAX) == TLS_ERROR);
	CHECK(strncmp(tls_conn_error(p.srv), "received fatal alert: ", 22) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_wrong_name_rejected_by_client(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	/* checks that the SANs are what a client matches */
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "other.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == -2);
	pair_close(&p);
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "host1.example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_x25519_preferred(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13_P256_FIRST, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK_STR(wolfSSL_get_curve_name(p.cli), "X25519");
	pair_close(&p);
	tls_ctx_free(ctx);
}

/* ChaCha20-Poly1305 first, whatever the client prefers: in Debian's build
 * (no AES-NI) it is 2-3 times faster than AES-GCM, and its per-session state
 * is about 2 KB smaller than two AES-GCM key schedules. */
static void test_chacha_preferred(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(wolfSSL_set_cipher_list(p.cli, "TLS13-AES128-GCM-SHA256:"
				      "TLS13-CHACHA20-POLY1305-SHA256") == WOLFSSL_SUCCESS);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK_STR(tls_conn_cipher(p.srv), "TLS13-CHACHA20-POLY1305-SHA256");
	pair_close(&p);
	CHECK(pair_open(&p, ctx, CLIENT_TLS12, cert_a, "example.test") == 0);
	CHECK(wolfSSL_set_cipher_list(p.cli, "ECDHE-ECDSA-AES128-GCM-SHA256:"
				      "ECDHE-ECDSA-CHACHA20-POLY1305") == WOLFSSL_SUCCESS);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK_STR(tls_conn_cipher(p.srv), "ECDHE-ECDSA-CHACHA20-POLY1305");
	pair_close(&p);
	/* a client without it still gets AES-GCM */
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(wolfSSL_set_cipher_list(p.cli, "TLS13-AES128-GCM-SHA256") == WOLFSSL_SUCCESS);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK_STR(tls_conn_cipher(p.srv), "TLS13-AES128-GCM-SHA256");
	pair_close(&p);
	tls_ctx_free(ctx);
}

/* The client's first flight, with a 32-byte legacy_session_id put into its
 * ClientHello as a client in middlebox-compatibility mode sends it (wolfSSL's
 * client sends none); or left as it is when SID is false. */
static bool client_hello(struct pair *p, bool sid, uint8_t *out, size_t cap, size_t *len)
{
	size_t n;

	if (wolfSSL_connect(p->cli) == WOLFSSL_SUCCESS)
		return false;
	n = wire_pending(&p->to_server);
	if (n < 44 || n + 32 > cap || p->to_server.buf[0] != 22 || p->to_server.buf[5] != 1 ||
	    p->to_server.buf[43] != 0)
		return false;
	memcpy(out, p->to_server.buf, n);
	p->to_server.off = p->to_server.len;
	if (sid) {
		size_t rec = ((size_t)out[3] << 8 | out[4]) + 32;
		size_t hs = ((size_t)out[6] << 16 | (size_t)out[7] << 8 | out[8]) + 32;

		memmove(out + 44 + 32, out + 44, n - 44);
		out[43] = 32;
		memset(out + 44, 0xA5, 32);
		out[3] = (uint8_t)(rec >> 8);
		out[4] = (uint8_t)rec;
		out[6] = (uint8_t)(hs >> 16);
		out[7] = (uint8_t)(hs >> 8);
		out[8] = (uint8_t)hs;
		n += 32;
	}
	*len = n;
	return true;
}

/* Content types of the records the server wrote, in order (at most CAP);
 * *CCS_AT is the index of a dummy change_cipher_spec record, or -1. */
static int server_records(const struct pair *p, uint8_t *types, int cap, int *ccs_at)
{
	const uint8_t *b = p->to_client.buf;
	size_t off = 0, len = p->to_client.len;
	int n = 0;

	*ccs_at = -1;
	while (len - off >= 5 && n < cap) {
		size_t rlen = (size_t)b[off + 3] << 8 | b[off + 4];

		if (off + 5 + rlen > len)
			return -1;
		if (b[off] == 20 && rlen == 1 && b[off + 5] == 1 && *ccs_at < 0)
			*ccs_at = n;
		types[n++] = b[off];
		off += 5 + rlen;
	}
	return off == len ? n : -1;
}

/* RFC 8446 D.4: a ClientHello with a session ID gets a dummy CCS right after
 * the ServerHello (or HelloRetryRequest), once; without one, or over TLS
 * 1.2, none. Erlang/OTP's TLS 1.3 client aborts without it. */
static void test_middlebox_ccs(void)
{
	struct tls_ctx *ctx = load_a();
	static uint8_t hello[4096];
	uint8_t types[16];
	size_t len;
	int n, ccs;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	for (int sid = 0; sid <= 1; sid++) {
		static const size_t chunks[] = { sizeof hello, 1 };

		for (size_t c = 0; c < sizeof chunks / sizeof chunks[0]; c++) {
			size_t chunk = chunks[c];
			struct pair p;

			CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
			CHECK(client_hello(&p, sid, hello, sizeof hello, &len));
			/* fed whole, and one byte at a time */
			for (size_t off = 0; off < len; off += chunk) {
				size_t k = len - off < chunk ? len - off : chunk;
				CHECK(tls_conn_feed(p.srv, hello + off, k) == 0);
				CHECK(tls_conn_handshake(p.srv) == TLS_WANT_READ);
			}
			n = server_records(&p, types, 16, &ccs);
			CHECK(n >= 3 && types[0] == 22);
			if (sid)
				CHECK(ccs == 1 && types[2] == 23);
			else
				CHECK(ccs == -1 && types[1] == 23);
			pair_close(&p);
		}
	}

	/* a HelloRetryRequest is the first handshake message: the CCS follows it */
	struct pair p;
	int groups[] = { WOLFSSL_ECC_SECP384R1, WOLFSSL_ECC_X25519 };

	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(wolfSSL_set_groups(p.cli, groups, 2) == WOLFSSL_SUCCESS);
	CHECK(wolfSSL_UseKeyShare(p.cli, WOLFSSL_ECC_SECP384R1) == WOLFSSL_SUCCESS);
	CHECK(client_hello(&p, true, hello, sizeof hello, &len));
	CHECK(tls_conn_feed(p.srv, hello, len) == 0);
	CHECK(tls_conn_handshake(p.srv) == TLS_WANT_READ);
	n = server_records(&p, types, 16, &ccs);
	CHECK(n == 2 && types[0] == 22 && ccs == 1);
	pair_close(&p);

	/* TLS 1.2 has a real ChangeCipherSpec of its own, later */
	CHECK(pair_open(&p, ctx, CLIENT_TLS12, cert_a, "example.test") == 0);
	CHECK(client_hello(&p, true, hello, sizeof hello, &len));
	CHECK(tls_conn_feed(p.srv, hello, len) == 0);
	CHECK(tls_conn_handshake(p.srv) == TLS_WANT_READ);
	n = server_records(&p, types, 16, &ccs);
	CHECK(n >= 1 && ccs == -1);
	for (int i = 0; i < n; i++)
		CHECK(types[i] == 22);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_output_failure(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	p.refuse_output = true;
	CHECK(pump_handshake(&p, SIZE_MAX) == -1);
	CHECK_STR(tls_conn_error(p.srv), "cannot queue output");
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_one_byte_feeding(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	char buf[64];
	long n = 0, r;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, 1) == 0);
	CHECK(wolfSSL_write(p.cli, "<presence/>", 11) == 11);
	while (wire_pending(&p.to_server)) {
		CHECK(tls_conn_feed(p.srv, p.to_server.buf + p.to_server.off++, 1) == 0);
		while ((r = tls_conn_read(p.srv, buf + n, sizeof buf - (size_t)n, &st)) > 0)
			n += r;
		CHECK(st == TLS_WANT_READ || st == TLS_OK);
	}
	CHECK(n == 11 && memcmp(buf, "<presence/>", 11) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_ctx_freed_while_conn_lives(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	uint8_t ours[32];
	char buf[64];
	long n;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	/* a reload in the middle of a handshake */
	CHECK(wolfSSL_connect(p.cli) != WOLFSSL_SUCCESS);
	tls_ctx_free(ctx);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK(wolfSSL_write(p.cli, "ping", 4) == 4);
	n = server_read_all(&p, buf, sizeof buf, &st);
	CHECK(n == 4 && memcmp(buf, "ping", 4) == 0);
	CHECK(tls_conn_write(p.srv, "pong", 4) == 0);
	CHECK(client_read_all(&p, buf, sizeof buf) == 4 && memcmp(buf, "pong", 4) == 0);
	CHECK(tls_conn_exporter(p.srv, ours) == 0);
	pair_close(&p);   /* frees the last reference to the old context */
}

static void test_bundle_is_served(void)
{
	char err[256] = "";
	struct tls_ctx *ctx = tls_ctx_load(key_a, cert_a, cert_b, err, sizeof err);
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK(wolfSSL_get_chain_count(wolfSSL_get_peer_chain(p.cli)) == 2);
	pair_close(&p);
	tls_ctx_free(ctx);

	ctx = load_a();
	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK(wolfSSL_get_chain_count(wolfSSL_get_peer_chain(p.cli)) == 1);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_write_before_handshake(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(tls_conn_write(p.srv, "x", 1) == -ENOTCONN);
	CHECK(p.to_client.len == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

/* Heap one idle TLS 1.3 server session holds: wolfSSL's allocations plus
 * ours, which go through the same allocator. The figures go to stdout for
 * the memory budget; the checks are that trimming never grows the session
 * and that closing it gives everything back. */
static void test_idle_session_memory(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	size_t base, fresh, handshake, trimmed;
	uint8_t ours[32];
	char buf[64];

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	base = heap_live;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	tls_conn_free(p.srv);
	fresh = heap_live;
	p.srv = tls_conn_new(ctx, server_output, &p);
	CHECK(p.srv != NULL);
	if (!p.srv)
		return;
	fresh = heap_live - fresh;
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	/* Drop the client: what is left above BASE is the server session. */
	wolfSSL_free(p.cli);
	wolfSSL_CTX_free(p.cctx);
	p.cli = NULL;
	p.cctx = NULL;
	handshake = heap_live - base;
	tls_conn_trim(p.srv);
	trimmed = heap_live - base;
	printf("# heap per TLS 1.3 server session: new %zu, after handshake %zu, "
	       "after trim %zu bytes\n", fresh, handshake, trimmed);
	/* the handshake arrays (randoms, premaster buffer, exporter secret,
	 * about 5.5 KB) that Debian's OpenVPN-minded build keeps are gone */
	CHECK(trimmed + 4096 <= handshake);
	CHECK(tls_conn_exporter(p.srv, ours) == 0);
	CHECK(tls_conn_write(p.srv, "x", 1) == 0);
	CHECK(tls_conn_read(p.srv, buf, sizeof buf, &st) == 0 && st == TLS_WANT_READ);
	pair_close(&p);
	CHECK(heap_live == base);   /* nothing of the session outlives it */
	tls_ctx_free(ctx);
}

/* Pages of [P, P + LEN) wholly inside it: how many, and how many resident. */
static void page_census(const unsigned char *p, size_t len, size_t *inner, size_t *resident)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
	uintptr_t hi = ((uintptr_t)p + len) & ~(uintptr_t)(page - 1);

	*inner = *resident = 0;
	for (uintptr_t a = lo; a < hi; a += page) {
		unsigned char in_core = 0;

		(*inner)++;
		if (mincore((void *)a, page, &in_core) == 0 && (in_core & 1))
			(*resident)++;
	}
}

/* wolfSSL's session object (about 37 KB in Debian's build, most of it room
 * for peer certificate chains a server that asks for none never fills):
 * after tls_conn_trim() its pages of zeros are no longer resident, and the
 * session goes on working, key updates included. */
static void test_trim_releases_zero_pages(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	size_t inner, before, after, size;
	unsigned char *session;
	uint8_t ours[32], theirs[32];
	char buf[64];

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	tls_conn_free(p.srv);
	last_big = NULL;
	p.srv = tls_conn_new(ctx, server_output, &p);
	session = last_big;
	size = last_big_size;
	CHECK(p.srv != NULL && session != NULL);
	if (!p.srv || !session) {
		pair_close(&p);
		tls_ctx_free(ctx);
		return;
	}
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	page_census(session, size, &inner, &before);
	CHECK(inner >= 4 && before == inner);
	tls_conn_trim(p.srv);
	page_census(session, size, &inner, &after);
	printf("# session object: %zu bytes, %zu of its %zu inner pages released by trim\n",
	       size, before - after, inner);
	CHECK(after + 4 <= before);

	/* data both ways, then a key update from each side, then data again */
	CHECK(wolfSSL_write(p.cli, "one", 3) == 3);
	CHECK(server_read_all(&p, buf, sizeof buf, &st) == 3 && memcmp(buf, "one", 3) == 0);
	CHECK(tls_conn_write(p.srv, "two", 3) == 0);
	CHECK(client_read_all(&p, buf, sizeof buf) == 3 && memcmp(buf, "two", 3) == 0);
	CHECK(wolfSSL_update_keys(p.cli) == WOLFSSL_SUCCESS);
	CHECK(wolfSSL_write(p.cli, "three", 5) == 5);
	CHECK(server_read_all(&p, buf, sizeof buf, &st) == 5 && memcmp(buf, "three", 5) == 0);
	CHECK(tls_conn_write(p.srv, "four", 4) == 0);
	CHECK(client_read_all(&p, buf, sizeof buf) == 4 && memcmp(buf, "four", 4) == 0);
	CHECK(tls_conn_exporter(p.srv, ours) == 0);
	CHECK(wolfSSL_export_keying_material(p.cli, theirs, 32, "EXPORTER-Channel-Binding", 24,
					     NULL, 0, 0) == WOLFSSL_SUCCESS);
	CHECK(memcmp(ours, theirs, 32) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_trimmed_session_talks(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	uint8_t ours[32], theirs[32];
	char buf[64];

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	tls_conn_trim(p.srv);
	CHECK(wolfSSL_write(p.cli, "after", 5) == 5);
	CHECK(server_read_all(&p, buf, sizeof buf, &st) == 5 && memcmp(buf, "after", 5) == 0);
	tls_conn_trim(p.srv);
	CHECK(tls_conn_write(p.srv, "trim", 4) == 0);
	CHECK(client_read_all(&p, buf, sizeof buf) == 4 && memcmp(buf, "trim", 4) == 0);
	CHECK(tls_conn_exporter(p.srv, ours) == 0);
	CHECK(wolfSSL_export_keying_material(p.cli, theirs, 32, "EXPORTER-Channel-Binding", 24,
					     NULL, 0, 0) == WOLFSSL_SUCCESS);
	CHECK(memcmp(ours, theirs, 32) == 0);
	pair_close(&p);
	tls_ctx_free(ctx);
}

/* Ciphertext waiting in the connection costs memory only while it waits. */
static void test_input_buffer_released(void)
{
	struct tls_ctx *ctx = load_a();
	struct pair p;
	enum tls_status st;
	size_t idle;
	char buf[64];

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	CHECK(pair_open(&p, ctx, CLIENT_TLS13, cert_a, "example.test") == 0);
	CHECK(pump_handshake(&p, SIZE_MAX) == 0);
	CHECK(wolfSSL_write(p.cli, "<iq/>", 5) == 5);
	idle = heap_live;
	/* a record split across two receives: the first part waits inside */
	CHECK(tls_conn_feed(p.srv, p.to_server.buf + p.to_server.off, 3) == 0);
	p.to_server.off += 3;
	CHECK(heap_live > idle);
	CHECK(tls_conn_read(p.srv, buf, sizeof buf, &st) == 0 && st == TLS_WANT_READ);
	CHECK(server_read_all(&p, buf, sizeof buf, &st) == 5 && st == TLS_WANT_READ);
	CHECK(heap_live == idle);
	pair_close(&p);
	tls_ctx_free(ctx);
}

static void test_feed_limit(void)
{
	struct tls_ctx *ctx = load_a();
	struct tls_conn *c;
	static char junk[64 * 1024];
	int i, rc = 0;

	CHECK(ctx != NULL);
	if (!ctx)
		return;
	c = tls_conn_new(ctx, server_output, NULL);
	CHECK(c != NULL);
	for (i = 0; i < 64 && rc == 0; i++)
		rc = tls_conn_feed(c, junk, sizeof junk);
	CHECK(rc == -ENOBUFS);
	CHECK(i > 1);
	tls_conn_free(c);
	tls_ctx_free(ctx);
}

int main(void)
{
	char err[256] = "";

	/* before anything in wolfSSL allocates */
	if (wolfSSL_SetAllocators(count_malloc, count_free, count_realloc) != 0)
		return 1;
	if (tls_global_init() != 0 || tls_global_init() != 0)
		return 1;
	snprintf(dir, sizeof dir, "/tmp/test_tls.XXXXXX");
	if (!mkdtemp(dir))
		return 1;
	path_in_dir(key_a, sizeof key_a, "a.key");
	path_in_dir(cert_a, sizeof cert_a, "a.crt");
	path_in_dir(key_b, sizeof key_b, "b.key");
	path_in_dir(cert_b, sizeof cert_b, "b.crt");
	if (tls_make_self_signed(key_a, cert_a, "example.test", "host1.example.test", err,
				 sizeof err) != 0 ||
	    tls_make_self_signed(key_b, cert_b, "other.test", "host2.other.test", err,
				 sizeof err) != 0) {
		printf("FAIL setup: %s\n", err);
		return 1;
	}

	RUN(test_self_signed_files);
	RUN(test_self_signed_same_names);
	RUN(test_self_signed_long_domain);
	RUN(test_self_signed_unwritable);
	RUN(test_fixture_info);
	RUN(test_ctx_info);
	RUN(test_load_errors);
	RUN(test_foreign_pairs);
	RUN(test_tls13_session);
	RUN(test_tls12_session);
	RUN(test_tls11_refused);
	RUN(test_cbc_refused);
	RUN(test_client_alert_is_reported);
	RUN(test_wrong_name_rejected_by_client);
	RUN(test_x25519_preferred);
	RUN(test_chacha_preferred);
	RUN(test_middlebox_ccs);
	RUN(test_output_failure);
	RUN(test_one_byte_feeding);
	RUN(test_ctx_freed_while_conn_lives);
	RUN(test_bundle_is_served);
	RUN(test_write_before_handshake);
	RUN(test_idle_session_memory);
	RUN(test_trim_releases_zero_pages);
	RUN(test_trimmed_session_talks);
	RUN(test_input_buffer_released);
	RUN(test_feed_limit);

	if (getenv("TEST_TLS_KEEP"))
		printf("# files kept in %s\n", dir);
	else {
		static const char *const names[] = { "a.key", "a.crt", "b.key", "b.crt",
						     "same.key", "same.crt", "long.key",
						     "long.crt", "fixture.pem", "fixture.key",
						     "rsa.key", "rsa.crt", "garbage.pem" };
		char path[128];
		size_t i;

		for (i = 0; i < sizeof names / sizeof names[0]; i++) {
			path_in_dir(path, sizeof path, names[i]);
			unlink(path);
		}
		rmdir(dir);
	}
	return check_exit();
}
