/*
 * sasl: SCRAM (RFC 5802, RFC 7677; tls-exporter binding from RFC 9266) and
 * PLAIN (RFC 4616) for c2s, plus a SCRAM client for tests and the load
 * generator. This file depends on wolfCrypt only, so bench/ can link it alone.
 *
 * Parsing is strict on purpose: every message is split on ',' into the
 * attributes RFC 5802 section 7 allows, in its order, and anything else is a
 * malformed-request. Messages never contain NUL, so a NUL anywhere is refused
 * before C strings are made of the parts.
 *
 * Failure conditions (RFC 6120 6.5): syntax errors are malformed-request; a
 * wrong proof, nonce or channel binding, an unsupported channel-binding type
 * and a 'y' flag while -PLUS was offered (a downgrade: RFC 5802 section 6)
 * are not-authorized; an authzid other than USER@DOMAIN is invalid-authzid; a
 * lookup that fails for another reason than "no such account" is
 * temporary-auth-failure.
 *
 * Unknown users get the same exchange as known ones: a salt made from
 * HMAC(secret, username), the default iteration count, and a failure at the
 * proof step. The secret must be the same in every worker, or two logins for
 * one unknown name would see two salts; it is therefore NOT renewed after
 * fork (unlike the DRBG below) and the supervisor should set it before it
 * forks (sasl_set_unknown_user_secret()).
 *
 * Randomness: one wolfCrypt DRBG per process, created at first use and again
 * whenever getpid() changes, because a forked child holding a copy of its
 * parent's DRBG state would produce the same nonces and salts as the parent.
 *
 * Passwords are used as the bytes given, without SASLprep: identical for
 * ASCII passwords, and the same rule applies at account creation and login.
 *
 * Not thread-safe (the DRBG and the secret are per process, unlocked): every
 * xmppd process runs its SASL code on one thread. The client functions other
 * than scram_client_first() touch neither, so the load generator's threads
 * may share them.
 *
 * Client key cache: RFC 5802 section 5.1 lets a client keep ClientKey and
 * ServerKey, which depend only on the password, hash, salt and iteration
 * count. The cache is matched on all of those but the password, which it
 * does not keep, so the caller holds one per password.
 */
#include "workers/sasl.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <wolfssl/options.h>
#include <wolfssl/wolfcrypt/hash.h>
#include <wolfssl/wolfcrypt/hmac.h>
#include <wolfssl/wolfcrypt/pwdbased.h>
#include <wolfssl/wolfcrypt/random.h>
#include <wolfssl/wolfcrypt/sha.h>
#include <wolfssl/wolfcrypt/sha256.h>

#define SCRAM_HASH_MAX 32
#define B64_LEN(n) (((n) + 2) / 3 * 4) /* encoded length, without the NUL */
#define SCRAM_NONCE_RAW 18           /* random bytes: 24 base64 characters */
#define SCRAM_MSG_MAX 2048           /* longest client message accepted */
#define SCRAM_CLIENT_SALT_MAX 128    /* longest salt the client accepts */
#define SCRAM_CLIENT_MAX_ITERATIONS 1000000u /* a server cannot stall the client */
#define PLAIN_MSG_MAX 3072

static_assert(sizeof(((struct sasl_session *)0)->server_first) <= SASL_OUT_MAX,
	      "a challenge must fit SASL_OUT_MAX");
static_assert(sizeof(((struct scram_client_keys *)0)->client_key) >= SCRAM_HASH_MAX &&
	      sizeof(((struct scram_client_keys *)0)->server_key) >= SCRAM_HASH_MAX,
	      "a cached key must hold the longest hash");

/* ---- primitives ------------------------------------------------------- */

int ct_memcmp(const void *a, const void *b, size_t len)
{
	/* volatile: the loop must not stop at the first difference */
	const volatile uint8_t *x = a, *y = b;
	uint8_t diff = 0;

	for (size_t i = 0; i < len; i++)
		diff |= x[i] ^ y[i];
	return diff;
}

static const char b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int base64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
	if (len > (size_t)INT_MAX / 4 * 3 - 2 || (len && !in))
		return -EINVAL;
	size_t need = B64_LEN(len);
	if (!out || cap < need + 1)
		return -ENOSPC;

	char *o = out;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = b64_alphabet[v >> 6 & 63];
		*o++ = b64_alphabet[v & 63];
	}
	if (i < len) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < len)
			v |= (uint32_t)in[i + 1] << 8;
		*o++ = b64_alphabet[v >> 18 & 63];
		*o++ = b64_alphabet[v >> 12 & 63];
		*o++ = i + 1 < len ? b64_alphabet[v >> 6 & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return (int)need;
}

static int b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Canonical encodings only: padding exactly where RFC 4648 puts it and zero
 * bits in the unused low bits, so every value has one accepted spelling. */
int base64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
	if (len % 4 || len > INT_MAX || (len && !in))
		return -EINVAL;
	size_t pad = 0;
	if (len && in[len - 1] == '=')
		pad = in[len - 2] == '=' ? 2 : 1;
	size_t out_len = len / 4 * 3 - pad;
	if (out_len > cap || (out_len && !out))
		return -ENOSPC;

	size_t o = 0;
	for (size_t i = 0; i < len; i += 4) {
		bool last = i + 4 == len;
		int v[4];
		for (size_t k = 0; k < 4; k++) {
			v[k] = b64_value(in[i + k]);
			if (v[k] < 0 && !(last && k >= 4 - pad))
				return -EINVAL;
		}
		uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12;
		if (last && pad == 2) {
			if (v[1] & 0x0f)
				return -EINVAL;
			out[o++] = (uint8_t)(bits >> 16);
			break;
		}
		bits |= (uint32_t)v[2] << 6;
		if (last && pad == 1) {
			if (v[2] & 0x03)
				return -EINVAL;
			out[o++] = (uint8_t)(bits >> 16);
			out[o++] = (uint8_t)(bits >> 8);
			break;
		}
		bits |= (uint32_t)v[3];
		out[o++] = (uint8_t)(bits >> 16);
		out[o++] = (uint8_t)(bits >> 8);
		out[o++] = (uint8_t)bits;
	}
	return (int)o;
}

static WC_RNG rng;
static pid_t rng_pid; /* owner of RNG's state; 0 before the first use */

