/*
 * sasl: the server side of SASL for c2s (RFC 6120 section 6).
 *
 * Mechanisms: SCRAM-SHA-256-PLUS (channel binding tls-exporter, RFC 9266),
 * SCRAM-SHA-256 (RFC 7677), SCRAM-SHA-1 (RFC 5802), PLAIN (RFC 4616, only
 * offered inside TLS: the caller decides what to offer).
 *
 * Accounts store salted SCRAM keys only (struct scram_creds), never the
 * password; PLAIN is verified by deriving the keys from the offered password
 * with the stored salt and iteration count. For an unknown user SCRAM goes
 * through the whole exchange with a salt derived from the user name and a
 * per-process secret, and fails at the proof, so the exchange does not say
 * whether an account exists.
 *
 * All comparisons of keys and proofs are constant-time.
 */
#ifndef XMPPD_SASL_H
#define XMPPD_SASL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_SALT_LEN 16
#define SCRAM_DEFAULT_ITERATIONS 4096

struct scram_creds {
	uint32_t iterations;
	uint8_t salt[SCRAM_SALT_LEN];
	uint8_t stored_key_sha1[20];
	uint8_t server_key_sha1[20];
	uint8_t stored_key_sha256[32];
	uint8_t server_key_sha256[32];
};

/* Derive both key sets from PASSWORD with SALT and ITERATIONS.
 * Returns 0 or -EINVAL / -EIO. */
int scram_creds_derive(const char *password, size_t password_len, const uint8_t *salt,
		       uint32_t iterations, struct scram_creds *out);
/* Same with a fresh random salt. */
int scram_creds_new(const char *password, size_t password_len, uint32_t iterations,
		    struct scram_creds *out);

enum sasl_mech {
	SASL_MECH_NONE = 0,
	SASL_MECH_PLAIN,
	SASL_MECH_SCRAM_SHA1,
	SASL_MECH_SCRAM_SHA256,
	SASL_MECH_SCRAM_SHA256_PLUS,
};

enum sasl_result {
	SASL_CONTINUE = 0, /* send <challenge> with OUT */
	SASL_SUCCESS,      /* send <success> with OUT (additional data, may be empty) */
	SASL_FAILURE,      /* send <failure> with condition sasl_failure_condition() */
};

/* RFC 6120 6.5 failure conditions */
enum sasl_failure {
	SASL_FAIL_NONE = 0,
	SASL_FAIL_ABORTED,
	SASL_FAIL_INCORRECT_ENCODING,
	SASL_FAIL_INVALID_AUTHZID,
	SASL_FAIL_INVALID_MECHANISM,
	SASL_FAIL_MALFORMED_REQUEST,
	SASL_FAIL_MECHANISM_TOO_WEAK,
	SASL_FAIL_NOT_AUTHORIZED,
	SASL_FAIL_TEMPORARY_AUTH_FAILURE,
	SASL_FAIL_ENCRYPTION_REQUIRED,
};

/* Look up the credentials of USERNAME (the localpart, already SASLprep'd /
 * normalised by the caller's rules). Return 0 and fill OUT, -ENOENT when
 * there is no such account, other negative values for a temporary failure. */
typedef int (*sasl_lookup_fn)(void *arg, const char *username, struct scram_creds *out);

struct sasl_session {
	enum sasl_mech mech;
	int step;
	sasl_lookup_fn lookup;
	void *lookup_arg;
	const char *domain;          /* authzid, when given, must be USER@DOMAIN */
	uint8_t cb_data[64];         /* tls-exporter value (PLUS only) */
	size_t cb_len;
	bool cb_offered;             /* server offered -PLUS (for the 'y' flag check) */
	char username[1024];         /* authenticated localpart on success; after a
	                                failure, the name that was tried (for logs) */
	/* SCRAM state */
	bool user_exists;
	struct scram_creds creds;
	char client_first_bare[1024];
	char server_first[512];
	char gs2_header[256];
	char nonce[256];             /* client nonce + server nonce */
	enum sasl_failure failure;
};

/* Largest challenge or success data sasl_start()/sasl_step() write. */
#define SASL_OUT_MAX 512

enum sasl_mech sasl_mech_from_name(const char *name); /* SASL_MECH_NONE if unknown */
const char *sasl_mech_name(enum sasl_mech m);         /* NULL for SASL_MECH_NONE */
const char *sasl_failure_condition(enum sasl_failure f); /* "not-authorized" ... */

/* The secret from which unknown users' fake salts are made. Every process
 * must use the same one, or an unknown name gets a different salt from each
 * worker and so shows it does not exist: call this in the supervisor before
 * it forks (ideally with a secret kept in the data directory, so restarts
 * agree too). Without it each process draws a random secret at first use.
 * LEN >= 16. Returns 0 or -EINVAL / -EIO. */
int sasl_set_unknown_user_secret(const uint8_t *secret, size_t len);

/* Tests only: every later SCRAM exchange in this process uses NONCE as the
 * server's part of the nonce (NULL: random again), so the RFC 5802 and RFC
 * 7677 example exchanges can be replayed. Returns 0 or -EINVAL. */
int sasl_test_set_server_nonce(const char *nonce);

/* Begin MECH with the decoded initial response IN (may be empty; IN_PRESENT
 * tells "=" (empty) from absent). CB_DATA is the tls-exporter value for
 * -PLUS (NULL otherwise); CB_OFFERED says whether -PLUS was advertised.
 * OUT receives the (decoded) challenge or success data, *OUT_LEN its length. */
