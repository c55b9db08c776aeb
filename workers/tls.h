/*
 * tls: wolfSSL for the workers, with no socket of its own.
 *
 * A connection's TLS never touches a file descriptor: ciphertext received by
 * io_uring is handed in with tls_conn_feed(); wolfSSL's custom receive
 * callback reads from that pending slice, and its send callback hands
 * ciphertext to the caller's OUTPUT function (which appends to the
 * connection's send queue). So the io_uring loop stays the only place that
 * does I/O, and nothing blocks.
 *
 * Contexts are reference counted by wolfSSL: a reload builds a new context,
 * new handshakes use it, and sessions already open keep the old one until
 * they close.
 *
 * Versions: TLS 1.2 and 1.3 only. Groups: X25519 first, then P-256.
 * Ciphers: ChaCha20-Poly1305 first, then AES-GCM (AEAD only).
 */
#ifndef XMPPD_TLS_H
#define XMPPD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct tls_ctx;
struct tls_conn;

/* Called by wolfSSL (inside tls_conn_* calls) with ciphertext to send.
 * Return 0, or -1 when the bytes cannot be queued (the connection then fails). */
typedef int (*tls_output_fn)(void *arg, const void *data, size_t len);

int tls_global_init(void);

/* Build a server context from PEM files KEY and CERT (BUNDLE may be NULL or
 * "": intermediate chain / CA bundle appended to the served chain).
 * Checks that the key matches the certificate. On error returns NULL and a
 * message naming the file and the cause in ERR. */
struct tls_ctx *tls_ctx_load(const char *key, const char *cert, const char *bundle,
			     char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

struct tls_cert_info {
	time_t not_after;
	time_t not_before;
	char subject_cn[256];
	char sha256_fp[96];   /* "AB:CD:..." of the DER certificate */
	char sans[1024];      /* comma-separated DNS SANs */
};
/* Information about the leaf certificate in CTX. */
int tls_ctx_cert_info(const struct tls_ctx *ctx, struct tls_cert_info *out);
/* Same, straight from a PEM file (status, diagnose). 0 or -errno/-EINVAL. */
int tls_cert_file_info(const char *cert_path, struct tls_cert_info *out);

/* Make an ECDSA P-256 key and a self-signed certificate (valid 10 years)
 * whose SANs name DOMAIN and HOSTNAME; write them (mode 0600 for the key).
 * Returns 0 or -1 with ERR. */
int tls_make_self_signed(const char *key_path, const char *cert_path, const char *domain,
			 const char *hostname, char *err, size_t errlen);

/* Server-side connection. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, tls_output_fn out, void *out_arg);
void tls_conn_free(struct tls_conn *c);
/* Roughly what one trimmed TLS session holds on the heap (the WOLFSSL
 * object, its session, cipher state and our buffers): what freeing one
 * gives back, for the worker's heap accounting (worker_released). */
#define TLS_CONN_HEAP_ESTIMATE (24u * 1024)
/* Roughly what a server handshake allocates and frees again by the time
 * tls_conn_trim() is done (key shares, certificate messages, arrays). */
#define TLS_HANDSHAKE_HEAP_ESTIMATE (16u * 1024)

enum tls_status {
	TLS_OK = 0,       /* progress made / done */
	TLS_WANT_READ,    /* needs more ciphertext */
	TLS_CLOSED,       /* peer sent close_notify */
	TLS_ERROR,        /* fatal: close the connection */
};

/* Hand received ciphertext to the connection (it is consumed by the next
 * handshake/read calls; data not consumed yet stays buffered inside). */
int tls_conn_feed(struct tls_conn *c, const void *data, size_t len);
/* Drive the handshake. TLS_OK when complete. */
enum tls_status tls_conn_handshake(struct tls_conn *c);
bool tls_conn_handshake_done(const struct tls_conn *c);
/* Decrypt into BUF. Returns bytes (> 0), or 0 with *ST set (WANT_READ when
 * the fed ciphertext is used up, CLOSED, ERROR). */
long tls_conn_read(struct tls_conn *c, void *buf, size_t cap, enum tls_status *st);
/* Encrypt LEN bytes (all of them, or error): ciphertext goes to OUTPUT. */
int tls_conn_write(struct tls_conn *c, const void *data, size_t len);
/* Send close_notify. */
void tls_conn_shutdown(struct tls_conn *c);

/* RFC 9266 tls-exporter channel binding (32 bytes). 0 or -1. */
int tls_conn_exporter(struct tls_conn *c, uint8_t out[32]);
const char *tls_conn_version(const struct tls_conn *c);   /* "TLSv1.3" */
const char *tls_conn_cipher(const struct tls_conn *c);
const char *tls_conn_error(const struct tls_conn *c);      /* last error text */

/* Call once the handshake is done: frees what the session no longer needs
 * (about 40 KB of a 60 KB TLS 1.3 session) and keeps the tls-exporter value,
 * which tls_conn_exporter() then returns. Calling it again does nothing. */
void tls_conn_trim(struct tls_conn *c);

#endif
