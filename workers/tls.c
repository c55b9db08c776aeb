/*
 * tls: wolfSSL server contexts and connections driven by the caller's I/O.
 *
 * Input: tls_conn_feed() copies ciphertext into a per-connection buffer and
 * wolfSSL's receive callback copies it out again, answering WANT_READ when
 * it is empty. The buffer is freed as soon as it is drained, so an idle
 * connection holds no input buffer of ours (wolfSSL shrinks its own record
 * buffers after each record). Everything a connection owns is allocated
 * through wolfSSL's allocator, so a hook set with wolfSSL_SetAllocators()
 * sees the whole per-connection footprint.
 * Output: wolfSSL's send callback hands every ciphertext chunk straight to
 * the caller's OUTPUT function; it never answers WANT_WRITE, so a handshake
 * or write step always completes or fails inside one call.
 *
 * Lifetime: wolfSSL_new() takes a reference on its WOLFSSL_CTX and the last
 * wolfSSL_free() releases it, so tls_ctx_free() may run while connections
 * made from it are still open (a reload). A connection therefore never
 * points at its struct tls_ctx, only at wolfSSL's objects.
 *
 * Policy, chosen for a server whose idle connections must stay small:
 *  - TLS 1.2 and 1.3 only, AEAD suites only (ECDHE for TLS 1.2).
 *  - TLS 1.3 groups X25519 then P-256: among the key shares a client sends,
 *    ours is the order that wins (X25519 is several times cheaper). TLS 1.2
 *    ECDHE takes the client's first supported curve.
 *  - ChaCha20-Poly1305 first, and wolfSSL follows the server's order: in
 *    Debian's build (no AES-NI) it is 2-3 times faster than AES-GCM, and its
 *    state is about 2 KB a session smaller than two AES-GCM key schedules.
 *  - No resumption: the session cache is off and no tickets are issued.
 *    Workers are separate processes behind SO_REUSEPORT and every reload
 *    makes a new context, so a ticket key would have to be shared and
 *    rotated across processes before tickets could pay off; meanwhile a
 *    full X25519 + ECDSA handshake costs both ends together under a
 *    millisecond of CPU here.
 *  - No client certificates are requested (c2s authenticates with SASL).
 *  - The bundle is appended to the chain the server sends (intermediates);
 *    it is not loaded as trust anchors since we verify no peer here.
 *  - tls-exporter only on TLS 1.3 (see tls_conn_exporter).
 *  - The TLS 1.3 middlebox-compatibility ChangeCipherSpec that Debian's
 *    wolfSSL leaves out is added by our send callback (see enum compat).
 */
#include "workers/tls.h"

#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/error-ssl.h>
#include <wolfssl/wolfcrypt/asn.h>
#include <wolfssl/wolfcrypt/asn_public.h>
#include <wolfssl/wolfcrypt/ecc.h>
#include <wolfssl/wolfcrypt/error-crypt.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/memory.h>
#include <wolfssl/wolfcrypt/random.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Larger key, certificate or bundle files are operator mistakes. */
#define TLS_MAX_FILE (1u << 20)
/* Ciphertext buffered but not yet consumed: a caller that keeps feeding
 * without reading is a bug, not a reason to grow without bound. */
#define TLS_MAX_BUFFERED (1u << 20)
/* GeneralName tag for dNSName (RFC 5280: [2] IMPLICIT IA5String). */
#define SAN_DNS_TAG 0x82
#define SAN_TYPE_DNS 2
#define SELF_SIGNED_DAYS 3650

static const char tls_cipher_list[] =
	"TLS13-CHACHA20-POLY1305-SHA256:"
	"TLS13-AES128-GCM-SHA256:TLS13-AES256-GCM-SHA384:"
	"ECDHE-ECDSA-CHACHA20-POLY1305:"
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
	"ECDHE-RSA-CHACHA20-POLY1305:"
	"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384";

struct tls_ctx {
	WOLFSSL_CTX *wctx;
	struct tls_cert_info leaf;   /* cached at load for status pages */
};

struct tls_conn {
	WOLFSSL *ssl;
	tls_output_fn out;
	void *out_arg;
	uint8_t *in;           /* fed ciphertext; NULL when empty */
	size_t in_off;         /* consumed by wolfSSL */
	size_t in_len;         /* filled */
	size_t in_cap;
	char *error;           /* allocated on the first fatal error only */
	enum tls_status final; /* TLS_OK while usable, else CLOSED or ERROR */
	bool done;             /* handshake complete */
	bool output_failed;    /* OUTPUT refused bytes: explains the failure */
	bool trimmed;          /* tls_conn_trim() ran: wolfSSL's arrays are gone */
	uint8_t compat;        /* enum compat: the middlebox-compatibility CCS */
	uint8_t hello_seen;    /* bytes of the first ClientHello looked at */
	uint16_t hello_len;    /* length of its record */
	bool have_exporter;    /* EXPORTER holds the TLS 1.3 channel binding */
	uint8_t exporter[32];  /* kept by tls_conn_trim() before the arrays go */
};

/* RFC 8446 D.4: a client in middlebox-compatibility mode sends a non-empty
 * legacy_session_id, and then the server "MUST send" a dummy
 * change_cipher_spec record right after its first handshake record (the
 * ServerHello or HelloRetryRequest). Debian's wolfSSL echoes the session ID
 * but sends no CCS (that needs WOLFSSL_TLS13_MIDDLEBOX_COMPAT at build time,
 * and no call turns it on), and clients that check, such as Erlang/OTP's
 * since OTP 25 (tsung), abort the handshake. The CCS is a plaintext record
 * outside the transcript that every TLS 1.3 peer must accept and drop before
 * the peer's Finished, so we add it to the output stream ourselves. */
