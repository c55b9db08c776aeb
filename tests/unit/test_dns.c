/*
 * dns: RFC 2782 ordering with a scripted random source, status texts,
 * server lists, numeric hosts, and real queries against a dnsmasq this test
 * starts on 127.0.0.19 (skipped only when dnsmasq is not installed).
 */
#include "common/dns.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DNSMASQ "/usr/sbin/dnsmasq"
#define TEST_ADDR "127.0.0.19"

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- ordering ---- */

struct script {
	const uint32_t *values;
	int n, used;
};

static uint32_t scripted(void *arg)
{
	struct script *s = arg;

	if (s->used >= s->n) {
		s->used++; /* counted, so a test sees the overrun */
		return 0;
	}
	return s->values[s->used++];
}

static struct dns_srv_target srv(const char *name, int priority, int weight)
{
	struct dns_srv_target t = { .port = 5223, .priority = (uint16_t)priority,
				    .weight = (uint16_t)weight };

	snprintf(t.target, sizeof t.target, "%s", name);
	return t;
}

static void order_priorities_ascending(void)
{
	struct dns_srv_target t[] = {
		srv("c", 30, 0), srv("a1", 10, 0), srv("b", 20, 0), srv("a2", 10, 0),
	};

	dns_srv_order(t, 4, NULL, NULL);
	CHECK_STR(t[0].target, "a1");
	CHECK_STR(t[1].target, "a2"); /* all weight 0: kept in answer order */
	CHECK_STR(t[2].target, "b");
	CHECK_STR(t[3].target, "c");
}

static void order_weighted_selection(void)
{
	/* Weight 0 goes first in the running sum: b(0) a(10) c(40) d(100).
	 * 41 -> d; then b(0) a(10) c(40): 5 -> a; then b(0) c(30): 0 -> b. */
	struct dns_srv_target t[] = {
		srv("a", 10, 10), srv("b", 10, 0), srv("c", 10, 30), srv("d", 10, 60),
		srv("backup", 20, 5),
	};
	const uint32_t values[] = { 41, 5, 0 };
	struct script s = { values, 3, 0 };

	dns_srv_order(t, 5, scripted, &s);
	CHECK_STR(t[0].target, "d");
	CHECK_STR(t[1].target, "a");
	CHECK_STR(t[2].target, "b");
	CHECK_STR(t[3].target, "c");
	CHECK_STR(t[4].target, "backup");
	/* one draw per choice; the last of a priority needs none */
	CHECK(s.used == 3);
}

static void order_running_sum_boundaries(void)
{
	/* a(1) b(3): the random number is in [0, 3]; 1 is still a's (running
	 * sum >= number), 2 is b's. */
	struct dns_srv_target t[] = { srv("a", 0, 1), srv("b", 0, 2) };
	const uint32_t one[] = { 1 }, two[] = { 2 };
	struct script s1 = { one, 1, 0 }, s2 = { two, 1, 0 };

	dns_srv_order(t, 2, scripted, &s1);
	CHECK_STR(t[0].target, "a");
	dns_srv_order(t, 2, scripted, &s2);
	CHECK_STR(t[0].target, "b");
	CHECK_STR(t[1].target, "a");
}

static void order_weight_zero_only_on_zero(void)
{
	/* A weight-0 entry is chosen when the number drawn is 0, and only
	 * then: z(0) w(5) -> 0 picks z, 1..5 pick w. */
	struct dns_srv_target t[] = { srv("w", 1, 5), srv("z", 1, 0) };
	const uint32_t zero[] = { 0 }, three[] = { 3 };
	struct script s0 = { zero, 1, 0 }, s3 = { three, 1, 0 };

	dns_srv_order(t, 2, scripted, &s0);
	CHECK_STR(t[0].target, "z");
	CHECK_STR(t[1].target, "w");
	dns_srv_order(t, 2, scripted, &s3);
	CHECK_STR(t[0].target, "w");
	CHECK_STR(t[1].target, "z");
}

static void order_draw_is_unbiased(void)
{
	/* Sum 2 -> 3 outcomes. A draw in the incomplete top range of 32-bit
	 * values is thrown away (no modulo bias); 4 % 3 = 1 -> a's. */
	struct dns_srv_target t[] = { srv("a", 0, 1), srv("b", 0, 1) };
	const uint32_t values[] = { UINT32_MAX, 4 };
	struct script s = { values, 2, 0 };

	dns_srv_order(t, 2, scripted, &s);
	CHECK(s.used == 2);
	CHECK_STR(t[0].target, "a");
}