static int random_bytes(uint8_t *buf, size_t len)
{
	pid_t pid = getpid();

	if (rng_pid != pid) {
		if (rng_pid != 0)
			wc_FreeRng(&rng); /* our copy of the parent's state */
		rng_pid = 0;
		if (wc_InitRng(&rng) != 0)
			return -EIO;
		rng_pid = pid;
	}
	if (len > UINT32_MAX || wc_RNG_GenerateBlock(&rng, buf, (word32)len) != 0)
		return -EIO;
	return 0;
}

struct scram_hash {
	int type; /* WC_SHA or WC_SHA256 */
	size_t len;
};

static const struct scram_hash hash_sha1 = { WC_SHA, WC_SHA_DIGEST_SIZE };
static const struct scram_hash hash_sha256 = { WC_SHA256, WC_SHA256_DIGEST_SIZE };

static const struct scram_hash *mech_hash(enum sasl_mech m)
{
	switch (m) {
	case SASL_MECH_SCRAM_SHA1:
		return &hash_sha1;
	case SASL_MECH_SCRAM_SHA256:
	case SASL_MECH_SCRAM_SHA256_PLUS:
		return &hash_sha256;
	default:
		return NULL;
	}
}

static int digest(const struct scram_hash *h, const uint8_t *in, size_t len, uint8_t *out)
{
	int rc = h->type == WC_SHA ? wc_ShaHash(in, (word32)len, out)
				   : wc_Sha256Hash(in, (word32)len, out);
	return rc ? -EIO : 0;
}

struct part {
	const void *p;
	size_t len;
};

/* HMAC over the concatenation of PARTS (so AuthMessage is never copied). */
static int hmac_parts(const struct scram_hash *h, const uint8_t *key, size_t key_len,
		      const struct part *parts, size_t nparts, uint8_t *out)
{
	Hmac mac;
	int rc = -EIO;

	if (wc_HmacInit(&mac, NULL, INVALID_DEVID) != 0)
		return -EIO;
	if (wc_HmacSetKey(&mac, h->type, key, (word32)key_len) != 0)
		goto out;
	for (size_t i = 0; i < nparts; i++)
		if (parts[i].len && wc_HmacUpdate(&mac, parts[i].p, (word32)parts[i].len) != 0)
			goto out;
	if (wc_HmacFinal(&mac, out) != 0)
		goto out;
	rc = 0;
out:
	wc_HmacFree(&mac);
	explicit_bzero(&mac, sizeof mac);
	return rc;
}

static int hmac_str(const struct scram_hash *h, const uint8_t *key, const char *s, uint8_t *out)
{
	struct part p = { s, strlen(s) };
	return hmac_parts(h, key, h->len, &p, 1, out);
}

/* One SHA-1 or SHA-256 computation in progress. */
union hash_state {
	wc_Sha sha1;
	wc_Sha256 sha256;
};

static int hs_init(const struct scram_hash *h, union hash_state *st)
{
	return h->type == WC_SHA ? wc_InitSha(&st->sha1) : wc_InitSha256(&st->sha256);
}

static int hs_update(const struct scram_hash *h, union hash_state *st, const uint8_t *in,
		     size_t len)
{
	return h->type == WC_SHA ? wc_ShaUpdate(&st->sha1, in, (word32)len)
				 : wc_Sha256Update(&st->sha256, in, (word32)len);
}

static int hs_final(const struct scram_hash *h, union hash_state *st, uint8_t *out)
{
	return h->type == WC_SHA ? wc_ShaFinal(&st->sha1, out) : wc_Sha256Final(&st->sha256, out);
}

static int hs_copy(const struct scram_hash *h, union hash_state *src, union hash_state *dst)
{
	return h->type == WC_SHA ? wc_ShaCopy(&src->sha1, &dst->sha1)
				 : wc_Sha256Copy(&src->sha256, &dst->sha256);
}

static void hs_free(const struct scram_hash *h, union hash_state *st)
{
	if (h->type == WC_SHA)
		wc_ShaFree(&st->sha1);
	else
		wc_Sha256Free(&st->sha256);
	explicit_bzero(st, sizeof *st);
}

/* PBKDF2-HMAC (RFC 8018 5.2) for one block of output (DK_LEN == hash
 * length, all SCRAM needs): the hash states after the key's inner and outer
 * pad are computed once and copied for each of the ITERATIONS HMACs, so an
 * iteration costs two compression-function calls where wc_PBKDF2, which
 * keys a fresh HMAC each time, spends four. Both key sets at 4096
 * iterations: 9.0 instead of 16.9 ms here (tests/unit/test_scram.c checks
 * the two agree and prints both); a PLAIN login, which runs the SHA-256 one
 * inside the worker's loop, 8.5 instead of 14.5 ms (p50, one at a time). */
static int pbkdf2(const struct scram_hash *h, const uint8_t *password, size_t password_len,
		  const uint8_t *salt, size_t salt_len, uint32_t iterations, uint8_t *out)
{
	enum { BLOCK = 64 }; /* SHA-1 and SHA-256 block size */
	uint8_t key[BLOCK] = { 0 }, pad[BLOCK], u[SCRAM_HASH_MAX], t[SCRAM_HASH_MAX];
	static const uint8_t block_one[4] = { 0, 0, 0, 1 };
	union hash_state inner0, outer0, st;
	int rc = -EIO;
	bool have_inner = false, have_outer = false, have_st = false;

	if (password_len > BLOCK) {
		if (digest(h, password, password_len, key) < 0)
			goto out;
	} else if (password_len) {
		memcpy(key, password, password_len);
	}
	for (size_t i = 0; i < BLOCK; i++)
		pad[i] = key[i] ^ 0x36;
	if (hs_init(h, &inner0) || (have_inner = true, hs_update(h, &inner0, pad, BLOCK)))
		goto out;
	for (size_t i = 0; i < BLOCK; i++)
		pad[i] = key[i] ^ 0x5c;
	if (hs_init(h, &outer0) || (have_outer = true, hs_update(h, &outer0, pad, BLOCK)))
		goto out;
	if (hs_init(h, &st))
		goto out;
	have_st = true;
	/* U1 = HMAC(P, S || INT(1)); Uj = HMAC(P, Uj-1); out = U1 ^ ... ^ Uc */
	if (hs_copy(h, &inner0, &st) || hs_update(h, &st, salt, salt_len) ||
	    hs_update(h, &st, block_one, sizeof block_one) || hs_final(h, &st, t) ||
	    hs_copy(h, &outer0, &st) || hs_update(h, &st, t, h->len) || hs_final(h, &st, u))
		goto out;
	memcpy(out, u, h->len);
	for (uint32_t j = 1; j < iterations; j++) {
		if (hs_copy(h, &inner0, &st) || hs_update(h, &st, u, h->len) ||
		    hs_final(h, &st, t) || hs_copy(h, &outer0, &st) ||
		    hs_update(h, &st, t, h->len) || hs_final(h, &st, u))
			goto out;
		for (size_t i = 0; i < h->len; i++)
			out[i] ^= u[i];
	}
	rc = 0;
out:
	if (have_inner)
		hs_free(h, &inner0);
	if (have_outer)
		hs_free(h, &outer0);
	if (have_st)
		hs_free(h, &st);
	explicit_bzero(key, sizeof key);
	explicit_bzero(pad, sizeof pad);
	explicit_bzero(u, sizeof u);
	explicit_bzero(t, sizeof t);
	if (rc < 0)
		explicit_bzero(out, h->len);
	return rc;
}