enum compat {
	COMPAT_PENDING,   /* the start of the ClientHello has not all arrived */
	COMPAT_WANTED,    /* it carried a session ID: send the CCS */
	COMPAT_NONE,      /* no session ID, not a ClientHello, or CCS sent */
};
/* record header (5), handshake header (4), legacy_version (2), random (32) */
#define HELLO_SID_LEN_AT 43
static const uint8_t dummy_ccs[] = { 20, 3, 3, 0, 1, 1 };

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* sizeof(WOLFSSL_SESSION) in the library we run with, which keeps the
 * struct private; 0 when it could not be learned (see tls_conn_trim). */
static size_t session_size;
static wolfSSL_Malloc_cb probe_next;
static void *probe_block;
static size_t probe_size;

static void *probe_malloc(size_t size)
{
	void *p = probe_next ? probe_next(size) : malloc(size);

	if (p && size > probe_size) {
		probe_size = size;
		probe_block = p;
	}
	return p;
}

/* Make one session object with an allocator hook that notes the largest
 * block, forwarding to whatever allocator is set; the session itself must
 * be that block, or we learn nothing. Runs once, before any other thread. */
static void learn_session_size(void)
{
	wolfSSL_Malloc_cb mf;
	wolfSSL_Free_cb ff;
	wolfSSL_Realloc_cb rf;
	WOLFSSL_SESSION *s;

	if (wolfSSL_GetAllocators(&mf, &ff, &rf) != 0)
		return;
	probe_next = mf;
	probe_block = NULL;
	probe_size = 0;
	if (wolfSSL_SetAllocators(probe_malloc, ff, rf) != 0)
		return;
	s = wolfSSL_SESSION_new();
	wolfSSL_SetAllocators(mf, ff, rf);
	if (s && (void *)s == probe_block)
		session_size = probe_size;
	wolfSSL_SESSION_free(s);
}

int tls_global_init(void)
{
	static bool initialized;

	if (initialized)
		return 0;
	if (wolfSSL_Init() != WOLFSSL_SUCCESS)
		return -EIO;
	learn_session_size();
	initialized = true;
	return 0;
}

/* ---- files ---- */

/* Read PATH whole into a NUL-terminated heap buffer. 0 or -errno. */
static int read_file(const char *path, char **data, size_t *len)
{
	struct stat st;
	char *buf = NULL;
	size_t got = 0;
	int fd, rc;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		rc = S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
		goto fail;
	}
	if ((uint64_t)st.st_size > TLS_MAX_FILE) {
		rc = -EFBIG;
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		rc = -ENOMEM;
		goto fail;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = -errno;
			goto fail;
		}
		if (n == 0)
			break;   /* shrank while we read: take what is there */
		got += (size_t)n;
	}
	close(fd);
	buf[got] = '\0';
	*data = buf;
	*len = got;
	return 0;
fail:
	free(buf);
	close(fd);
	return rc;
}

static void free_secret(char *data, size_t len)
{
	if (data)
		explicit_bzero(data, len);
	free(data);
}

/* Write DATA to PATH through a temporary file in the same directory, so a
 * reader (or a crash) never sees half a key, and the key is never readable
 * by others, not even for a moment: mkstemp creates the file 0600. */
static int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
	size_t plen = strlen(path), off = 0;
	char *tmp;
	int fd, rc;

	tmp = malloc(plen + sizeof ".XXXXXX");
	if (!tmp)
		return -ENOMEM;
	memcpy(tmp, path, plen);
	memcpy(tmp + plen, ".XXXXXX", sizeof ".XXXXXX");
	fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		free(tmp);
		return rc;
	}
	if (fchmod(fd, mode) < 0)
		goto fail_errno;
	while (off < len) {
		ssize_t n = write(fd, (const char *)data + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			goto fail_errno;
		off += (size_t)n;
	}
	if (fsync(fd) < 0)
		goto fail_errno;
	if (close(fd) < 0) {
		fd = -1;
		goto fail_errno;
	}
	fd = -1;
	if (rename(tmp, path) < 0)
		goto fail_errno;
	free(tmp);
	return 0;
fail_errno:
	rc = -errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	free(tmp);
	return rc;
}

/* ---- certificate information ---- */

static int two_digits(const unsigned char *p)
{
	if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9')
		return -1;
	return (p[0] - '0') * 10 + (p[1] - '0');
}

/* The two forms RFC 5280 section 4.1.2.5 allows, and nothing else:
 * UTCTime YYMMDDHHMMSSZ (YY < 50 is 20YY) and GeneralizedTime
 * YYYYMMDDHHMMSSZ. */
static int asn1_time_parse(const WOLFSSL_ASN1_TIME *t, time_t *out)
{
	static const int mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	const unsigned char *p;
	struct tm tm = { 0 };
	int year, f[5], i;
	bool leap;

	if (!t)
		return -EINVAL;
	p = t->data;
	if (t->type == ASN_UTC_TIME && t->length == 13) {
		year = two_digits(p);
		if (year < 0)
			return -EINVAL;
		year += year < 50 ? 2000 : 1900;
		p += 2;
	} else if (t->type == ASN_GENERALIZED_TIME && t->length == 15) {
		int hi = two_digits(p), lo = two_digits(p + 2);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		year = hi * 100 + lo;
		p += 4;
	} else {
		return -EINVAL;
	}
	for (i = 0; i < 5; i++) {   /* month day hour minute second */
		f[i] = two_digits(p + 2 * i);
		if (f[i] < 0)
			return -EINVAL;
	}
	if (p[10] != 'Z')
		return -EINVAL;
	/* Range checks here: timegm() would silently normalize Feb 30. */
	leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
	if (f[0] < 1 || f[0] > 12 || f[1] < 1 || f[1] > mdays[f[0] - 1] ||
	    (f[0] == 2 && f[1] == 29 && !leap) || f[2] > 23 || f[3] > 59 || f[4] > 59)
		return -EINVAL;
	tm.tm_year = year - 1900;
	tm.tm_mon = f[0] - 1;
	tm.tm_mday = f[1];
	tm.tm_hour = f[2];
	tm.tm_min = f[3];
	tm.tm_sec = f[4];
	*out = timegm(&tm);
	return 0;
}