enum sasl_result sasl_start(struct sasl_session *s, enum sasl_mech mech,
			    sasl_lookup_fn lookup, void *lookup_arg, const char *domain,
			    const uint8_t *cb_data, size_t cb_len, bool cb_offered,
			    const uint8_t *in, size_t in_len, bool in_present,
			    uint8_t *out, size_t out_cap, size_t *out_len);
/* Continue with the client's decoded <response/>. */
enum sasl_result sasl_step(struct sasl_session *s, const uint8_t *in, size_t in_len,
			   uint8_t *out, size_t out_cap, size_t *out_len);
/* Wipe secrets. */
void sasl_session_clear(struct sasl_session *s);

/* SCRAM client side, for tests and the load generator.
 * scram_client_first(): writes "n,,n=USER,r=NONCE" (or the -PLUS gs2 header;
 * CB_DATA with a non-PLUS MECH means "could bind, but -PLUS was not offered"
 * and sends the 'y' flag). Returns the length written (NUL-terminated), or
 * -EINVAL / -ENOSPC / -EIO. */
struct scram_client {
	enum sasl_mech mech;
	char user[256];
	char password[256];
	char cnonce[64];
	char client_first_bare[512];
	char gs2_header[64];
	uint8_t cb_data[64];
	size_t cb_len;
	uint8_t server_signature[32];
	size_t sig_len;
};
int scram_client_first(struct scram_client *c, enum sasl_mech mech, const char *user,
		       const char *password, const uint8_t *cb_data, size_t cb_len,
		       char *out, size_t cap);
/* Same with a caller-chosen client nonce (printable, no ','): tests. */
int scram_client_first_with_nonce(struct scram_client *c, enum sasl_mech mech,
				  const char *user, const char *password,
				  const uint8_t *cb_data, size_t cb_len, const char *cnonce,
				  char *out, size_t cap);
/* Given server-first, write client-final. Returns length or negative
 * (-EPROTO: server-first malformed, not extending our nonce, or asking for
 * too many iterations). */
int scram_client_final(struct scram_client *c, const char *server_first, size_t len,
		       char *out, size_t cap);
/* Verify server-final ("v=..."). Returns 0 when the server proved itself,
 * -EACCES for a wrong signature or "e=...", -EPROTO when malformed. */
int scram_client_verify(struct scram_client *c, const char *server_final, size_t len);

/* Cached client keys (RFC 5802 section 5.1). ClientKey and ServerKey depend
 * only on the password, the hash, the salt and the iteration count, so a
 * client that logs in again with the same password may keep them and skip
 * PBKDF2, which costs as much as the rest of the exchange many times over.
 * A cache holds the keys of ONE password and keeps no trace of it, so it
 * cannot tell two passwords apart: keep one per account. Zero it before its
 * first use; wipe it (explicit_bzero) when done.
 *
 * scram_client_first_with_nonce(), scram_client_final(),
 * scram_client_final_cached() and scram_client_verify() use no process-wide
 * state, so threads may run them concurrently on their own structs;
 * scram_client_first() draws its nonce from the per-process DRBG and may not. */
#define SCRAM_CLIENT_KEYS_SALT_MAX 64
struct scram_client_keys {
	enum sasl_mech mech;  /* hash family: SCRAM_SHA1 or SCRAM_SHA256 (also for
				 -PLUS); SASL_MECH_NONE: empty */
	uint32_t iterations;
	size_t salt_len;
	uint8_t salt[SCRAM_CLIENT_KEYS_SALT_MAX];
	uint8_t client_key[32];
	uint8_t server_key[32];
};
/* scram_client_final() that takes ClientKey and ServerKey from KEYS when
 * KEYS holds them for this mechanism's hash and the salt and iteration count
 * of SERVER_FIRST; otherwise derives them and stores them in KEYS (a salt
 * longer than SCRAM_CLIENT_KEYS_SALT_MAX is derived every time and KEYS left
 * as it was). KEYS NULL: exactly scram_client_final(). Same return values. */
int scram_client_final_cached(struct scram_client *c, struct scram_client_keys *keys,
			      const char *server_first, size_t len, char *out, size_t cap);
/* RFC 5802 section 3: ClientKey = HMAC(SaltedPassword, "Client Key") and
 * ServerKey = HMAC(SaltedPassword, "Server Key") with MECH's hash; SALTED
 * and the outputs are that hash's length. 0, or -EINVAL / -EIO. */
int scram_keys_from_salted(enum sasl_mech mech, const uint8_t *salted, uint8_t *client_key,
			   uint8_t *server_key);

/* Base64 (RFC 4648, with padding; decoding refuses whitespace, junk and
 * non-canonical trailing bits). Return length written or -EINVAL / -ENOSPC.
 * Encoding also writes a terminating NUL (CAP must leave room for it). */
int base64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* Constant-time comparison of equal-length buffers: 0 when equal. */
int ct_memcmp(const void *a, const void *b, size_t len);

/* A SASL PLAIN message (RFC 4616) split in place: pointers into the input,
 * none NUL-terminated except that AUTHZID ends where AUTHCID begins. */
struct sasl_plain {
	const char *authzid, *authcid, *password;
	size_t authzid_len, authcid_len, password_len;
};
/* 0, or -EINVAL when IN is not "[authzid] NUL authcid NUL passwd" with a
 * non-empty authcid and password (or is longer than PLAIN allows). */
int sasl_plain_split(const uint8_t *in, size_t len, struct sasl_plain *out);
/* Take P's identity into S (S->username = authcid; S->domain set, as by
 * sasl_start): 0, -EINVAL when the name is too long, -EACCES when an
 * authzid other than authcid@domain is asked for. */
int sasl_plain_identity(struct sasl_session *s, const struct sasl_plain *p);

#endif