/* RFC 5802 section 3: SaltedPassword = Hi(password, salt, i),
 * ClientKey = HMAC(SaltedPassword, "Client Key"), StoredKey = H(ClientKey),
 * ServerKey = HMAC(SaltedPassword, "Server Key"). CLIENT_KEY may be NULL. */
static int salted_keys(const struct scram_hash *h, const uint8_t *salted, uint8_t *client_key,
		       uint8_t *stored_key, uint8_t *server_key)
{
	uint8_t ckey[SCRAM_HASH_MAX];
	int rc;

	if ((rc = hmac_str(h, salted, "Client Key", ckey)) == 0 &&
	    (!stored_key || (rc = digest(h, ckey, h->len, stored_key)) == 0) &&
	    (rc = hmac_str(h, salted, "Server Key", server_key)) == 0 && client_key)
		memcpy(client_key, ckey, h->len);
	explicit_bzero(ckey, sizeof ckey);
	return rc;
}

int scram_keys_from_salted(enum sasl_mech mech, const uint8_t *salted, uint8_t *client_key,
			   uint8_t *server_key)
{
	const struct scram_hash *h = mech_hash(mech);
	return h ? salted_keys(h, salted, client_key, NULL, server_key) : -EINVAL;
}

static int scram_keys(const struct scram_hash *h, const char *password, size_t password_len,
		      const uint8_t *salt, size_t salt_len, uint32_t iterations,
		      uint8_t *client_key, uint8_t *stored_key, uint8_t *server_key)
{
	uint8_t salted[SCRAM_HASH_MAX];
	int rc = -EINVAL;

	if (!password || password_len == 0 || password_len > INT_MAX || !salt || salt_len == 0 ||
	    salt_len > INT_MAX || iterations == 0 || iterations > INT_MAX)
		return rc;
	if ((rc = pbkdf2(h, (const uint8_t *)password, password_len, salt, salt_len, iterations,
			 salted)) == 0)
		rc = salted_keys(h, salted, client_key, stored_key, server_key);
	explicit_bzero(salted, sizeof salted);
	return rc;
}

int scram_creds_derive(const char *password, size_t password_len, const uint8_t *salt,
		       uint32_t iterations, struct scram_creds *out)
{
	int rc;

	if (!out)
		return -EINVAL;
	memset(out, 0, sizeof *out);
	if (!salt)
		return -EINVAL;
	rc = scram_keys(&hash_sha1, password, password_len, salt, SCRAM_SALT_LEN, iterations,
			NULL, out->stored_key_sha1, out->server_key_sha1);
	if (rc == 0)
		rc = scram_keys(&hash_sha256, password, password_len, salt, SCRAM_SALT_LEN,
				iterations, NULL, out->stored_key_sha256, out->server_key_sha256);
	if (rc < 0) {
		explicit_bzero(out, sizeof *out);
		return rc;
	}
	out->iterations = iterations;
	memcpy(out->salt, salt, SCRAM_SALT_LEN);
	return 0;
}

int scram_creds_new(const char *password, size_t password_len, uint32_t iterations,
		    struct scram_creds *out)
{
	uint8_t salt[SCRAM_SALT_LEN];

	if (!out)
		return -EINVAL;
	if (random_bytes(salt, sizeof salt) < 0) {
		memset(out, 0, sizeof *out);
		return -EIO;
	}
	return scram_creds_derive(password, password_len, salt, iterations, out);
}

/* ---- text helpers ------------------------------------------------------ */

struct span {
	const char *p;
	size_t len;
};

/* Successive ','-separated fields of a message; "" yields one empty field. */
struct fields {
	const char *p, *end;
	bool done;
};

static struct fields fields_of(const char *p, size_t len)
{
	return (struct fields){ p, p + len, false };
}

static bool next_field(struct fields *f, struct span *out)
{
	if (f->done)
		return false;
	const char *comma = memchr(f->p, ',', (size_t)(f->end - f->p));
	const char *stop = comma ? comma : f->end;
	*out = (struct span){ f->p, (size_t)(stop - f->p) };
	if (comma)
		f->p = comma + 1;
	else
		f->done = true;
	return true;
}

static bool span_is(struct span s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && memcmp(s.p, lit, n) == 0;
}

/* "X=value" with a non-empty value: *VALUE gets the value. */
static bool attr(struct span f, char name, struct span *value)
{
	if (f.len < 3 || f.p[0] != name || f.p[1] != '=')
		return false;
	*value = (struct span){ f.p + 2, f.len - 2 };
	return true;
}

/* RFC 5802 extensions: a letter SCRAM does not define, '=', a value. */
static bool is_extension(struct span f)
{
	char c = f.len ? f.p[0] : 0;
	bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
	return f.len >= 3 && alpha && !strchr("acemnprsiv", c) && f.p[1] == '=';
}

/* printable except ',' (RFC 5802 "printable") */
static bool nonce_valid(struct span s)
{
	if (s.len == 0)
		return false;
	for (size_t i = 0; i < s.len; i++)
		if (s.p[i] < 0x21 || s.p[i] > 0x7e || s.p[i] == ',')
			return false;
	return true;
}

/* saslname: "=2C" is ',' and "=3D" is '='; any other '=' is an error. */
static int saslname_decode(struct span in, char *out, size_t cap)
{
	size_t o = 0;

	if (in.len == 0)
		return -EINVAL;
	for (size_t i = 0; i < in.len; i++) {
		char c = in.p[i];
		if (c == '=') {
			if (in.len - i < 3)
				return -EINVAL;
			if (in.p[i + 1] == '2' && in.p[i + 2] == 'C')
				c = ',';
			else if (in.p[i + 1] == '3' && in.p[i + 2] == 'D')
				c = '=';
			else
				return -EINVAL;
			i += 2;
		}
		if (o + 1 >= cap)
			return -ENAMETOOLONG;
		out[o++] = c;
	}
	out[o] = '\0';
	return 0;
}