/* DNS SANs, comma-separated. Bytes that could confuse a log line or a
 * listing (controls, spaces, commas) are shown as '?'. When the list does
 * not fit, it ends with "...". */
static void collect_dns_sans(WOLFSSL_X509 *x509, char *out, size_t cap)
{
	WOLFSSL_STACK *names;
	size_t used = 0;
	int i, n;

	out[0] = '\0';
	names = wolfSSL_X509_get_ext_d2i(x509, NID_subject_alt_name, NULL, NULL);
	if (!names)
		return;
	/* wolfSSL's stacks push at the head: walk from the end to list the
	 * names in certificate order. */
	n = wolfSSL_sk_GENERAL_NAME_num(names);
	for (i = n - 1; i >= 0; i--) {
		WOLFSSL_GENERAL_NAME *gn = wolfSSL_sk_GENERAL_NAME_value(names, i);
		const unsigned char *s;
		size_t need;
		int len, k;

		if (!gn || gn->type != SAN_TYPE_DNS || !gn->d.dNSName)
			continue;
		s = wolfSSL_ASN1_STRING_get0_data(gn->d.dNSName);
		len = wolfSSL_ASN1_STRING_length(gn->d.dNSName);
		if (!s || len <= 0)
			continue;
		need = (used ? 1 : 0) + (size_t)len;
		if (used + need + sizeof ",..." > cap) {
			memcpy(out + used, used ? ",..." : "...", used ? 5 : 4);
			break;
		}
		if (used)
			out[used++] = ',';
		for (k = 0; k < len; k++)
			out[used++] = (s[k] > ' ' && s[k] < 0x7f && s[k] != ',') ? (char)s[k] : '?';
		out[used] = '\0';
	}
	wolfSSL_GENERAL_NAMES_free(names);
}

static int cert_info_from_x509(WOLFSSL_X509 *x509, struct tls_cert_info *out)
{
	static const char hex[] = "0123456789ABCDEF";
	WOLFSSL_X509_NAME *subject;
	const unsigned char *der;
	char *p;
	uint8_t digest[32];
	int der_len, i;

	memset(out, 0, sizeof *out);
	if (asn1_time_parse(wolfSSL_X509_get_notBefore(x509), &out->not_before) < 0 ||
	    asn1_time_parse(wolfSSL_X509_get_notAfter(x509), &out->not_after) < 0)
		return -EINVAL;

	subject = wolfSSL_X509_get_subject_name(x509);
	if (!subject ||
	    wolfSSL_X509_NAME_get_text_by_NID(subject, NID_commonName, out->subject_cn,
					      (int)sizeof out->subject_cn) < 0)
		out->subject_cn[0] = '\0';
	for (p = out->subject_cn; *p; p++)   /* UTF-8 stays; controls do not */
		if ((unsigned char)*p < ' ' || *p == 0x7f)
			*p = '?';

	der = wolfSSL_X509_get_der(x509, &der_len);
	if (!der || der_len <= 0 || wc_Sha256Hash(der, (word32)der_len, digest) != 0)
		return -EINVAL;
	for (i = 0, p = out->sha256_fp; i < 32; i++) {
		if (i)
			*p++ = ':';
		*p++ = hex[digest[i] >> 4];
		*p++ = hex[digest[i] & 15];
	}
	*p = '\0';

	collect_dns_sans(x509, out->sans, sizeof out->sans);
	return 0;
}

/* The first certificate of a PEM buffer, or NULL. */
static WOLFSSL_X509 *first_certificate(const char *pem, size_t len)
{
	if (len > INT_MAX)
		return NULL;
	return wolfSSL_X509_load_certificate_buffer((const unsigned char *)pem, (int)len,
						    WOLFSSL_FILETYPE_PEM);
}

static int cert_info_from_pem(const char *pem, size_t len, struct tls_cert_info *out)
{
	WOLFSSL_X509 *x509 = first_certificate(pem, len);
	int rc;

	if (!x509)
		return -EINVAL;
	rc = cert_info_from_x509(x509, out);
	wolfSSL_X509_free(x509);
	return rc;
}

int tls_cert_file_info(const char *cert_path, struct tls_cert_info *out)
{
	char *pem;
	size_t len;
	int rc;

	rc = read_file(cert_path, &pem, &len);
	if (rc < 0)
		return rc;
	rc = cert_info_from_pem(pem, len, out);
	free(pem);
	return rc;
}

int tls_ctx_cert_info(const struct tls_ctx *ctx, struct tls_cert_info *out)
{
	*out = ctx->leaf;
	return 0;
}

/* ---- contexts ---- */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg);
static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg);

/* Does the EC private key in KEY_PEM belong to LEAF? 1 yes, 0 no.
 *
 * wolfSSL 5.5.4 as Debian builds it passes any P-256 key with any P-256
 * certificate in wolfSSL_CTX_check_private_key() (its wc_ecc_check_key()
 * does not test the private scalar against the public point), and the
 * mistake would only show as failed handshakes. So we prove possession:
 * sign with the key, verify with the certificate's public key. For other
 * certificates: 1, wolfSSL's own check (it compares RSA moduli) decides. */