static void order_default_random_spreads(void)
{
	/* With the system's random source, weights 1 and 99 put the heavy one
	 * first most of the time, and never lose or duplicate an entry. */
	int heavy_first = 0;

	for (int i = 0; i < 200; i++) {
		struct dns_srv_target t[] = { srv("light", 5, 1), srv("heavy", 5, 99) };

		dns_srv_order(t, 2, NULL, NULL);
		CHECK(strcmp(t[0].target, t[1].target) != 0);
		heavy_first += strcmp(t[0].target, "heavy") == 0;
	}
	CHECK(heavy_first > 170); /* expected 196 (light wins on 0 or 1 of 0..100) */
}

static void status_texts(void)
{
	CHECK_STR(dns_status_text(0), "ok");
	CHECK_STR(dns_status_text(-ENOENT), "no records");
	CHECK_STR(dns_status_text(-ETIMEDOUT), "timed out");
	CHECK_STR(dns_status_text(-ECONNREFUSED), "refused by the DNS servers");
	CHECK_STR(dns_status_text(-ECANCELED), "cancelled");
	CHECK(dns_status_text(-12345) != NULL);
}

static void server_lists(void)
{
	char err[256] = "";
	struct dns_resolver *r;

	r = dns_new("not-an-address", 1000, err, sizeof err);
	CHECK(r == NULL);
	CHECK(strstr(err, "not-an-address") != NULL);
	err[0] = '\0';
	r = dns_new(",", 1000, err, sizeof err);
	CHECK(r == NULL);
	CHECK(err[0] != '\0');
	r = dns_new("127.0.0.1", 0, err, sizeof err);
	CHECK(r == NULL);

	r = dns_new("127.0.0.19:10054,[::1]:53", 1000, err, sizeof err);
	CHECK(r != NULL);
	dns_free(r);
	r = dns_new(NULL, 1000, err, sizeof err); /* the system's */
	CHECK(r != NULL);
	dns_free(r);
}

/* ---- answers ---- */

struct answer {
	bool called;
	int calls;
	int status;
	int count;
	struct dns_srv_target targets[8];
	struct dns_addr addrs[8];
};

static void on_srv(void *arg, int status, const struct dns_srv_target *t, int count)
{
	struct answer *a = arg;

	a->called = true;
	a->calls++;
	a->status = status;
	a->count = count;
	for (int i = 0; i < count && i < 8; i++)
		a->targets[i] = t[i];
}

static void on_addr(void *arg, int status, const struct dns_addr *addrs, int count)
{
	struct answer *a = arg;

	a->called = true;
	a->calls++;
	a->status = status;
	a->count = count;
	for (int i = 0; i < count && i < 8; i++)
		a->addrs[i] = addrs[i];
}

static void numeric_host(void)
{
	char err[256];
	struct dns_resolver *r = dns_new("127.0.0.1:9", 2000, err, sizeof err);
	struct answer v4 = { 0 }, v6 = { 0 }, other = { 0 };

	CHECK(r != NULL);
	if (!r)
		return;
	CHECK(dns_query_addr(r, "127.0.0.5", AF_UNSPEC, on_addr, &v4) == 0);
	CHECK(dns_query_addr(r, "::1", AF_INET6, on_addr, &v6) == 0);
	CHECK(dns_query_addr(r, "127.0.0.5", AF_INET6, on_addr, &other) == 0);
	CHECK(!v4.called && !v6.called); /* never from inside dns_query_* */
	CHECK(dns_pending(r) == 3);
	CHECK(dns_timeout_ms(r) == 0);   /* ready now, no server asked */
	dns_process(r, NULL, 0);
	CHECK(v4.calls == 1 && v6.calls == 1 && other.calls == 1);
	CHECK(other.status == -ENOENT);
	CHECK(v4.status == 0 && v4.count == 1);
	CHECK(v4.addrs[0].family == AF_INET);
	CHECK_STR(v4.addrs[0].ip, "127.0.0.5");
	CHECK(v6.status == 0 && v6.count == 1);
	CHECK(v6.addrs[0].family == AF_INET6);
	CHECK_STR(v6.addrs[0].ip, "::1");
	CHECK(dns_pending(r) == 0);
	CHECK(dns_timeout_ms(r) == -1);
	CHECK(dns_query_addr(r, "", AF_UNSPEC, on_addr, &v4) == -EINVAL);
	CHECK(dns_query_addr(r, "x", 12345, on_addr, &v4) == -EAFNOSUPPORT);
	CHECK(dns_pending(r) == 0);
	dns_free(r);
}

