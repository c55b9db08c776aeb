/*
 * --scram-keys FILE: client-side SCRAM-SHA-256 material computed ahead of a
 * run, so that logging in thousands of accounts once each (idle, chat) does
 * not cost the generator a PBKDF2 per account, as RFC 5802 section 5.1 lets a
 * client keep SaltedPassword. The bench runner computes the accounts' salts
 * and keys once, gives every server the stored side and the generator this
 * side.
 *
 * A line is "USER SALT_B64 ITERATIONS SALTEDPASSWORD_HEX". USER must match
 * --user-fmt; accounts outside --first/--accounts are skipped. Nothing here
 * is trusted beyond the one login it speeds up: a key is used only when the
 * server sends exactly that salt and iteration count (scram_client_final_cached
 * compares them), otherwise the login derives its keys as it would without
 * the file; a wrong SaltedPassword makes that login fail, nothing else.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/loadgen/lg.h"

/* The number N when NAME is exactly the pattern's prefix, N, suffix. */
int lg_pattern_match(const struct lg_pattern *p, const char *name, size_t len, uint32_t *n)
{
	size_t pre = strlen(p->prefix), suf = strlen(p->suffix), i;
	uint64_t v = 0;

	if (len <= pre + suf || memcmp(name, p->prefix, pre) != 0 ||
	    memcmp(name + len - suf, p->suffix, suf) != 0)
		return -EINVAL;
	for (i = pre; i < len - suf; i++) {
		if (name[i] < '0' || name[i] > '9' || (i == pre && name[i] == '0' && len - suf > pre + 1))
			return -EINVAL; /* digits only, no leading zero */
		v = v * 10 + (uint64_t)(name[i] - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	*n = (uint32_t)v;
	return 0;
}

static int hex_nibble(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

/* Split the next space-separated field off *S (NUL-terminating it). */
static char *next_field(char **s)
{
	char *f = *s, *end;

	while (*f == ' ' || *f == '\t')
		f++;
	if (!*f)
		return NULL;
	end = f + strcspn(f, " \t");
	*s = *end ? end + 1 : end;
	*end = '\0';
	return f;
}

int lg_keys_parse_line(char *line, const struct lg_pattern *user, uint32_t *account,
		       struct scram_client_keys *out)
{
	char *rest = line, *name, *salt, *iter, *hex, *end;
	uint8_t salted[32];
	unsigned long it;
	int salt_len, rc = -EINVAL;

	line[strcspn(line, "\r\n")] = '\0';
	name = next_field(&rest);
	if (!name || name[0] == '#')
		return 0;
	salt = next_field(&rest);
	iter = next_field(&rest);
	hex = next_field(&rest);
	if (!salt || !iter || !hex || next_field(&rest))
		return -EINVAL;
	if (lg_pattern_match(user, name, strlen(name), account) < 0)
		return -EINVAL;
	errno = 0;
	it = strtoul(iter, &end, 10);
	if (errno || *end || iter[0] < '1' || iter[0] > '9' || it > UINT32_MAX)
		return -EINVAL;
	if (strlen(hex) != 2 * sizeof salted)
		return -EINVAL;
	for (size_t i = 0; i < sizeof salted; i++) {
		int hi = hex_nibble(hex[2 * i]), lo = hex_nibble(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			goto out;
		salted[i] = (uint8_t)(hi << 4 | lo);
	}
	memset(out, 0, sizeof *out);
	salt_len = base64_decode(salt, strlen(salt), out->salt, sizeof out->salt);
	if (salt_len <= 0)
		goto out;
	out->salt_len = (size_t)salt_len;
	out->iterations = (uint32_t)it;
	if ((rc = scram_keys_from_salted(SASL_MECH_SCRAM_SHA256, salted, out->client_key,
					 out->server_key)) < 0)
		goto out;
	out->mech = SASL_MECH_SCRAM_SHA256;
	rc = 1;
out:
	explicit_bzero(salted, sizeof salted);
	if (rc != 1)
		explicit_bzero(out, sizeof *out);
	return rc;
}

int lg_keys_load(struct lg_keys *k, FILE *f, const struct lg_pattern *user, uint32_t first,
		 uint32_t count, unsigned *bad_line)
{
	char line[1024];
	unsigned lineno = 0;
	int rc = 0;

	memset(k, 0, sizeof *k);
	*bad_line = 0;
	k->first = first;
	k->count = count;
	k->keys = calloc(count ? count : 1, sizeof *k->keys);
	if (!k->keys)
		return -ENOMEM;
	while (fgets(line, sizeof line, f)) {
		struct scram_client_keys one;
		uint32_t account;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			rc = -EINVAL; /* longer than any valid line */
			break;
		}
		rc = lg_keys_parse_line(line, user, &account, &one);
		if (rc < 0)
			break;
		if (rc == 1 && account >= first && account - first < count) {
			k->keys[account - first] = one;
			k->loaded++;
		}
		explicit_bzero(&one, sizeof one);
		rc = 0;
	}
	if (rc == 0 && ferror(f))
		rc = -EIO;
	explicit_bzero(line, sizeof line);
	if (rc < 0) {
		*bad_line = lineno;
		lg_keys_free(k);
	}
	return rc;
}

const struct scram_client_keys *lg_keys_find(const struct lg_keys *k, uint32_t account)
{
	const struct scram_client_keys *e;

	if (!k || !k->keys || account < k->first || account - k->first >= k->count)
		return NULL;
	e = &k->keys[account - k->first];
	return e->mech == SASL_MECH_NONE ? NULL : e;
}

void lg_keys_free(struct lg_keys *k)
{
	if (k->keys)
		explicit_bzero(k->keys, (size_t)k->count * sizeof *k->keys);
	free(k->keys);
	memset(k, 0, sizeof *k);
}