/* Appending writer into a fixed buffer, always NUL-terminated; remembers
 * overflow so a message is built with one check at the end. */
struct strbuf {
	char *p;
	size_t cap, len;
	bool overflow;
};

static void sb_put(struct strbuf *b, const void *data, size_t len)
{
	if (b->overflow || b->cap - b->len <= len) {
		b->overflow = true;
		return;
	}
	memcpy(b->p + b->len, data, len);
	b->len += len;
	b->p[b->len] = '\0';
}

static void sb_puts(struct strbuf *b, const char *s)
{
	sb_put(b, s, strlen(s));
}

static void sb_put_b64(struct strbuf *b, const uint8_t *data, size_t len)
{
	if (b->overflow || B64_LEN(len) >= b->cap - b->len) {
		b->overflow = true;
		return;
	}
	b->len += (size_t)base64_encode(data, len, b->p + b->len, b->cap - b->len);
}

static bool ascii_equal_nocase(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char x = *a >= 'A' && *a <= 'Z' ? (char)(*a + 32) : *a;
		char y = *b >= 'A' && *b <= 'Z' ? (char)(*b + 32) : *b;
		if (x != y)
			return false;
	}
	return *a == *b;
}

/* ---- names --------------------------------------------------------------- */

static const char *const mech_names[] = {
	[SASL_MECH_PLAIN] = "PLAIN",
	[SASL_MECH_SCRAM_SHA1] = "SCRAM-SHA-1",
	[SASL_MECH_SCRAM_SHA256] = "SCRAM-SHA-256",
	[SASL_MECH_SCRAM_SHA256_PLUS] = "SCRAM-SHA-256-PLUS",
};

enum sasl_mech sasl_mech_from_name(const char *name)
{
	if (!name)
		return SASL_MECH_NONE;
	for (size_t m = 1; m < sizeof mech_names / sizeof mech_names[0]; m++)
		if (strcmp(name, mech_names[m]) == 0)
			return (enum sasl_mech)m;
	return SASL_MECH_NONE;
}

const char *sasl_mech_name(enum sasl_mech m)
{
	if ((size_t)m == 0 || (size_t)m >= sizeof mech_names / sizeof mech_names[0])
		return NULL;
	return mech_names[m];
}

const char *sasl_failure_condition(enum sasl_failure f)
{
	switch (f) {
	case SASL_FAIL_ABORTED:
		return "aborted";
	case SASL_FAIL_INCORRECT_ENCODING:
		return "incorrect-encoding";
	case SASL_FAIL_INVALID_AUTHZID:
		return "invalid-authzid";
	case SASL_FAIL_INVALID_MECHANISM:
		return "invalid-mechanism";
	case SASL_FAIL_MALFORMED_REQUEST:
		return "malformed-request";
	case SASL_FAIL_MECHANISM_TOO_WEAK:
		return "mechanism-too-weak";
	case SASL_FAIL_TEMPORARY_AUTH_FAILURE:
		return "temporary-auth-failure";
	case SASL_FAIL_ENCRYPTION_REQUIRED:
		return "encryption-required";
	case SASL_FAIL_NOT_AUTHORIZED:
	case SASL_FAIL_NONE:
	default:
		return "not-authorized";
	}
}

/* ---- server -------------------------------------------------------------- */

enum {
	STEP_DONE = 0,
	STEP_PLAIN,
	STEP_CLIENT_FIRST,
	STEP_CLIENT_FINAL,
};

static uint8_t unknown_user_key[32];
static bool unknown_user_key_set;
static char fixed_server_nonce[128]; /* tests only; "" means random */

int sasl_set_unknown_user_secret(const uint8_t *secret, size_t len)
{
	if (!secret || len < 16 || len > UINT32_MAX)
		return -EINVAL;
	/* hashed so any length gives a full-size HMAC key */
	if (wc_Sha256Hash(secret, (word32)len, unknown_user_key) != 0)
		return -EIO;
	unknown_user_key_set = true;
	return 0;
}

int sasl_test_set_server_nonce(const char *nonce)
{
	if (!nonce) {
		fixed_server_nonce[0] = '\0';
		return 0;
	}
	struct span s = { nonce, strlen(nonce) };
	if (!nonce_valid(s) || s.len >= sizeof fixed_server_nonce)
		return -EINVAL;
	memcpy(fixed_server_nonce, nonce, s.len + 1);
	return 0;
}

/* Credentials for a user that does not exist: a stable salt per name, keys
 * that no proof matches (the caller also checks user_exists). */
static int fake_creds(const char *username, struct scram_creds *out)
{
	uint8_t mac[WC_SHA256_DIGEST_SIZE];
	struct part p = { username, strlen(username) };

	memset(out, 0, sizeof *out);
	if (!unknown_user_key_set) {
		if (random_bytes(unknown_user_key, sizeof unknown_user_key) < 0)
			return -EIO;
		unknown_user_key_set = true;
	}
	if (hmac_parts(&hash_sha256, unknown_user_key, sizeof unknown_user_key, &p, 1, mac) < 0)
		return -EIO;
	memcpy(out->salt, mac, SCRAM_SALT_LEN);
	out->iterations = SCRAM_DEFAULT_ITERATIONS;
	explicit_bzero(mac, sizeof mac);
	return 0;
}

/* Out of line: GCC 12 with ASan misreads an inlined wipe of s->creds as a
 * 124-byte write into its first member (-Wstringop-overflow). */
static __attribute__((noinline)) void wipe_creds(struct sasl_session *s)
{
	explicit_bzero(&s->creds, sizeof s->creds);
}

static enum sasl_result finish_failure(struct sasl_session *s, enum sasl_failure why)
{
	s->failure = why;
	s->step = STEP_DONE;
	s->user_exists = false;
	wipe_creds(s);
	/* s->username stays: the name the client tried, for the log line */
	return SASL_FAILURE;
}

/* Fetch S->username's credentials into S->creds (fake ones for an unknown
 * user). -EINVAL from the lookup (a name the account rules refuse) counts as
 * unknown too. Returns SASL_FAIL_NONE or the failure to report. */