static int ec_key_matches(const char *key_pem, size_t key_len, WOLFSSL_X509 *leaf)
{
	static const uint8_t digest[32] = "xmppd: key matches certificate";
	uint8_t spki[512], sig[160];
	uint8_t *der = NULL;
	int der_len, spki_len = (int)sizeof spki, result = 0, rc = 0;
	word32 idx = 0, sig_len = sizeof sig;
	bool pub_ok = false, priv_ok = false, rng_ok = false;
	ecc_key pub, priv;
	WC_RNG rng;

	if (wolfSSL_X509_get_pubkey_type(leaf) != ECDSAk)
		return 1;
	if (wolfSSL_X509_get_pubkey_buffer(leaf, spki, &spki_len) != WOLFSSL_SUCCESS ||
	    wc_ecc_init(&pub) != 0)
		return 0;
	pub_ok = true;
	if (wc_EccPublicKeyDecode(spki, &idx, &pub, (word32)spki_len) != 0)
		goto out;
	if (key_len > INT_MAX || !(der = malloc(key_len)))
		goto out;
	der_len = wc_KeyPemToDer((const unsigned char *)key_pem, (int)key_len, der,
				 (int)key_len, NULL);
	if (der_len <= 0 || wc_ecc_init(&priv) != 0)
		goto out;
	priv_ok = true;
	idx = 0;
	if (wc_EccPrivateKeyDecode(der, &idx, &priv, (word32)der_len) != 0 ||
	    wc_InitRng(&rng) != 0)
		goto out;
	rng_ok = true;
	if (wc_ecc_sign_hash(digest, sizeof digest, sig, &sig_len, &rng, &priv) == 0 &&
	    wc_ecc_verify_hash(sig, sig_len, digest, sizeof digest, &result, &pub) == 0)
		rc = result == 1;
out:
	if (rng_ok)
		wc_FreeRng(&rng);
	if (priv_ok)
		wc_ecc_free(&priv);
	if (pub_ok)
		wc_ecc_free(&pub);
	if (der) {
		explicit_bzero(der, key_len);
		free(der);
	}
	return rc;
}

static int configure_ctx(WOLFSSL_CTX *wctx)
{
	int groups[] = { WOLFSSL_ECC_X25519, WOLFSSL_ECC_SECP256R1 };

	if (wolfSSL_CTX_SetMinVersion(wctx, WOLFSSL_TLSV1_2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_cipher_list(wctx, tls_cipher_list) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_set_groups(wctx, groups, 2) != WOLFSSL_SUCCESS ||
	    wolfSSL_CTX_no_ticket_TLSv13(wctx) != 0 ||
	    wolfSSL_CTX_NoTicketTLSv12(wctx) != WOLFSSL_SUCCESS)
		return -EIO;
	wolfSSL_CTX_set_session_cache_mode(wctx, WOLFSSL_SESS_CACHE_OFF);
	wolfSSL_CTX_set_verify(wctx, WOLFSSL_VERIFY_NONE, NULL);
	wolfSSL_CTX_SetIORecv(wctx, io_recv);
	wolfSSL_CTX_SetIOSend(wctx, io_send);
	return 0;
}

struct tls_ctx *tls_ctx_load(const char *key, const char *cert, const char *bundle,
			     char *err, size_t errlen)
{
	char *key_pem = NULL, *cert_pem = NULL, *bundle_pem = NULL, *chain = NULL;
	size_t key_len = 0, cert_len = 0, bundle_len = 0, chain_len;
	WOLFSSL_X509 *leaf = NULL, *first_of_bundle = NULL;
	struct tls_ctx *ctx;
	int rc;

	ctx = calloc(1, sizeof *ctx);
	if (!ctx) {
		set_err(err, errlen, "out of memory");
		return NULL;
	}
	if ((rc = read_file(key, &key_pem, &key_len)) < 0) {
		set_err(err, errlen, "cannot read %s: %s", key, strerror(-rc));
		goto fail;
	}
	if ((rc = read_file(cert, &cert_pem, &cert_len)) < 0) {
		set_err(err, errlen, "cannot read %s: %s", cert, strerror(-rc));
		goto fail;
	}
	if (bundle && *bundle && (rc = read_file(bundle, &bundle_pem, &bundle_len)) < 0) {
		set_err(err, errlen, "cannot read %s: %s", bundle, strerror(-rc));
		goto fail;
	}
	leaf = first_certificate(cert_pem, cert_len);
	if (!leaf || cert_info_from_x509(leaf, &ctx->leaf) < 0) {
		set_err(err, errlen, "%s: not a PEM certificate", cert);
		goto fail;
	}
	/* wolfSSL's chain loader stops quietly at the first block it cannot
	 * parse: without this check a bundle of garbage would pass as empty. */
	if (bundle_pem && !(first_of_bundle = first_certificate(bundle_pem, bundle_len))) {
		set_err(err, errlen, "%s: not a PEM certificate bundle", bundle);
		goto fail;
	}

	/* The served chain is the certificate file (which may already hold
	 * intermediates) followed by the bundle. */
	chain_len = cert_len + 1 + bundle_len;
	if (chain_len > INT_MAX || !(chain = malloc(chain_len))) {
		set_err(err, errlen, "out of memory");
		goto fail;
	}
	memcpy(chain, cert_pem, cert_len);
	chain[cert_len] = '\n';   /* in case the file does not end with one */
	if (bundle_len)
		memcpy(chain + cert_len + 1, bundle_pem, bundle_len);

	ctx->wctx = wolfSSL_CTX_new(wolfSSLv23_server_method());
	if (!ctx->wctx || configure_ctx(ctx->wctx) < 0) {
		set_err(err, errlen, "cannot set up a TLS context");
		goto fail;
	}
	if (key_len > INT_MAX ||
	    wolfSSL_CTX_use_PrivateKey_buffer(ctx->wctx, (const unsigned char *)key_pem,
					      (long)key_len, WOLFSSL_FILETYPE_PEM) !=
		    WOLFSSL_SUCCESS) {
		set_err(err, errlen, "%s: not a PEM private key", key);
		goto fail;
	}
	if (wolfSSL_CTX_use_certificate_chain_buffer_format(
		    ctx->wctx, (const unsigned char *)chain, (long)chain_len,
		    WOLFSSL_FILETYPE_PEM) != WOLFSSL_SUCCESS) {
		set_err(err, errlen, "%s: not a PEM certificate chain", cert);
		goto fail;
	}
	if (wolfSSL_CTX_check_private_key(ctx->wctx) != WOLFSSL_SUCCESS ||
	    ec_key_matches(key_pem, key_len, leaf) != 1) {
		set_err(err, errlen, "key %s does not match certificate %s", key, cert);
		goto fail;
	}
	goto out;
fail:
	tls_ctx_free(ctx);
	ctx = NULL;
out:
	wolfSSL_X509_free(leaf);
	wolfSSL_X509_free(first_of_bundle);
	free_secret(key_pem, key_len);
	free(cert_pem);
	free(bundle_pem);
	free(chain);
	return ctx;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	wolfSSL_CTX_free(ctx->wctx);   /* open sessions hold their own reference */
	free(ctx);
}

/* ---- self-signed certificates ---- */

/* A DNS name we are willing to put in a certificate: ASCII letters,
 * digits, '-', '.', '_'; 1..253 bytes. */
static bool valid_dns_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > 253)
		return false;
	for (i = 0; i < n; i++) {
		char ch = s[i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_'))
			return false;
	}
	return true;
}