/* A UDP socket that takes queries and never answers. */
static int silent_server(int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	inet_pton(AF_INET, TEST_ADDR, &sa.sin_addr);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

static void silent_server_times_out(void)
{
	char err[256], servers[64];
	int port, fd = silent_server(&port);
	struct dns_resolver *r;
	struct answer a = { 0 };
	int64_t start, took;

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	snprintf(servers, sizeof servers, "%s:%d", TEST_ADDR, port);
	r = dns_new(servers, 400, err, sizeof err);
	CHECK(r != NULL);
	if (!r) {
		close(fd);
		return;
	}
	start = now_ms();
	CHECK(dns_query_srv(r, "_xmpp-component._tcp.example.test", on_srv, &a) == 0);
	CHECK(dns_wait(r, 5000) == 0);
	took = now_ms() - start;
	CHECK(a.calls == 1);
	CHECK(a.status == -ETIMEDOUT);
	CHECK(took >= 390 && took < 1200);
	dns_free(r);
	close(fd);
}

static void free_cancels_pending(void)
{
	char err[256], servers[64];
	int port, fd = silent_server(&port);
	struct dns_resolver *r;
	struct answer a = { 0 }, b = { 0 };

	CHECK(fd >= 0);
	if (fd < 0)
		return;
	snprintf(servers, sizeof servers, "%s:%d", TEST_ADDR, port);
	r = dns_new(servers, 5000, err, sizeof err);
	CHECK(r != NULL);
	if (r) {
		CHECK(dns_query_srv(r, "_x._tcp.example.test", on_srv, &a) == 0);
		CHECK(dns_query_addr(r, "host.example.test", AF_UNSPEC, on_addr, &b) == 0);
		CHECK(dns_wait(r, 100) == -ETIMEDOUT);
		CHECK(dns_pending(r) == 2);
		dns_free(r);
		CHECK(a.calls == 1 && a.status == -ECANCELED);
		CHECK(b.calls == 1 && b.status == -ECANCELED);
	}
	close(fd);
}

/* ---- a real DNS server ---- */

struct dnsmasq {
	pid_t pid;
	char dir[64];
	char server[64];
};

static const char *const records[] = {
	"srv-host=_xmpp-component._tcp.example.test,node1.example.test,5223,10,0",
	"srv-host=_xmpp-component._tcp.example.test,node2.example.test,5224,20,60",
	"srv-host=_xmpp-component._tcp.example.test,node3.example.test,5225,20,40",
	"host-record=node1.example.test,127.0.0.21",
	"host-record=node2.example.test,127.0.0.22",
	"host-record=ready.example.test,127.0.0.1",
	"srv-host=_xmpp-component._tcp.gone.test,.,0,0,0",
	/* a name with an A record but no SRV: NODATA */
	"host-record=_xmpp-component._tcp.nodata.test,127.0.0.9",
};

/* Start dnsmasq on TEST_ADDR:PORT; 0, -EADDRINUSE-ish (it exited), or
 * -ETIMEDOUT (never answered). */
static int dnsmasq_start_on(struct dnsmasq *d, int port)
{
	char conf[128], arg[160], err[256];
	struct dns_resolver *r;
	FILE *f;
	int status;
	int64_t deadline;

	snprintf(conf, sizeof conf, "%s/dnsmasq.conf", d->dir);
	f = fopen(conf, "w");
	if (!f)
		return -errno;
	fprintf(f, "port=%d\nlisten-address=%s\nbind-interfaces\nno-resolv\nno-hosts\n"
		   "no-poll\nuser=root\npid-file=\nlocal=/#/\n", port, TEST_ADDR);
	for (size_t i = 0; i < sizeof records / sizeof records[0]; i++)
		fprintf(f, "%s\n", records[i]);
	if (fclose(f) != 0)
		return -EIO;
	snprintf(arg, sizeof arg, "--conf-file=%s", conf);
	d->pid = fork();
	if (d->pid < 0)
		return -errno;
	if (d->pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl(DNSMASQ, DNSMASQ, "--keep-in-foreground", arg, (char *)NULL);
		_exit(127);
	}
	snprintf(d->server, sizeof d->server, "%s:%d", TEST_ADDR, port);
	r = dns_new(d->server, 200, err, sizeof err);
	if (!r)
		return -ENOMEM;
	deadline = now_ms() + 10000;
	for (;;) {
		struct answer a = { 0 };

		if (waitpid(d->pid, &status, WNOHANG) == d->pid) {
			d->pid = 0;
			dns_free(r);
			return -EADDRINUSE;
		}
		if (dns_query_addr(r, "ready.example.test", AF_INET, on_addr, &a) == 0 &&
		    dns_wait(r, 1000) == 0 && a.status == 0) {
			dns_free(r);
			return 0;
		}
		if (now_ms() > deadline) {
			dns_free(r);
			return -ETIMEDOUT;
		}
		usleep(20000);
	}
}

static void dnsmasq_stop(struct dnsmasq *d)
{
	char conf[128];

	if (d->pid > 0) {
		kill(d->pid, SIGTERM);
		waitpid(d->pid, NULL, 0);
		d->pid = 0;
	}
	snprintf(conf, sizeof conf, "%s/dnsmasq.conf", d->dir);
	unlink(conf);
	rmdir(d->dir);
}

/* 0 started, 1 skipped (no dnsmasq), -1 failed */
static int dnsmasq_start(struct dnsmasq *d)
{
	memset(d, 0, sizeof *d);
	if (access(DNSMASQ, X_OK) != 0)
		return 1;
	snprintf(d->dir, sizeof d->dir, "/tmp/test_dns.XXXXXX");
	if (!mkdtemp(d->dir))
		return -1;
	/* another run may hold a port: try the next */
	for (int port = 10054; port < 10064; port++) {
		int rc = dnsmasq_start_on(d, port);

		if (rc == 0)
			return 0;
		if (d->pid > 0) {
			kill(d->pid, SIGTERM);
			waitpid(d->pid, NULL, 0);
			d->pid = 0;
		}
		if (rc != -EADDRINUSE)
			break;
	}
	dnsmasq_stop(d);
	return -1;
}

static struct dnsmasq dnsmasq;
static int dnsmasq_state = 1;

static bool have_dnsmasq(const char *test)
{
	if (dnsmasq_state == 1)
		printf("ok %s (skipped: no dnsmasq)\n", test);
	return dnsmasq_state == 0;
}

static struct dns_resolver *real_resolver(void)
{
	char err[256];
	struct dns_resolver *r = dns_new(dnsmasq.server, 2000, err, sizeof err);

	CHECK(r != NULL);
	return r;
}

static const struct dns_srv_target *find_target(const struct answer *a, const char *name)
{
	for (int i = 0; i < a->count; i++)
		if (strcmp(a->targets[i].target, name) == 0)
			return &a->targets[i];
	return NULL;
}

static void real_srv_answers(void)
{
	struct dns_resolver *r = real_resolver();
	struct answer a = { 0 };
	const struct dns_srv_target *t;

	if (!r)
		return;
	CHECK(dns_query_srv(r, "_xmpp-component._tcp.example.test", on_srv, &a) == 0);
	CHECK(dns_wait(r, 5000) == 0);
	CHECK(a.calls == 1);
	CHECK(a.status == 0);
	CHECK(a.count == 3);
	t = find_target(&a, "node1.example.test");
	CHECK(t && t->port == 5223 && t->priority == 10 && t->weight == 0);
	t = find_target(&a, "node2.example.test");
	CHECK(t && t->port == 5224 && t->priority == 20 && t->weight == 60);
	t = find_target(&a, "node3.example.test");
	CHECK(t && t->port == 5225 && t->priority == 20 && t->weight == 40);
	dns_srv_order(a.targets, a.count, NULL, NULL);
	CHECK_STR(a.targets[0].target, "node1.example.test");
	dns_free(r);
}

static void real_srv_absent(void)
{
	struct dns_resolver *r = real_resolver();
	struct answer nx = { 0 }, nodata = { 0 }, dot = { 0 };

	if (!r)
		return;
	CHECK(dns_query_srv(r, "_xmpp-component._tcp.missing.test", on_srv, &nx) == 0);
	CHECK(dns_query_srv(r, "_xmpp-component._tcp.nodata.test", on_srv, &nodata) == 0);
	CHECK(dns_query_srv(r, "_xmpp-component._tcp.gone.test", on_srv, &dot) == 0);
	CHECK(dns_wait(r, 5000) == 0);
	CHECK(nx.calls == 1 && nx.status == -ENOENT && nx.count == 0);
	CHECK(nodata.calls == 1 && nodata.status == -ENOENT);
	CHECK(dot.calls == 1 && dot.status == -ENOENT); /* target "." */
	dns_free(r);
}

static void real_addr_answers(void)
{
	struct dns_resolver *r = real_resolver();
	struct answer a = { 0 }, unspec = { 0 }, nx = { 0 };

	if (!r)
		return;
	CHECK(dns_query_addr(r, "node2.example.test", AF_INET, on_addr, &a) == 0);
	CHECK(dns_query_addr(r, "node1.example.test", AF_UNSPEC, on_addr, &unspec) == 0);
	CHECK(dns_query_addr(r, "nowhere.example.test", AF_UNSPEC, on_addr, &nx) == 0);
	CHECK(dns_wait(r, 5000) == 0);
	CHECK(a.status == 0 && a.count == 1);
	CHECK(a.addrs[0].family == AF_INET);
	CHECK_STR(a.addrs[0].ip, "127.0.0.22");
	CHECK(unspec.status == 0 && unspec.count == 1); /* no AAAA: the A alone */
	CHECK_STR(unspec.addrs[0].ip, "127.0.0.21");
	CHECK(nx.calls == 1 && nx.status == -ENOENT);
	dns_free(r);
}

/* The bridge's way: resolve SRV, then each target's address from inside
 * the SRV callback, all through the event-loop calls. */
struct chain {
	struct dns_resolver *r;
	struct answer srv;
	struct answer addr[3];
	int started;
};

static void chain_srv(void *arg, int status, const struct dns_srv_target *t, int count)
{
	struct chain *c = arg;

	on_srv(&c->srv, status, t, count);
	for (int i = 0; i < count && i < 3; i++)
		if (dns_query_addr(c->r, t[i].target, AF_INET, on_addr, &c->addr[i]) == 0)
			c->started++;
}

static void real_chained_queries(void)
{
	struct chain c = { .r = real_resolver() };
	int ok = 0, missing = 0;

	if (!c.r)
		return;
	CHECK(dns_query_srv(c.r, "_xmpp-component._tcp.example.test", chain_srv, &c) == 0);
	for (int turns = 0; dns_pending(c.r) > 0 && turns < 1000; turns++) {
		struct pollfd fds[16];
		int n = dns_fds(c.r, fds, 16);
		int t = dns_timeout_ms(c.r);

		CHECK(t >= 0);
		poll(fds, (nfds_t)n, t);
		dns_process(c.r, fds, n);
	}
	CHECK(dns_pending(c.r) == 0);
	CHECK(c.srv.status == 0 && c.started == 3);
	for (int i = 0; i < 3; i++) {
		CHECK(c.addr[i].calls == 1);
		ok += c.addr[i].status == 0;
		missing += c.addr[i].status == -ENOENT; /* node3 has no address */
	}
	CHECK(ok == 2 && missing == 1);
	dns_free(c.r);
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	RUN(order_priorities_ascending);
	RUN(order_weighted_selection);
	RUN(order_running_sum_boundaries);
	RUN(order_weight_zero_only_on_zero);
	RUN(order_draw_is_unbiased);
	RUN(order_default_random_spreads);
	RUN(status_texts);
	RUN(server_lists);
	RUN(numeric_host);
	RUN(silent_server_times_out);
	RUN(free_cancels_pending);

	dnsmasq_state = dnsmasq_start(&dnsmasq);
	if (dnsmasq_state < 0) {
		/* installed but would not start: that is a failure */
		printf("FAIL dnsmasq_start: could not start %s on %s\n", DNSMASQ, TEST_ADDR);
		check_failed_cases++;
	}
	if (have_dnsmasq("real_srv_answers"))
		RUN(real_srv_answers);
	if (have_dnsmasq("real_srv_absent"))
		RUN(real_srv_absent);
	if (have_dnsmasq("real_addr_answers"))
		RUN(real_addr_answers);
	if (have_dnsmasq("real_chained_queries"))
		RUN(real_chained_queries);
	if (dnsmasq_state == 0)
		dnsmasq_stop(&dnsmasq);
	return check_exit();
}