static enum sasl_failure load_creds(struct sasl_session *s)
{
	int rc = s->lookup(s->lookup_arg, s->username, &s->creds);

	if (rc == 0 && s->creds.iterations > 0) {
		s->user_exists = true;
		return SASL_FAIL_NONE;
	}
	if (rc == -ENOENT || rc == -EINVAL) {
		s->user_exists = false;
		return fake_creds(s->username, &s->creds) < 0 ? SASL_FAIL_TEMPORARY_AUTH_FAILURE
							      : SASL_FAIL_NONE;
	}
	return SASL_FAIL_TEMPORARY_AUTH_FAILURE; /* lookup error or a record without keys */
}

static bool authzid_allowed(const struct sasl_session *s, const char *authzid)
{
	char self[sizeof s->username + 1 + 1024];

	if (!s->domain)
		return false;
	int n = snprintf(self, sizeof self, "%s@%s", s->username, s->domain);
	return n > 0 && (size_t)n < sizeof self && ascii_equal_nocase(authzid, self);
}

int sasl_plain_split(const uint8_t *in, size_t len, struct sasl_plain *out)
{
	const char *msg = (const char *)in;

	if (len == 0 || len > PLAIN_MSG_MAX)
		return -EINVAL;
	/* [authzid] NUL authcid NUL passwd, none of them containing NUL */
	const char *nul1 = memchr(msg, 0, len);
	const char *nul2 = nul1 ? memchr(nul1 + 1, 0, len - (size_t)(nul1 + 1 - msg)) : NULL;
	if (!nul2 || memchr(nul2 + 1, 0, len - (size_t)(nul2 + 1 - msg)))
		return -EINVAL;
	out->authzid = msg;
	out->authzid_len = (size_t)(nul1 - msg);
	out->authcid = nul1 + 1;
	out->authcid_len = (size_t)(nul2 - nul1 - 1);
	out->password = nul2 + 1;
	out->password_len = len - (size_t)(out->password - msg);
	if (out->authcid_len == 0 || out->password_len == 0)
		return -EINVAL;
	return 0;
}

int sasl_plain_identity(struct sasl_session *s, const struct sasl_plain *p)
{
	if (p->authcid_len >= sizeof s->username)
		return -EINVAL;
	memcpy(s->username, p->authcid, p->authcid_len);
	s->username[p->authcid_len] = '\0';
	/* the authzid is NUL-terminated where the authcid begins */
	if (p->authzid_len && !authzid_allowed(s, p->authzid))
		return -EACCES;
	return 0;
}

static enum sasl_result plain_in(struct sasl_session *s, const uint8_t *in, size_t len)
{
	uint8_t stored[WC_SHA256_DIGEST_SIZE], server[WC_SHA256_DIGEST_SIZE];
	enum sasl_failure why = SASL_FAIL_MALFORMED_REQUEST;
	struct sasl_plain p;
	int rc;

	if (sasl_plain_split(in, len, &p) < 0)
		goto out;
	if ((rc = sasl_plain_identity(s, &p)) < 0) {
		if (rc == -EACCES)
			why = SASL_FAIL_INVALID_AUTHZID;
		goto out;
	}
	if ((why = load_creds(s)) != SASL_FAIL_NONE)
		goto out;
	/* derive even for an unknown user: the same work either way */
	why = SASL_FAIL_TEMPORARY_AUTH_FAILURE;
	if (scram_keys(&hash_sha256, p.password, p.password_len, s->creds.salt, SCRAM_SALT_LEN,
		       s->creds.iterations, NULL, stored, server) < 0)
		goto out;
	bool ok = (ct_memcmp(stored, s->creds.stored_key_sha256, sizeof stored) == 0) &
		  s->user_exists;
	if (!ok) {
		why = SASL_FAIL_NOT_AUTHORIZED;
		goto out;
	}
	s->step = STEP_DONE;
	wipe_creds(s);
	why = SASL_FAIL_NONE;
out:
	explicit_bzero(stored, sizeof stored);
	explicit_bzero(server, sizeof server);
	return why == SASL_FAIL_NONE ? SASL_SUCCESS : finish_failure(s, why);
}

static enum sasl_result scram_client_first_in(struct sasl_session *s, const uint8_t *in,
					      size_t len, uint8_t *out, size_t out_cap,
					      size_t *out_len)
{
	const char *msg = (const char *)in;
	enum sasl_failure why = SASL_FAIL_MALFORMED_REQUEST;
	struct span flag, authz, fld, v, cnonce;
	char authzid[sizeof s->username];

	if (len == 0 || len > SCRAM_MSG_MAX || memchr(msg, 0, len))
		goto fail;

	/* gs2-header: cbind-flag "," [authzid] "," */
	struct fields f = fields_of(msg, len);
	if (!next_field(&f, &flag) || !next_field(&f, &authz) || f.done)
		goto fail;
	bool plus = s->mech == SASL_MECH_SCRAM_SHA256_PLUS;
	if (attr(flag, 'p', &v)) {
		if (!plus)
			goto fail; /* a binding asked for in a mechanism without one */
		if (!span_is(v, "tls-exporter")) {
			why = SASL_FAIL_NOT_AUTHORIZED;
			goto fail;
		}
	} else if (span_is(flag, "n") || span_is(flag, "y")) {
		if (plus)
			goto fail; /* -PLUS chosen but no binding sent */
		if (flag.p[0] == 'y' && s->cb_offered) {
			why = SASL_FAIL_NOT_AUTHORIZED; /* RFC 5802 s.6: downgrade */
			goto fail;
		}
	} else {
		goto fail;
	}
	authzid[0] = '\0';
	if (authz.len && (!attr(authz, 'a', &v) || saslname_decode(v, authzid, sizeof authzid)))
		goto fail;
	size_t gs2_len = (size_t)(f.p - msg);
	size_t bare_len = len - gs2_len;
	if (gs2_len >= sizeof s->gs2_header || bare_len >= sizeof s->client_first_bare)
		goto fail;
	memcpy(s->gs2_header, msg, gs2_len);
	s->gs2_header[gs2_len] = '\0';
	memcpy(s->client_first_bare, f.p, bare_len);
	s->client_first_bare[bare_len] = '\0';

	/* client-first-bare: [reserved-mext ","] username "," nonce ["," extensions] */
	struct fields b = fields_of(s->client_first_bare, bare_len);
	if (!next_field(&b, &fld) || !attr(fld, 'n', &v) ||
	    saslname_decode(v, s->username, sizeof s->username))
		goto fail; /* also a leading "m=": no mandatory extension is supported */
	if (!next_field(&b, &fld) || !attr(fld, 'r', &cnonce) || !nonce_valid(cnonce))
		goto fail;
	while (next_field(&b, &fld))
		if (!is_extension(fld))
			goto fail;
	if (authzid[0] && !authzid_allowed(s, authzid)) {
		why = SASL_FAIL_INVALID_AUTHZID;
		goto fail;
	}

	if ((why = load_creds(s)) != SASL_FAIL_NONE)
		goto fail;

	const char *snonce = fixed_server_nonce;
	char fresh[B64_LEN(SCRAM_NONCE_RAW) + 1];
	if (!snonce[0]) {
		uint8_t raw[SCRAM_NONCE_RAW];
		why = SASL_FAIL_TEMPORARY_AUTH_FAILURE;
		if (random_bytes(raw, sizeof raw) < 0)
			goto fail;
		base64_encode(raw, sizeof raw, fresh, sizeof fresh);
		snonce = fresh;
	}
	struct strbuf nb = { s->nonce, sizeof s->nonce, 0, false };
	sb_put(&nb, cnonce.p, cnonce.len);
	sb_puts(&nb, snonce);

	struct strbuf sf = { s->server_first, sizeof s->server_first, 0, false };
	char iterations[16];
	snprintf(iterations, sizeof iterations, "%u", (unsigned)s->creds.iterations);
	sb_puts(&sf, "r=");
	sb_puts(&sf, s->nonce);
	sb_puts(&sf, ",s=");
	sb_put_b64(&sf, s->creds.salt, SCRAM_SALT_LEN);
	sb_puts(&sf, ",i=");
	sb_puts(&sf, iterations);
	if (nb.overflow) {
		why = SASL_FAIL_MALFORMED_REQUEST; /* client nonce too long */
		goto fail;
	}
	if (sf.overflow || sf.len > out_cap) {
		why = SASL_FAIL_TEMPORARY_AUTH_FAILURE;
		goto fail;
	}
	memcpy(out, s->server_first, sf.len);
	*out_len = sf.len;
	s->step = STEP_CLIENT_FINAL;
	return SASL_CONTINUE;
fail:
	return finish_failure(s, why);
}