static size_t der_put_len(uint8_t *p, size_t len)
{
	if (len < 0x80) {
		p[0] = (uint8_t)len;
		return 1;
	}
	if (len <= 0xff) {
		p[0] = 0x81;
		p[1] = (uint8_t)len;
		return 2;
	}
	p[0] = 0x82;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	return 3;
}

/* GeneralNames ::= SEQUENCE OF GeneralName, here only dNSName entries. The
 * names are at most 253 bytes each (checked), so the result is at most
 * 4 + 2 * (3 + 253) bytes, far below CTC_MAX_ALT_SIZE. */
static int build_dns_sans(const char *const names[], int count, uint8_t *out, size_t cap)
{
	uint8_t body[2 * (3 + 253)];
	size_t blen = 0, hdr;
	int i;

	for (i = 0; i < count; i++) {
		size_t n = strlen(names[i]);
		body[blen++] = SAN_DNS_TAG;
		blen += der_put_len(body + blen, n);
		memcpy(body + blen, names[i], n);
		blen += n;
	}
	if (blen + 4 > cap)
		return -ENOSPC;
	out[0] = 0x30;   /* SEQUENCE */
	hdr = 1 + der_put_len(out + 1, blen);
	memcpy(out + hdr, body, blen);
	return (int)(hdr + blen);
}

/* T as a DER Time, tag and length included (wolfSSL copies the validity
 * from Cert verbatim when set). wolfSSL 5.5.4 would write GeneralizedTime
 * for every date; RFC 5280 section 4.1.2.5 wants UTCTime through 2049. */
static int encode_cert_time(time_t t, uint8_t *out, size_t cap)
{
	struct tm tm;
	char text[20];
	size_t n;
	bool utc;

	if (!gmtime_r(&t, &tm))
		return -EINVAL;
	utc = tm.tm_year + 1900 < 2050;
	n = strftime(text, sizeof text, utc ? "%y%m%d%H%M%SZ" : "%Y%m%d%H%M%SZ", &tm);
	if (n != (utc ? 13u : 15u) || n + 2 > cap)
		return -EINVAL;
	out[0] = utc ? ASN_UTC_TIME : ASN_GENERALIZED_TIME;
	out[1] = (uint8_t)n;
	memcpy(out + 2, text, n);
	return (int)n + 2;
}

/* KEY as a PEM "EC PRIVATE KEY" (SEC 1) file, mode 0600. 0 or -errno. */
static int write_ec_key(ecc_key *key, const char *path)
{
	uint8_t der[256], pem[512];
	int der_len, pem_len, rc;

	der_len = wc_EccKeyToDer(key, der, sizeof der);
	pem_len = der_len > 0 ? wc_DerToPem(der, (word32)der_len, pem, sizeof pem,
					    ECC_PRIVATEKEY_TYPE)
			      : -1;
	rc = pem_len > 0 ? write_file_atomic(path, pem, (size_t)pem_len, 0600) : -EINVAL;
	explicit_bzero(der, sizeof der);
	explicit_bzero(pem, sizeof pem);
	return rc;
}

/* The parent directories must exist (the caller makes the data directory);
 * existing files are replaced, each atomically. */
