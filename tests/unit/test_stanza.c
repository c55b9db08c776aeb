/* Unit tests: stanza_set_from and the byte buffers (workers/stanza.c). */
#include <stdlib.h>
#include <string.h>

#include "tests/unit/check.h"
#include "workers/stanza.h"

static const char *stamp(const char *raw, size_t start_tag_len, const char *from)
{
	static struct buf out;
	if (stanza_set_from(&out, raw, strlen(raw), start_tag_len, from) < 0)
		return NULL;
	return out.data;
}

static size_t tag_len(const char *raw)
{
	/* test inputs keep '>' out of attribute values unless said otherwise */
	return (size_t)(strchr(raw, '>') - raw) + 1;
}

static void adds_from_when_absent(void)
{
	const char *raw = "<message to='b@x' type='chat'><body>hi</body></message>";
	const char *s = stamp(raw, tag_len(raw), "a@x/r");
	CHECK(s);
	CHECK_STR(s, "<message from='a@x/r' to='b@x' type='chat'><body>hi</body></message>");
}

static void replaces_a_forged_from(void)
{
	const char *raw = "<message from=\"evil@x/y\" to='b@x'><body/></message>";
	const char *s = stamp(raw, tag_len(raw), "a@x/r");
	CHECK(s);
	CHECK_STR(s, "<message from='a@x/r' to='b@x'><body/></message>");
	raw = "<iq type='get'\n  from = 'z@x' id='1'><ping xmlns='urn:xmpp:ping'/></iq>";
	s = stamp(raw, tag_len(raw), "a@x/r");
	CHECK(s);
	CHECK_STR(s, "<iq from='a@x/r' type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>");
}

static void keeps_similar_names_and_namespaces(void)
{
	const char *raw = "<message xmlns:from='urn:x' fromage='brie' to='b@x' "
			  "xmlns='jabber:client'/>";
	const char *s = stamp(raw, strlen(raw), "a@x/r");
	CHECK(s);
	CHECK_STR(s, "<message from='a@x/r' xmlns:from='urn:x' fromage='brie' to='b@x' "
		     "xmlns='jabber:client'/>");
}

static void self_closing_and_no_attributes(void)
{
	CHECK_STR(stamp("<presence/>", 11, "a@x/r"), "<presence from='a@x/r'/>");
	CHECK_STR(stamp("<presence>", 10, "a@x/r"), "<presence from='a@x/r'>");
	CHECK_STR(stamp("<presence from='q'/>", 20, "a@x/r"), "<presence from='a@x/r'/>");
}

static void value_with_gt_and_quotes(void)
{
	/* '>' and the other quote are legal inside an attribute value */
	const char *raw = "<message id='a>b\"c' from='x'><body>1</body></message>";
	size_t st = strlen("<message id='a>b\"c' from='x'>");
	const char *s = stamp(raw, st, "a@x/r");
	CHECK(s);
	CHECK_STR(s, "<message from='a@x/r' id='a>b\"c'><body>1</body></message>");
}

static void escapes_the_new_from(void)
{
	const char *s = stamp("<message/>", 10, "a@x/it's <me> & \"you\"");
	CHECK(s);
	CHECK_STR(s, "<message from='a@x/it&apos;s &lt;me&gt; &amp; &quot;you&quot;'/>");
}

static void rejects_nonsense(void)
{
	struct buf out = { 0 };
	CHECK(stanza_set_from(&out, "x", 1, 1, "a") < 0);
	CHECK(stanza_set_from(&out, "<a b='c>", 8, 20, "a") < 0);
	CHECK(stanza_set_from(&out, "<a b='c>", 8, 8, "a") < 0); /* unterminated value */
	buf_free(&out);
}

static void buffers_grow_and_stay_terminated(void)
{
	struct buf b = { 0 };
	for (int i = 0; i < 10000; i++)
		CHECK(buf_add_str(&b, "0123456789") == 0);
	CHECK(b.len == 100000);
	CHECK(b.data[b.len] == '\0');
	CHECK(buf_add_esc(&b, "<&>") == 0);
	CHECK(strcmp(b.data + 100000, "&lt;&amp;&gt;") == 0);
	buf_free(&b);
	CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

int main(void)
{
	RUN(adds_from_when_absent);
	RUN(replaces_a_forged_from);
	RUN(keeps_similar_names_and_namespaces);
	RUN(self_closing_and_no_attributes);
	RUN(value_with_gt_and_quotes);
	RUN(escapes_the_new_from);
	RUN(rejects_nonsense);
	RUN(buffers_grow_and_stay_terminated);
	return check_exit();
}