static enum sasl_result scram_client_final_in(struct sasl_session *s, const uint8_t *in,
					      size_t len, uint8_t *out, size_t out_cap,
					      size_t *out_len)
{
	const struct scram_hash *h = mech_hash(s->mech);
	const char *msg = (const char *)in;
	enum sasl_failure why = SASL_FAIL_MALFORMED_REQUEST;
	uint8_t proof[SCRAM_HASH_MAX], sig[SCRAM_HASH_MAX], key[SCRAM_HASH_MAX];
	uint8_t check[SCRAM_HASH_MAX];
	uint8_t cbind[sizeof s->gs2_header + sizeof s->cb_data];
	char expected_c[B64_LEN(sizeof cbind) + 1];
	struct span fld, c, r, p;

	if (len == 0 || len > SCRAM_MSG_MAX || memchr(msg, 0, len))
		goto fail;
	/* channel-binding "," nonce ["," extensions] "," proof */
	const char *last_comma = memrchr(msg, ',', len);
	if (!last_comma)
		goto fail;
	size_t without_proof_len = (size_t)(last_comma - msg);
	struct span proof_field = { last_comma + 1, len - without_proof_len - 1 };
	struct fields f = fields_of(msg, without_proof_len);
	if (!attr(proof_field, 'p', &p) || !next_field(&f, &fld) || !attr(fld, 'c', &c) ||
	    !next_field(&f, &fld) || !attr(fld, 'r', &r))
		goto fail;
	while (next_field(&f, &fld))
		if (!is_extension(fld))
			goto fail;
	if (base64_decode(p.p, p.len, proof, sizeof proof) != (int)h->len)
		goto fail;

	/* c= must be exactly base64(gs2-header [cb-data]): the header we parsed
	 * and, for -PLUS, our own tls-exporter value. */
	size_t gs2_len = strlen(s->gs2_header);
	memcpy(cbind, s->gs2_header, gs2_len);
	memcpy(cbind + gs2_len, s->cb_data, s->cb_len);
	int elen = base64_encode(cbind, gs2_len + s->cb_len, expected_c, sizeof expected_c);
	bool cb_ok = elen > 0 && c.len == (size_t)elen && ct_memcmp(c.p, expected_c, c.len) == 0;
	bool nonce_ok = r.len == strlen(s->nonce) && memcmp(r.p, s->nonce, r.len) == 0;
	if (!cb_ok || !nonce_ok) {
		why = SASL_FAIL_NOT_AUTHORIZED;
		goto fail;
	}

	const uint8_t *stored_key = h->len == 20 ? s->creds.stored_key_sha1
						 : s->creds.stored_key_sha256;
	const uint8_t *server_key = h->len == 20 ? s->creds.server_key_sha1
						 : s->creds.server_key_sha256;
	struct part auth_message[] = {
		{ s->client_first_bare, strlen(s->client_first_bare) },
		{ ",", 1 },
		{ s->server_first, strlen(s->server_first) },
		{ ",", 1 },
		{ msg, without_proof_len },
	};
	size_t nparts = sizeof auth_message / sizeof auth_message[0];
	why = SASL_FAIL_TEMPORARY_AUTH_FAILURE;
	/* ClientKey = ClientProof XOR HMAC(StoredKey, AuthMessage); the proof is
	 * good when H(ClientKey) is StoredKey. */
	if (hmac_parts(h, stored_key, h->len, auth_message, nparts, sig) < 0)
		goto fail;
	for (size_t i = 0; i < h->len; i++)
		key[i] = proof[i] ^ sig[i];
	if (digest(h, key, h->len, check) < 0)
		goto fail;
	bool ok = (ct_memcmp(check, stored_key, h->len) == 0) & s->user_exists;
	if (!ok) {
		why = SASL_FAIL_NOT_AUTHORIZED;
		goto fail;
	}
	if (hmac_parts(h, server_key, h->len, auth_message, nparts, sig) < 0)
		goto fail;
	struct strbuf o = { (char *)out, out_cap, 0, false };
	sb_puts(&o, "v=");
	sb_put_b64(&o, sig, h->len);
	if (o.overflow)
		goto fail;
	*out_len = o.len;
	s->step = STEP_DONE;
	wipe_creds(s);
	explicit_bzero(key, sizeof key);
	return SASL_SUCCESS;
fail:
	explicit_bzero(key, sizeof key);
	return finish_failure(s, why);
}