int tls_make_self_signed(const char *key_path, const char *cert_path, const char *domain,
			 const char *hostname, char *err, size_t errlen)
{
	/* An ECDSA certificate with two 253-byte names is about 1.1 KB. */
	uint8_t der[2048], pem[4096];
	const char *names[2] = { domain, hostname };
	int nnames = 1, rc, pem_len, ret = -1;
	bool rng_ok = false, key_ok = false;
	Cert *cert = NULL;
	ecc_key key;
	WC_RNG rng;
	time_t now;

	if (!domain || !valid_dns_name(domain) ||
	    (hostname && *hostname && !valid_dns_name(hostname))) {
		set_err(err, errlen, "cannot make a certificate for \"%s\" and \"%s\": "
			"not a DNS name", domain ? domain : "", hostname ? hostname : "");
		return -1;
	}
	if (hostname && *hostname && strcasecmp(hostname, domain) != 0)
		nnames = 2;

	cert = wc_CertNew(NULL);
	if (!cert) {
		set_err(err, errlen, "out of memory");
		goto out;
	}
	if ((rc = wc_InitRng(&rng)) != 0) {
		set_err(err, errlen, "random generator: %s", wc_GetErrorString(rc));
		goto out;
	}
	rng_ok = true;
	if ((rc = wc_ecc_init(&key)) != 0) {
		set_err(err, errlen, "key generation failed: %s", wc_GetErrorString(rc));
		goto out;
	}
	key_ok = true;
	if ((rc = wc_ecc_make_key_ex(&rng, 32, &key, ECC_SECP256R1)) != 0) {
		set_err(err, errlen, "key generation failed: %s", wc_GetErrorString(rc));
		goto out;
	}

	cert->sigType = CTC_SHA256wECDSA;
	cert->isCA = 0;
	/* Valid from a day ago, for clients whose clocks run late. */
	now = time(NULL);
	cert->beforeDateSz = encode_cert_time(now - 86400, cert->beforeDate,
					      sizeof cert->beforeDate);
	cert->afterDateSz = encode_cert_time(now + SELF_SIGNED_DAYS * 86400L, cert->afterDate,
					     sizeof cert->afterDate);
	if (cert->beforeDateSz < 0 || cert->afterDateSz < 0) {
		set_err(err, errlen, "cannot encode the certificate's dates");
		goto out;
	}
	/* A common name is capped at 64 characters (RFC 5280 ub-common-name);
	 * clients match the SANs anyway, so a longer domain goes there only. */
	if (strlen(domain) < sizeof cert->subject.commonName)
		strcpy(cert->subject.commonName, domain);
	rc = build_dns_sans(names, nnames, cert->altNames, sizeof cert->altNames);
	if (rc < 0) {
		set_err(err, errlen, "cannot encode the certificate's names");
		goto out;
	}
	cert->altNamesSz = rc;
	if ((rc = wc_SetKeyUsage(cert, "digitalSignature")) != 0 ||
	    (rc = wc_SetExtKeyUsage(cert, "serverAuth,clientAuth")) != 0 ||
	    (rc = wc_MakeCert(cert, der, sizeof der, NULL, &key, &rng)) < 0 ||
	    (rc = wc_SignCert(cert->bodySz, cert->sigType, der, sizeof der, NULL, &key,
			      &rng)) < 0 ||
	    (rc = wc_DerToPem(der, (word32)rc, pem, sizeof pem, CERT_TYPE)) <= 0) {
		set_err(err, errlen, "cannot make the certificate: %s", wc_GetErrorString(rc));
		goto out;
	}
	pem_len = rc;
	/* Key first: a certificate on disk always has its key beside it. */
	if ((rc = write_ec_key(&key, key_path)) < 0) {
		set_err(err, errlen, "cannot write %s: %s", key_path, strerror(-rc));
		goto out;
	}
	if ((rc = write_file_atomic(cert_path, pem, (size_t)pem_len, 0644)) < 0) {
		set_err(err, errlen, "cannot write %s: %s", cert_path, strerror(-rc));
		goto out;
	}
	ret = 0;
out:
	if (key_ok)
		wc_ecc_free(&key);
	if (rng_ok)
		wc_FreeRng(&rng);
	wc_CertFree(cert);
	return ret;
}

/* ---- connections ---- */

static int io_recv(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *c = arg;
	size_t avail = c->in_len - c->in_off, n;

	(void)ssl;
	if (avail == 0)
		return WOLFSSL_CBIO_ERR_WANT_READ;
	n = avail < (size_t)sz ? avail : (size_t)sz;
	memcpy(buf, c->in + c->in_off, n);
	c->in_off += n;
	if (c->in_off == c->in_len) {
		/* Drained: an idle connection keeps no input buffer. */
		wolfSSL_Free(c->in);
		c->in = NULL;
		c->in_off = c->in_len = c->in_cap = 0;
	}
	return (int)n;
}

/* Follow the first bytes of the client's first flight up to the ClientHello's
 * legacy_session_id length, wherever the reads split them. */
static void note_client_hello(struct tls_conn *c, const uint8_t *data, size_t len)
{
	for (size_t i = 0; i < len && c->compat == COMPAT_PENDING; i++, c->hello_seen++) {
		uint8_t b = data[i];

		switch (c->hello_seen) {
		case 0:         /* a handshake record ... */
			if (b != 22)
				c->compat = COMPAT_NONE;
			break;
		case 3:
		case 4:
			c->hello_len = (uint16_t)(c->hello_len << 8 | b);
			break;
		case 5:         /* ... starting with a ClientHello */
			if (b != 1)
				c->compat = COMPAT_NONE;
			break;
		case HELLO_SID_LEN_AT:
			c->compat = b && c->hello_len > HELLO_SID_LEN_AT - 5 ? COMPAT_WANTED
									     : COMPAT_NONE;
			break;
		default:
			break;
		}
	}
}

static int output(struct tls_conn *c, const void *data, size_t len)
{
	if (len && c->out(c->out_arg, data, len) < 0) {
		c->output_failed = true;
		return -1;
	}
	return 0;
}

/* wolfSSL hands its send callback whole records (we always take all of
 * them). Returns the offset just past the first handshake record of BUF that
 * starts with a ServerHello (a HelloRetryRequest is one too), or 0. */
