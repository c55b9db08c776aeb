/*
 * strophe_client: a second real client library (libstrophe) for the
 * integration tests.
 *
 *   strophe_client JID PASSWORD HOST PORT TO BODY
 *
 * Connects to HOST:PORT with mandatory STARTTLS, trusting the server's
 * certificate (the test servers use self-signed ones), logs in as JID, sends
 * one chat message BODY to TO, then pings the server and waits for the
 * answer before it disconnects. The server handles one client's stanzas in
 * order, so the answer proves the message was taken; libstrophe choosing its
 * own SASL mechanism (the -PLUS ones included) is part of the point.
 *
 * Exits 0 on success, 1 with the reason on stderr on any failure (refused
 * login, stream error, error answer, no answer within the deadline), 2 on a
 * usage error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <strophe.h>

#define DEADLINE_MS 20000
#define PING_ID "strophe-client-ping"

struct run {
	const char *to;
	const char *body;
	char *domain;        /* the server to ping: JID's domain */
	int answered;        /* the ping result arrived */
	int disconnecting;   /* xmpp_disconnect() called (once is enough) */
	char failure[256];   /* empty while nothing went wrong */
};

static void fail(struct run *run, const char *what, const char *detail)
{
	if (run->failure[0] == '\0')
		snprintf(run->failure, sizeof(run->failure), "%s%s%s", what,
			 detail ? ": " : "", detail ? detail : "");
}

static void finish(xmpp_conn_t *conn, struct run *run)
{
	if (!run->disconnecting) {
		run->disconnecting = 1;
		xmpp_disconnect(conn);
	}
}

static int on_deadline(xmpp_ctx_t *ctx, void *arg)
{
	struct run *run = arg;

	fail(run, "no answer within the deadline", NULL);
	xmpp_stop(ctx);
	return 0;
}

static int on_pong(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *arg)
{
	struct run *run = arg;
	const char *type = xmpp_stanza_get_type(stanza);

	if (type && strcmp(type, "result") == 0)
		run->answered = 1;
	else
		fail(run, "the server answered the ping with type", type ? type : "(none)");
	finish(conn, run);
	return 0;
}

/* A bounce of our message may come before or after the pong (it can be made
 * on the recipient's worker); report it whenever it is seen. */
static int on_message_error(xmpp_conn_t *conn, xmpp_stanza_t *stanza, void *arg)
{
	struct run *run = arg;
	xmpp_stanza_t *error = xmpp_stanza_get_child_by_name(stanza, "error");
	xmpp_stanza_t *condition =
		error ? xmpp_stanza_get_child_by_ns(error, "urn:ietf:params:xml:ns:xmpp-stanzas")
		      : NULL;

	fail(run, "the message bounced",
	     condition ? xmpp_stanza_get_name(condition) : "(no condition)");
	finish(conn, run);
	return 0;
}

static int send_message_and_ping(xmpp_conn_t *conn, struct run *run)
{
	xmpp_ctx_t *ctx = xmpp_conn_get_context(conn);
	xmpp_stanza_t *msg = NULL, *iq = NULL, *ping = NULL;
	int ret = -ENOMEM;

	msg = xmpp_message_new(ctx, "chat", run->to, NULL);
	if (!msg || xmpp_message_set_body(msg, run->body) != XMPP_EOK)
		goto out;
	iq = xmpp_iq_new(ctx, "get", PING_ID);
	ping = xmpp_stanza_new(ctx);
	if (!iq || !ping || xmpp_stanza_set_to(iq, run->domain) != XMPP_EOK ||
	    xmpp_stanza_set_name(ping, "ping") != XMPP_EOK ||
	    xmpp_stanza_set_ns(ping, "urn:xmpp:ping") != XMPP_EOK ||
	    xmpp_stanza_add_child(iq, ping) != XMPP_EOK)
		goto out;

	xmpp_handler_add(conn, on_message_error, NULL, "message", "error", run);
	xmpp_id_handler_add(conn, on_pong, PING_ID, run);
	xmpp_send(conn, msg);
	xmpp_send(conn, iq);
	ret = 0;
out:
	if (ping)
		xmpp_stanza_release(ping);
	if (iq)
		xmpp_stanza_release(iq);
	if (msg)
		xmpp_stanza_release(msg);
	return ret;
}