enum sasl_result sasl_start(struct sasl_session *s, enum sasl_mech mech,
			    sasl_lookup_fn lookup, void *lookup_arg, const char *domain,
			    const uint8_t *cb_data, size_t cb_len, bool cb_offered,
			    const uint8_t *in, size_t in_len, bool in_present,
			    uint8_t *out, size_t out_cap, size_t *out_len)
{
	sasl_session_clear(s);
	*out_len = 0;
	s->mech = mech;
	s->lookup = lookup;
	s->lookup_arg = lookup_arg;
	s->domain = domain;
	s->cb_offered = cb_offered;
	switch (mech) {
	case SASL_MECH_PLAIN:
		s->step = STEP_PLAIN;
		break;
	case SASL_MECH_SCRAM_SHA256_PLUS:
		if (!cb_data || cb_len == 0 || cb_len > sizeof s->cb_data)
			return finish_failure(s, SASL_FAIL_INVALID_MECHANISM);
		memcpy(s->cb_data, cb_data, cb_len);
		s->cb_len = cb_len;
		/* fall through */
	case SASL_MECH_SCRAM_SHA1:
	case SASL_MECH_SCRAM_SHA256:
		s->step = STEP_CLIENT_FIRST;
		break;
	default:
		return finish_failure(s, SASL_FAIL_INVALID_MECHANISM);
	}
	if (!lookup)
		return finish_failure(s, SASL_FAIL_TEMPORARY_AUTH_FAILURE);
	if (!in_present)
		return SASL_CONTINUE; /* empty challenge; the client's message follows */
	return sasl_step(s, in, in_len, out, out_cap, out_len);
}

enum sasl_result sasl_step(struct sasl_session *s, const uint8_t *in, size_t in_len,
			   uint8_t *out, size_t out_cap, size_t *out_len)
{
	*out_len = 0;
	if (!in && in_len)
		return finish_failure(s, SASL_FAIL_MALFORMED_REQUEST);
	switch (s->step) {
	case STEP_PLAIN:
		return plain_in(s, in, in_len);
	case STEP_CLIENT_FIRST:
		return scram_client_first_in(s, in, in_len, out, out_cap, out_len);
	case STEP_CLIENT_FINAL:
		return scram_client_final_in(s, in, in_len, out, out_cap, out_len);
	default:
		return finish_failure(s, SASL_FAIL_MALFORMED_REQUEST);
	}
}

void sasl_session_clear(struct sasl_session *s)
{
	explicit_bzero(s, sizeof *s);
}

/* ---- client -------------------------------------------------------------- */

int scram_client_first_with_nonce(struct scram_client *c, enum sasl_mech mech,
				  const char *user, const char *password,
				  const uint8_t *cb_data, size_t cb_len, const char *cnonce,
				  char *out, size_t cap)
{
	explicit_bzero(c, sizeof *c);
	if (!mech_hash(mech) || !user || !*user || !password || !*password || !cnonce ||
	    strlen(user) >= sizeof c->user || strlen(password) >= sizeof c->password ||
	    strlen(cnonce) >= sizeof c->cnonce || !nonce_valid((struct span){ cnonce, strlen(cnonce) }))
		goto invalid;
	if (mech == SASL_MECH_SCRAM_SHA256_PLUS) {
		if (!cb_data || cb_len == 0 || cb_len > sizeof c->cb_data)
			goto invalid;
		memcpy(c->cb_data, cb_data, cb_len);
		c->cb_len = cb_len;
		strcpy(c->gs2_header, "p=tls-exporter,,");
	} else {
		/* able to bind but -PLUS was not offered: say so ('y') */
		strcpy(c->gs2_header, cb_data ? "y,," : "n,,");
	}
	c->mech = mech;
	strcpy(c->user, user);
	strcpy(c->password, password);
	strcpy(c->cnonce, cnonce);

	struct strbuf bare = { c->client_first_bare, sizeof c->client_first_bare, 0, false };
	sb_puts(&bare, "n=");
	for (const char *p = user; *p; p++)
		if (*p == ',')
			sb_puts(&bare, "=2C");
		else if (*p == '=')
			sb_puts(&bare, "=3D");
		else
			sb_put(&bare, p, 1);
	sb_puts(&bare, ",r=");
	sb_puts(&bare, cnonce);
	if (bare.overflow)
		goto invalid;

	struct strbuf o = { out, cap, 0, false };
	sb_puts(&o, c->gs2_header);
	sb_puts(&o, c->client_first_bare);
	if (o.overflow || o.len > INT_MAX) {
		explicit_bzero(c, sizeof *c);
		return -ENOSPC;
	}
	return (int)o.len;
invalid:
	explicit_bzero(c, sizeof *c);
	return -EINVAL;
}

int scram_client_first(struct scram_client *c, enum sasl_mech mech, const char *user,
		       const char *password, const uint8_t *cb_data, size_t cb_len,
		       char *out, size_t cap)
{
	uint8_t raw[SCRAM_NONCE_RAW];
	char cnonce[B64_LEN(SCRAM_NONCE_RAW) + 1];

	if (random_bytes(raw, sizeof raw) < 0)
		return -EIO;
	base64_encode(raw, sizeof raw, cnonce, sizeof cnonce);
	return scram_client_first_with_nonce(c, mech, user, password, cb_data, cb_len, cnonce,
					     out, cap);
}

/* posit-number = %x31-39 *DIGIT, up to MAX */
static int parse_iterations(struct span v, uint32_t max, uint32_t *out)
{
	uint64_t n = 0;

	if (v.len == 0 || v.len > 10 || v.p[0] < '1' || v.p[0] > '9')
		return -EPROTO;
	for (size_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return -EPROTO;
		n = n * 10 + (uint64_t)(v.p[i] - '0');
	}
	if (n > max)
		return -EPROTO;
	*out = (uint32_t)n;
	return 0;
}

/* The hash family that made a mechanism's keys: -PLUS binds the channel,
 * its keys are SCRAM-SHA-256's. */
static enum sasl_mech key_family(enum sasl_mech m)
{
	return m == SASL_MECH_SCRAM_SHA256_PLUS ? SASL_MECH_SCRAM_SHA256 : m;
}