static size_t after_server_hello(const uint8_t *buf, size_t len)
{
	size_t off = 0;

	while (len - off >= 5) {
		size_t end = off + 5 + ((size_t)buf[off + 3] << 8 | buf[off + 4]);

		if (end > len)
			break;
		if (buf[off] == 22 && end > off + 5 && buf[off + 5] == 2)
			return end;
		off = end;
	}
	return 0;
}

static int io_send(WOLFSSL *ssl, char *buf, int sz, void *arg)
{
	struct tls_conn *c = arg;
	const uint8_t *data = (const uint8_t *)buf;
	size_t len = (size_t)sz, split = 0;

	/* The server speaks only once it has read the ClientHello, so by its
	 * first record the version is chosen: TLS 1.2 has a CCS of its own. */
	if (c->compat == COMPAT_WANTED) {
		if (wolfSSL_version(ssl) == TLS1_3_VERSION)
			split = after_server_hello(data, len);
		else
			c->compat = COMPAT_NONE;
	}
	if (split) {
		c->compat = COMPAT_NONE; /* once, after the first of HRR and ServerHello */
		if (output(c, data, split) < 0 || output(c, dummy_ccs, sizeof dummy_ccs) < 0)
			return WOLFSSL_CBIO_ERR_GENERAL;
		data += split;
		len -= split;
	}
	return output(c, data, len) < 0 ? WOLFSSL_CBIO_ERR_GENERAL : sz;
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, tls_output_fn out, void *out_arg)
{
	struct tls_conn *c = wolfSSL_Malloc(sizeof *c);

	if (!c)
		return NULL;
	memset(c, 0, sizeof *c);
	c->out = out;
	c->out_arg = out_arg;
	c->final = TLS_OK;
	c->ssl = wolfSSL_new(ctx->wctx);
	if (!c->ssl) {
		wolfSSL_Free(c);
		return NULL;
	}
	wolfSSL_SetIOReadCtx(c->ssl, c);
	wolfSSL_SetIOWriteCtx(c->ssl, c);
	return c;
}

void tls_conn_free(struct tls_conn *c)
{
	if (!c)
		return;
	explicit_bzero(c->exporter, sizeof c->exporter);
	wolfSSL_free(c->ssl);
	wolfSSL_Free(c->in);
	wolfSSL_Free(c->error);
	wolfSSL_Free(c);
}

int tls_conn_feed(struct tls_conn *c, const void *data, size_t len)
{
	if (len == 0)
		return 0;
	if (c->compat == COMPAT_PENDING)
		note_client_hello(c, data, len);
	if (len > TLS_MAX_BUFFERED || c->in_len - c->in_off > TLS_MAX_BUFFERED - len)
		return -ENOBUFS;
	if (c->in_cap - c->in_len < len && c->in_off > 0) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_cap - c->in_len < len) {
		size_t cap = c->in_cap ? c->in_cap : len;
		uint8_t *in;

		while (cap < c->in_len + len)
			cap *= 2;
		in = wolfSSL_Realloc(c->in, cap);
		if (!in)
			return -ENOMEM;
		c->in = in;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, data, len);
	c->in_len += len;
	return 0;
}

/* Record the first fatal error of C, in words: wolfSSL's reason, or the
 * alert the peer sent, or our own output failing. */
static void conn_fail(struct tls_conn *c, int code)
{
	WOLFSSL_ALERT_HISTORY alerts;
	char text[160];
	size_t len;

	c->final = TLS_ERROR;
	if (c->error)
		return;
	if (c->output_failed) {
		snprintf(text, sizeof text, "cannot queue output");
	} else if (code == FATAL_ERROR && wolfSSL_get_alert_history(c->ssl, &alerts) ==
						  WOLFSSL_SUCCESS &&
		   alerts.last_rx.level == alert_fatal) {
		snprintf(text, sizeof text, "received fatal alert: %s",
			 wolfSSL_alert_desc_string_long(alerts.last_rx.code));
	} else {
		wolfSSL_ERR_error_string_n((unsigned long)code, text, sizeof text);
	}
	len = strlen(text) + 1;
	c->error = wolfSSL_Malloc(len);
	if (c->error)
		memcpy(c->error, text, len);
}

enum tls_status tls_conn_handshake(struct tls_conn *c)
{
	int ret, code;

	if (c->final != TLS_OK)
		return c->final;
	if (c->done)
		return TLS_OK;
	ret = wolfSSL_accept(c->ssl);
	if (ret == WOLFSSL_SUCCESS) {
		c->done = true;
		return TLS_OK;
	}
	code = wolfSSL_get_error(c->ssl, ret);
	if (code == WOLFSSL_ERROR_WANT_READ && !c->output_failed)
		return TLS_WANT_READ;
	conn_fail(c, code);
	return TLS_ERROR;
}

bool tls_conn_handshake_done(const struct tls_conn *c)
{
	return c->done;
}

long tls_conn_read(struct tls_conn *c, void *buf, size_t cap, enum tls_status *st)
{
	size_t got = 0;
	enum tls_status hs;

	*st = TLS_OK;
	if (!c->done && (hs = tls_conn_handshake(c)) != TLS_OK) {
		*st = hs;
		return 0;
	}
	if (c->final != TLS_OK) {
		*st = c->final;
		return 0;
	}
	if (cap > LONG_MAX)
		cap = LONG_MAX;
	while (got < cap) {
		size_t want = cap - got < INT_MAX ? cap - got : INT_MAX;
		int n = wolfSSL_read(c->ssl, (char *)buf + got, (int)want), code;

		if (n > 0) {
			got += (size_t)n;
			continue;
		}
		code = wolfSSL_get_error(c->ssl, n);
		if (code == WOLFSSL_ERROR_WANT_READ && !c->output_failed)
			*st = TLS_WANT_READ;
		else if (code == WOLFSSL_ERROR_ZERO_RETURN)
			*st = c->final = TLS_CLOSED;
		else {
			conn_fail(c, code);
			*st = TLS_ERROR;
		}
		break;
	}
	if (got > 0) {
		/* Data first; CLOSED or ERROR (kept in c->final) comes with the
		 * next call. */
		*st = TLS_OK;
		return (long)got;
	}
	return 0;
}