static void on_connection(xmpp_conn_t *conn, xmpp_conn_event_t event, int error,
			  xmpp_stream_error_t *stream_error, void *arg)
{
	struct run *run = arg;

	if (event == XMPP_CONN_CONNECT) {
		if (!xmpp_conn_is_secured(conn)) {
			fail(run, "logged in without TLS", NULL);
			finish(conn, run);
		} else if (send_message_and_ping(conn, run) < 0) {
			fail(run, "out of memory building stanzas", NULL);
			finish(conn, run);
		}
		return;
	}
	/* XMPP_CONN_DISCONNECT or XMPP_CONN_FAIL: the run is over. */
	if (stream_error)
		fail(run, "stream error",
		     stream_error->text ? stream_error->text : "(no text)");
	else if (error)
		fail(run, "connection failed", strerror(error));
	else if (!run->answered)
		fail(run, "disconnected before the ping was answered (login refused?)", NULL);
	xmpp_stop(xmpp_conn_get_context(conn));
}

static int parse_port(const char *text, unsigned short *port)
{
	char *end;
	long value;

	errno = 0;
	value = strtol(text, &end, 10);
	if (errno || *text == '\0' || *end != '\0' || value < 1 || value > 65535)
		return -EINVAL;
	*port = (unsigned short)value;
	return 0;
}

int main(int argc, char **argv)
{
	struct run run = { 0 };
	xmpp_ctx_t *ctx = NULL;
	xmpp_conn_t *conn = NULL;
	unsigned short port;
	int status = 1;

	if (argc != 7 || parse_port(argv[4], &port) < 0) {
		fprintf(stderr, "usage: %s JID PASSWORD HOST PORT TO BODY\n", argv[0]);
		return 2;
	}
	run.to = argv[5];
	run.body = argv[6];

	xmpp_initialize();
	ctx = xmpp_ctx_new(NULL, xmpp_get_default_logger(XMPP_LEVEL_WARN));
	conn = ctx ? xmpp_conn_new(ctx) : NULL;
	run.domain = ctx ? xmpp_jid_domain(ctx, argv[1]) : NULL;
	if (!conn || !run.domain) {
		fail(&run, "cannot set up libstrophe (bad JID or out of memory)", NULL);
		goto out;
	}
	if (xmpp_conn_set_flags(conn, XMPP_CONN_FLAG_MANDATORY_TLS | XMPP_CONN_FLAG_TRUST_TLS) !=
	    XMPP_EOK) {
		fail(&run, "cannot set connection flags", NULL);
		goto out;
	}
	xmpp_conn_set_jid(conn, argv[1]);
	xmpp_conn_set_pass(conn, argv[2]);
	if (xmpp_connect_client(conn, argv[3], port, on_connection, &run) != XMPP_EOK) {
		fail(&run, "cannot start connecting", argv[3]);
		goto out;
	}
	xmpp_global_timed_handler_add(ctx, on_deadline, DEADLINE_MS, &run);
	xmpp_run(ctx);
	xmpp_global_timed_handler_delete(ctx, on_deadline);
	if (run.answered && run.failure[0] == '\0')
		status = 0;
out:
	if (status != 0)
		fprintf(stderr, "strophe_client: %s\n", run.failure[0] ? run.failure : "failed");
	if (run.domain)
		xmpp_free(ctx, run.domain);
	if (conn)
		xmpp_conn_release(conn);
	if (ctx)
		xmpp_ctx_free(ctx);
	xmpp_shutdown();
	return status;
}