/* ClientKey and ServerKey for C's password with SALT and ITERATIONS: from
 * CACHE when it holds them, else derived (and stored when CACHE is given and
 * the salt fits). */
static int client_keys(const struct scram_client *c, const struct scram_hash *h,
		       struct scram_client_keys *cache, const uint8_t *salt, size_t salt_len,
		       uint32_t iterations, uint8_t *client_key, uint8_t *server_key)
{
	enum sasl_mech family = key_family(c->mech);
	uint8_t stored_key[SCRAM_HASH_MAX];
	int rc;

	if (cache && cache->mech == family && cache->iterations == iterations &&
	    cache->salt_len == salt_len && memcmp(cache->salt, salt, salt_len) == 0) {
		memcpy(client_key, cache->client_key, h->len);
		memcpy(server_key, cache->server_key, h->len);
		return 0;
	}
	rc = scram_keys(h, c->password, strlen(c->password), salt, salt_len, iterations,
			client_key, stored_key, server_key);
	explicit_bzero(stored_key, sizeof stored_key);
	if (rc < 0 || !cache || salt_len > sizeof cache->salt)
		return rc;
	explicit_bzero(cache, sizeof *cache);
	cache->mech = family;
	cache->iterations = iterations;
	cache->salt_len = salt_len;
	memcpy(cache->salt, salt, salt_len);
	memcpy(cache->client_key, client_key, h->len);
	memcpy(cache->server_key, server_key, h->len);
	return 0;
}

int scram_client_final(struct scram_client *c, const char *server_first, size_t len,
		       char *out, size_t cap)
{
	return scram_client_final_cached(c, NULL, server_first, len, out, cap);
}

int scram_client_final_cached(struct scram_client *c, struct scram_client_keys *keys,
			      const char *server_first, size_t len, char *out, size_t cap)
{
	const struct scram_hash *h = mech_hash(c->mech);
	uint8_t salt[SCRAM_CLIENT_SALT_MAX], cbind[sizeof c->gs2_header + sizeof c->cb_data];
	uint8_t client_key[SCRAM_HASH_MAX], stored_key[SCRAM_HASH_MAX];
	uint8_t server_key[SCRAM_HASH_MAX], sig[SCRAM_HASH_MAX];
	struct span fld, r, s_b64, i_val;
	uint32_t iterations;
	int rc = -EINVAL;

	c->sig_len = 0;
	if (!h || !server_first)
		goto out;
	rc = -EPROTO;
	if (len == 0 || len > SCRAM_MSG_MAX || memchr(server_first, 0, len))
		goto out;
	/* [reserved-mext ","] nonce "," salt "," iteration-count ["," extensions];
	 * a mandatory extension ("m=") is one we cannot honour. */
	struct fields f = fields_of(server_first, len);
	if (!next_field(&f, &fld) || !attr(fld, 'r', &r) || !nonce_valid(r) ||
	    !next_field(&f, &fld) || !attr(fld, 's', &s_b64) || !next_field(&f, &fld) ||
	    !attr(fld, 'i', &i_val) ||
	    parse_iterations(i_val, SCRAM_CLIENT_MAX_ITERATIONS, &iterations) < 0)
		goto out;
	while (next_field(&f, &fld))
		if (!is_extension(fld))
			goto out;
	size_t cnonce_len = strlen(c->cnonce);
	if (r.len <= cnonce_len || memcmp(r.p, c->cnonce, cnonce_len) != 0)
		goto out; /* the server must extend our nonce */
	int salt_len = base64_decode(s_b64.p, s_b64.len, salt, sizeof salt);
	if (salt_len <= 0)
		goto out;

	rc = client_keys(c, h, keys, salt, (size_t)salt_len, iterations, client_key, server_key);
	if (rc < 0 || (rc = digest(h, client_key, h->len, stored_key)) < 0)
		goto out;

	size_t gs2_len = strlen(c->gs2_header);
	memcpy(cbind, c->gs2_header, gs2_len);
	memcpy(cbind + gs2_len, c->cb_data, c->cb_len);
	struct strbuf o = { out, cap, 0, false };
	sb_puts(&o, "c=");
	sb_put_b64(&o, cbind, gs2_len + c->cb_len);
	sb_puts(&o, ",r=");
	sb_put(&o, r.p, r.len);
	rc = -ENOSPC;
	if (o.overflow)
		goto out;

	struct part auth_message[] = {
		{ c->client_first_bare, strlen(c->client_first_bare) },
		{ ",", 1 },
		{ server_first, len },
		{ ",", 1 },
		{ out, o.len },
	};
	size_t nparts = sizeof auth_message / sizeof auth_message[0];
	if ((rc = hmac_parts(h, stored_key, h->len, auth_message, nparts, sig)) < 0)
		goto out;
	for (size_t i = 0; i < h->len; i++)
		sig[i] ^= client_key[i]; /* now the ClientProof */
	if ((rc = hmac_parts(h, server_key, h->len, auth_message, nparts,
			     c->server_signature)) < 0)
		goto out;
	sb_puts(&o, ",p=");
	sb_put_b64(&o, sig, h->len);
	rc = -ENOSPC;
	if (o.overflow || o.len > INT_MAX)
		goto out;
	c->sig_len = h->len;
	rc = (int)o.len;
out:
	explicit_bzero(client_key, sizeof client_key);
	explicit_bzero(stored_key, sizeof stored_key);
	explicit_bzero(server_key, sizeof server_key);
	explicit_bzero(sig, sizeof sig);
	return rc;
}

int scram_client_verify(struct scram_client *c, const char *server_final, size_t len)
{
	uint8_t sig[SCRAM_HASH_MAX];
	struct span fld, v;

	if (c->sig_len == 0 || !server_final)
		return -EINVAL; /* scram_client_final() did not succeed */
	if (len == 0 || len > SCRAM_MSG_MAX || memchr(server_final, 0, len))
		return -EPROTO;
	/* (server-error / verifier) ["," extensions] */
	struct fields f = fields_of(server_final, len);
	next_field(&f, &fld);
	if (attr(fld, 'e', &v))
		return -EACCES;
	if (!attr(fld, 'v', &v))
		return -EPROTO;
	while (next_field(&f, &fld))
		if (!is_extension(fld))
			return -EPROTO;
	if (base64_decode(v.p, v.len, sig, sizeof sig) != (int)c->sig_len)
		return -EPROTO;
	return ct_memcmp(sig, c->server_signature, c->sig_len) ? -EACCES : 0;
}