int tls_conn_write(struct tls_conn *c, const void *data, size_t len)
{
	size_t off = 0;

	if (c->final == TLS_ERROR)
		return -EPIPE;
	if (!c->done)
		return -ENOTCONN;
	while (off < len) {
		size_t chunk = len - off < INT_MAX ? len - off : INT_MAX;
		int n = wolfSSL_write(c->ssl, (const char *)data + off, (int)chunk);

		if (n <= 0) {
			conn_fail(c, wolfSSL_get_error(c->ssl, n));
			return -EIO;
		}
		off += (size_t)n;
	}
	return 0;
}

void tls_conn_shutdown(struct tls_conn *c)
{
	if (c->final == TLS_ERROR || !c->done)
		return;
	/* We do not wait for the peer's close_notify: the caller closes the
	 * socket once its queue is flushed. */
	wolfSSL_shutdown(c->ssl);
}

/* RFC 9266 tls-exporter from wolfSSL's exporter secret, which lives in the
 * handshake arrays: only until tls_conn_trim() frees them. */
static int export_channel_binding(struct tls_conn *c, uint8_t out[32])
{
	static const char label[] = "EXPORTER-Channel-Binding";

	/* RFC 9266: over TLS 1.2 tls-exporter is only safe with the extended
	 * master secret, and wolfSSL 5.5.4 cannot tell us whether it was
	 * negotiated: no channel binding below TLS 1.3. */
	if (!c->done || wolfSSL_version(c->ssl) != TLS1_3_VERSION)
		return -1;
	if (wolfSSL_export_keying_material(c->ssl, out, 32, label, sizeof label - 1, NULL, 0,
					   0) != WOLFSSL_SUCCESS)
		return -1;
	return 0;
}

int tls_conn_exporter(struct tls_conn *c, uint8_t out[32])
{
	if (c->final == TLS_ERROR)
		return -1;
	if (c->have_exporter) {
		memcpy(out, c->exporter, sizeof c->exporter);
		return 0;
	}
	return c->trimmed ? -1 : export_channel_binding(c, out);
}

const char *tls_conn_version(const struct tls_conn *c)
{
	return wolfSSL_get_version(c->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
	return c->done ? wolfSSL_get_cipher_name(c->ssl) : "";
}

const char *tls_conn_error(const struct tls_conn *c)
{
	return c->error ? c->error : (c->final == TLS_ERROR ? "out of memory" : "");
}

/* Hand the pages wholly inside [P, P + LEN) that hold only zeros back to
 * the kernel. MADV_DONTNEED on private anonymous memory (every heap) makes a
 * page read as zeros again and fault in a fresh one on the next write: the
 * block's contents do not change, only whether the zeros take memory. */
static bool all_zero(const unsigned char *p, size_t len)
{
	/* pages are whole multiples of 4 KiB on every Linux architecture */
	static const unsigned char zeros[4096];

	for (size_t off = 0; off < len; off += sizeof zeros)
		if (memcmp(p + off, zeros, sizeof zeros) != 0)
			return false;
	return true;
}

static void release_zero_pages(void *p, size_t len)
{
	static size_t page;
	uintptr_t lo, hi, run = 0;

	if (!p)
		return;
	if (!page) {
		long sz = sysconf(_SC_PAGESIZE);
		if (sz <= 0 || sz % 4096 != 0)
			return;
		page = (size_t)sz;
	}
	lo = ((uintptr_t)p + page - 1) & ~(uintptr_t)(page - 1);
	hi = ((uintptr_t)p + len) & ~(uintptr_t)(page - 1);
	for (uintptr_t a = lo; a <= hi; a += page) {
		bool zero = a < hi && all_zero((const unsigned char *)a, page);

		if (zero && !run)
			run = a;
		if (!zero && run) {
			/* an error only means the zeros stay resident */
			(void)madvise((void *)run, a - run, MADV_DONTNEED);
			run = 0;
		}
	}
}

/* What an idle session keeps, and what this frees (measured with
 * bench/tls-memory, docs/benchmarks/tls-memory.md):
 *  - Debian's wolfSSL 5.5.4 is built for OpenVPN (WOLFSSL_OPENVPN), which
 *    makes every session keep its handshake arrays (about 5.5 KB: randoms,
 *    premaster buffer, the TLS 1.3 exporter secret) so that keying material
 *    can be exported at any time. The only thing we export is the 32-byte
 *    tls-exporter channel binding, so it is computed here, once, and the
 *    arrays go.
 *  - The session object is 37.5 KB, 37 KB of it room for two copies of a
 *    peer certificate chain (SESSION_CERTS, WOLFSSL_ALT_CERT_CHAINS), zeroed
 *    and never written by a server that asks for no client certificate: its
 *    pages of zeros are released.
 *  - With post-handshake authentication compiled in, wolfSSL keeps the TLS
 *    1.3 transcript hashes and cipher suites whatever we call; nothing in its
 *    API frees those. */
void tls_conn_trim(struct tls_conn *c)
{
	if (!c->done || c->trimmed || c->final == TLS_ERROR)
		return;
	c->have_exporter = export_channel_binding(c, c->exporter) == 0;
	wolfSSL_FreeArrays(c->ssl);
	wolfSSL_FreeHandshakeResources(c->ssl);
	if (session_size)
		release_zero_pages(wolfSSL_get_session(c->ssl), session_size);
	c->trimmed = true;
}
