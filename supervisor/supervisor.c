/*
 * supervisor.c: start-up, the process tree, signals, reload and the control
 * commands (see supervisor.h for the contracts).
 *
 * The supervisor is not on the stanza path, so its loop is a plain poll()
 * over the signalfd, the control socket and at most one reload waiting for
 * its workers to acknowledge; io_uring is for the workers.
 *
 * Reload is a transaction: the new YAML is parsed into a scratch struct and
 * the new certificate files are loaded into a scratch TLS context; only if
 * both succeed are the TLS paths published in shared memory and the reload
 * generation bumped; the workers then build their own new context (the
 * files were just proven good) and acknowledge the generation. `xmppctl
 * reload` answers once every worker has acknowledged, so a script knows
 * that the next handshake presents the new certificate.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "election/election.h"
#include "shm/ring.h"
#include "shm/sessdir.h"
#include "shm/shm.h"
#include "supervisor/control.h"
#include "supervisor/supervisor.h"
#include "workers/sasl.h"
#include "workers/tls.h"
#include "workers/worker.h"

#define CRASH_LIMIT 5
#define CRASH_WINDOW_MS 30000
#define BACKOFF_MAX_MS 30000
#define RELOAD_ACK_TIMEOUT_MS 10000
#define STOP_GRACE_EXTRA_MS 5000

struct slot {
	pid_t pid;
	int crashes;            /* deaths inside the current window */
	int64_t window_start_ms;
	int64_t respawn_at_ms;  /* 0 = not waiting */
	bool fatal;             /* exited with WORKER_EXIT_FATAL: never respawned */
};

static struct config *cfg;
static struct shm_segment *shm;
static int *listen_fds;     /* [slot * listener_count + listener] */
static int *doorbells;
static struct slot *slots;
static struct slot election;
static struct tls_ctx *tls;
static struct tls_cert_info cert_info;
static char tls_key_path[CONFIG_PATH_MAX], tls_cert_path[CONFIG_PATH_MAX];
static int signal_fd = -1, control_fd = -1;
static bool ready, stopping, quitting;
static int64_t stop_deadline_ms;
static int reload_client = -1;
static uint64_t reload_target;
static int64_t reload_deadline_ms;

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- start-up -------------------------------------------------------------- */

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[CONFIG_PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s", path);
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

/* Make the self-signed pair of the built-in default on first start. */
static int ensure_tls_files(void)
{
	config_tls_paths(cfg, tls_key_path, tls_cert_path, sizeof tls_key_path);
	if (cfg->tls_key[0])
		return 0;
	if (access(tls_key_path, F_OK) == 0 && access(tls_cert_path, F_OK) == 0)
		return 0;
	char dir[CONFIG_PATH_MAX + 8];
	snprintf(dir, sizeof dir, "%s/tls", cfg->data_dir);
	int rc = mkdir_p(dir, 0700);
	if (rc < 0) {
		log_error("cannot create %s: %s", dir, strerror(-rc));
		return -1;
	}
	char host[256] = "localhost";
	gethostname(host, sizeof host - 1);
	char err[512];
	if (tls_make_self_signed(tls_key_path, tls_cert_path, cfg->domain, host, err,
				 sizeof err) < 0) {
		log_error("cannot make a self-signed certificate: %s", err);
		return -1;
	}
	log_info("made a self-signed certificate for %s and %s: %s", cfg->domain, host,
		 tls_cert_path);
	return 0;
}

/* SCRAM answers an unknown user with a salt derived from this secret; it
 * must be the same in every worker and across restarts, or the salt would
 * tell which accounts exist. Kept in DATA_DIR/sasl-secret, mode 0600. */
static int load_sasl_secret(void)
{
	char path[CONFIG_PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/sasl-secret", cfg->data_dir);
	uint8_t secret[32];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (getrandom(secret, sizeof secret, 0) != (ssize_t)sizeof secret)
			return -1;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (fd < 0 || write(fd, secret, sizeof secret) != (ssize_t)sizeof secret ||
		    fsync(fd) < 0) {
			log_error("cannot write %s: %s", path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
	} else if (fd < 0 || read(fd, secret, sizeof secret) != (ssize_t)sizeof secret) {
		log_error("cannot read %s: %s", path, fd < 0 ? strerror(errno) : "too short");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	int rc = sasl_set_unknown_user_secret(secret, sizeof secret);
	explicit_bzero(secret, sizeof secret);
	return rc < 0 ? -1 : 0;
}

/* Each worker may hold limits.max_connections sockets: raise the descriptor
 * limit that far (root may raise the hard limit up to fs.nr_open). */
static void raise_fd_limit(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)cfg->max_connections + 1024;
	FILE *f = fopen("/proc/sys/fs/nr_open", "r");
	unsigned long nr_open = 0;
	if (f) {
		if (fscanf(f, "%lu", &nr_open) != 1)
			nr_open = 0;
		fclose(f);
	}
	if (nr_open && want > nr_open)
		want = nr_open;
	if (want > rl.rlim_max) {
		struct rlimit more = { want, want };
		if (setrlimit(RLIMIT_NOFILE, &more) == 0)
			return;
	}
	rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
	setrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur < (rlim_t)cfg->max_connections)
		log_info("the descriptor limit is %lu: each worker can hold about that many "
			 "connections (limits.max_connections is %u)", (unsigned long)rl.rlim_cur,
			 cfg->max_connections);
}

static int check_pid_file(void)
{
	FILE *f = fopen(cfg->pid_file, "r");
	if (f) {
		int pid = 0;
		if (fscanf(f, "%d", &pid) == 1 && pid > 0 && pid != getpid() &&
		    kill(pid, 0) == 0) {
			fclose(f);
			log_error("xmppd is already running with pid %d (pid file %s)", pid,
				  cfg->pid_file);
			return -1;
		}
		fclose(f);
	}
	char tmp[CONFIG_PATH_MAX + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", cfg->pid_file);
	f = fopen(tmp, "w");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0 ||
	    rename(tmp, cfg->pid_file) < 0) {
		log_error("cannot write pid file %s: %s", cfg->pid_file, strerror(errno));
		return -1;
	}
	return 0;
}

static int open_listener(const struct listener_config *l, bool probe)
{
	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, l->address, &in4->sin_addr) == 1) {
		in4->sin_family = AF_INET;
		in4->sin_port = htons(l->port);
		len = sizeof *in4;
	} else if (inet_pton(AF_INET6, l->address, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(l->port);
		len = sizeof *in6;
	} else {
		errno = EINVAL;
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (!probe)
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || (!probe && listen(fd, 4096) < 0)) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* One SO_REUSEPORT socket per listener per worker slot, all bound before
 * the first fork: a respawned worker takes over its slot's sockets, so the
 * connections queued on the other slots are never dropped. */
static int open_listeners(void)
{
	int n = cfg->worker_count * cfg->listener_count;
	listen_fds = calloc((size_t)n, sizeof *listen_fds);
	if (!listen_fds)
		return -1;
	/* SO_REUSEPORT would let a second server (another xmppd, say, with
	 * another data directory) bind the same address and silently take
	 * half of the connections: first prove the port free with a plain
	 * bind. */
	for (int l = 0; l < cfg->listener_count; l++) {
		const struct listener_config *lc = &cfg->listeners[l];
		int fd = open_listener(lc, true);
		if (fd < 0) {
			log_error("cannot listen on %s port %u: %s", lc->address, lc->port,
				  strerror(errno));
			return -1;
		}
		close(fd);
	}
	for (int w = 0; w < cfg->worker_count; w++) {
		for (int l = 0; l < cfg->listener_count; l++) {
			const struct listener_config *lc = &cfg->listeners[l];
			int fd = open_listener(lc, false);
			if (fd < 0) {
				log_error("cannot listen on %s port %u: %s", lc->address, lc->port,
					  strerror(errno));
				return -1;
			}
			listen_fds[w * cfg->listener_count + l] = fd;
		}
	}
	return 0;
}

/* ---- children ------------------------------------------------------------------- */

static void reset_child_signals(void)
{
	/* The worker sets up its own signalfd over the same blocked set. */
	close(signal_fd);
	if (control_fd >= 0)
		close(control_fd);
}

static pid_t spawn_worker(int index)
{
	struct shm_worker *w = &shm->workers[index];
	atomic_fetch_add(&w->generation, 1);
	atomic_store(&w->state, WORKER_STARTING);
	atomic_store(&w->connections, 0);
	atomic_store(&w->tls_reload_failed, 0);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("cannot fork worker %d: %s", index, strerror(errno));
		return -1;
	}
	if (pid == 0) {
		reset_child_signals();
		struct worker_args a = {
			.index = index,
			.cfg = cfg,
			.shm = shm,
			.listen_fds = &listen_fds[index * cfg->listener_count],
			.doorbells = doorbells,
			.supervisor_pid = parent,
			.tls = tls,
		};
		/* close the other slots' listening sockets */
		for (int i = 0; i < cfg->worker_count * cfg->listener_count; i++)
			if (i / cfg->listener_count != index)
				close(listen_fds[i]);
		_exit(worker_main(&a));
	}
	atomic_store(&w->pid, pid);
	slots[index].pid = pid;
	return pid;
}

static pid_t spawn_election(void)
{
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		log_error("cannot fork the election worker: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		reset_child_signals();
		for (int i = 0; i < cfg->worker_count * cfg->listener_count; i++)
			close(listen_fds[i]);
		_exit(election_main(cfg, shm, parent));
	}
	election.pid = pid;
	return pid;
}

static void describe_exit(int status, char *out, size_t cap)
{
	if (WIFSIGNALED(status))
		snprintf(out, cap, "killed by signal %d%s", WTERMSIG(status),
			 WCOREDUMP(status) ? " (core dumped)" : "");
	else
		snprintf(out, cap, "exited with status %d", WEXITSTATUS(status));
}

static void schedule_respawn(struct slot *s, const char *what)
{
	int64_t now = now_ms();
	if (now - s->window_start_ms > CRASH_WINDOW_MS) {
		s->window_start_ms = now;
		s->crashes = 0;
	}
	s->crashes++;
	int64_t delay = 0;
	if (s->crashes > CRASH_LIMIT) {
		delay = 1000LL << (s->crashes - CRASH_LIMIT - 1 > 5 ? 5 : s->crashes - CRASH_LIMIT - 1);
		if (delay > BACKOFF_MAX_MS)
			delay = BACKOFF_MAX_MS;
		log_warn("%s is crash-looping (%d deaths in %d s): next respawn in %lld ms", what,
			 s->crashes, CRASH_WINDOW_MS / 1000, (long long)delay);
	}
	s->respawn_at_ms = now + delay;
}

static void reap(void)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		char how[64];
		describe_exit(status, how, sizeof how);
		if (pid == election.pid) {
			election.pid = 0;
			/* killed mid-update, it would leave the seqlock odd */
			shm_cluster_recover(shm);
			if (stopping)
				continue;
			log_error("election worker (pid %d) %s; respawning", (int)pid, how);
			schedule_respawn(&election, "the election worker");
			continue;
		}
		for (int i = 0; i < cfg->worker_count; i++) {
			if (slots[i].pid != pid)
				continue;
			slots[i].pid = 0;
			struct shm_worker *w = &shm->workers[i];
			atomic_store(&w->state, WORKER_DEAD);
			atomic_store(&w->pid, 0);
			atomic_store(&w->connections, 0);
			/* Purge before respawning: the dead worker's sessions are
			 * gone, and a reservation it left half-written in any
			 * ring would block that ring's consumer forever. */
			int purged = sessdir_purge_worker(shm_sessdir(shm), (uint16_t)i);
			int reclaimed = 0;
			for (int r = 0; r < cfg->worker_count; r++)
				reclaimed += ring_reclaim(shm_ring(shm, (uint32_t)r), (uint16_t)i);
			if (stopping) {
				if (!quitting && (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
					log_warn("worker %d (pid %d) %s while stopping", i, (int)pid,
						 how);
				break;
			}
			if (WIFEXITED(status) && WEXITSTATUS(status) == WORKER_EXIT_FATAL) {
				slots[i].fatal = true;
				log_error("worker %d (pid %d) could not start; not respawning it "
					  "(see the errors above)", i, (int)pid);
				break;
			}
			log_error("worker %d (pid %d) %s; respawning (%d sessions purged, %d ring "
				  "reservations reclaimed)", i, (int)pid, how, purged, reclaimed);
			char what[32];
			snprintf(what, sizeof what, "worker %d", i);
			schedule_respawn(&slots[i], what);
			break;
		}
	}
}

static void respawn_due(void)
{
	int64_t now = now_ms();
	for (int i = 0; i < cfg->worker_count; i++) {
		struct slot *s = &slots[i];
		if (s->pid == 0 && !s->fatal && s->respawn_at_ms && now >= s->respawn_at_ms) {
			s->respawn_at_ms = 0;
			spawn_worker(i);
		}
	}
	if (election.pid == 0 && election.respawn_at_ms && now >= election.respawn_at_ms) {
		election.respawn_at_ms = 0;
		spawn_election();
	}
}

static void signal_children(int sig)
{
	for (int i = 0; i < cfg->worker_count; i++)
		if (slots[i].pid > 0)
			kill(slots[i].pid, sig);
	if (election.pid > 0)
		kill(election.pid, sig);
}

static bool children_alive(void)
{
	if (election.pid > 0)
		return true;
	for (int i = 0; i < cfg->worker_count; i++)
		if (slots[i].pid > 0)
			return true;
	return false;
}

static void check_ready(void)
{
	if (ready)
		return;
	for (int i = 0; i < cfg->worker_count; i++)
		if (atomic_load(&shm->workers[i].state) != WORKER_RUNNING)
			return;
	struct shm_cluster cl;
	shm_cluster_read(shm, &cl);
	if (cl.pid == 0)
		return;
	ready = true;
	log_info("xmppd ready: %d workers, %d listeners, domain %s", cfg->worker_count,
		 cfg->listener_count, cfg->domain);
}

/* ---- reload ------------------------------------------------------------------------ */

static void reload_answer(int status, const char *text)
{
	if (reload_client >= 0)
		control_reply(reload_client, status, text);
	reload_client = -1;
}

/* Build everything new first; publish only when all of it worked. Returns 0
 * when the workers were told, or -1 with the reason in ERR. */
static int reload_begin(char *err, size_t errlen)
{
	struct config *fresh = malloc(sizeof *fresh);
	if (!fresh) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (strcmp(cfg->source, "(built-in default)") == 0)
		config_default(fresh);
	else if (config_load(fresh, cfg->source, err, errlen) < 0) {
		free(fresh);
		return -1;
	}
	char key[CONFIG_PATH_MAX], cert[CONFIG_PATH_MAX];
	config_tls_paths(fresh, key, cert, sizeof key);
	struct tls_ctx *ctx = tls_ctx_load(key, cert, fresh->tls_bundle, err, errlen);
	if (!ctx) {
		free(fresh);
		return -1;
	}
	struct tls_cert_info info;
	tls_ctx_cert_info(ctx, &info);

	/* Everything below only swaps state and cannot fail. */
	if (fresh->listener_count != cfg->listener_count ||
	    memcmp(fresh->listeners, cfg->listeners, sizeof cfg->listeners) ||
	    fresh->worker_count != cfg->worker_count || strcmp(fresh->data_dir, cfg->data_dir) ||
	    strcmp(fresh->domain, cfg->domain))
		log_warn("reload: listeners, workers, data_dir and domain changes take effect "
			 "at the next restart");
	if (fresh->log_level != cfg->log_level) {
		cfg->log_level = fresh->log_level;
		log_set_level(cfg->log_level);
	}
	tls_ctx_free(tls);
	tls = ctx;
	cert_info = info;
	snprintf(tls_key_path, sizeof tls_key_path, "%s", key);
	snprintf(tls_cert_path, sizeof tls_cert_path, "%s", cert);
	snprintf(cfg->tls_key, sizeof cfg->tls_key, "%s", fresh->tls_key);
	snprintf(cfg->tls_cert, sizeof cfg->tls_cert, "%s", fresh->tls_cert);
	snprintf(cfg->tls_bundle, sizeof cfg->tls_bundle, "%s", fresh->tls_bundle);
	free(fresh);

	struct shm_control *ctl = &shm->control;
	atomic_store(&ctl->log_level, (uint32_t)cfg->log_level);
	snprintf(ctl->tls_key, sizeof ctl->tls_key, "%s", key);
	snprintf(ctl->tls_cert, sizeof ctl->tls_cert, "%s", cert);
	snprintf(ctl->tls_bundle, sizeof ctl->tls_bundle, "%s", cfg->tls_bundle);
	reload_target = atomic_fetch_add_explicit(&ctl->reload_generation, 1,
						  memory_order_release) + 1;
	reload_deadline_ms = now_ms() + RELOAD_ACK_TIMEOUT_MS;
	signal_children(SIGHUP);
	log_info("reload: new configuration and certificate %s (expires %lld) accepted; "
		 "workers are switching", cert, (long long)info.not_after);
	return 0;
}

static void reload(int client)
{
	char err[1024];
	if (reload_client >= 0) {
		if (client >= 0)
			control_reply(client, 1, "reload failed: another reload is in progress\n");
		return;
	}
	if (reload_begin(err, sizeof err) < 0) {
		log_error("reload failed: %s; the running configuration stays", err);
		if (client >= 0) {
			char msg[1100];
			snprintf(msg, sizeof msg, "reload failed: %s\n", err);
			control_reply(client, 1, msg);
		}
		return;
	}
	reload_client = client;
	if (client < 0)
		reload_client = -2; /* SIGHUP: nobody to answer, still track acks */
}

static void reload_progress(void)
{
	if (reload_client == -1)
		return;
	int pending = 0, failed = -1;
	for (int i = 0; i < cfg->worker_count; i++) {
		struct shm_worker *w = &shm->workers[i];
		if (slots[i].pid <= 0 || atomic_load(&w->state) != WORKER_RUNNING)
			continue; /* a worker starting now loads the new files anyway */
		if (atomic_load(&w->reload_generation_seen) < reload_target)
			pending++;
		else if (atomic_load(&w->tls_reload_failed))
			failed = i;
	}
	if (pending && now_ms() < reload_deadline_ms)
		return;
	int fd = reload_client;
	reload_client = -1;
	char msg[256];
	int status = 0;
	if (failed >= 0) {
		snprintf(msg, sizeof msg, "reload failed: worker %d could not load the new "
			 "certificate (see its log line)\n", failed);
		status = 1;
	} else if (pending) {
		snprintf(msg, sizeof msg, "reload failed: %d workers did not confirm in time\n",
			 pending);
		status = 1;
	} else {
		snprintf(msg, sizeof msg, "reload: ok\n");
		log_info("reload complete: every worker serves %s", tls_cert_path);
	}
	if (fd >= 0)
		control_reply(fd, status, msg);
	else if (status)
		log_error("%.*s", (int)strlen(msg) - 1, msg);
}

/* ---- control commands ------------------------------------------------------------- */

struct text {
	char *s;
	size_t len, cap;
};

static void tprintf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void tprintf(struct text *t, const char *fmt, ...)
{
	va_list ap;
	for (;;) {
		size_t room = t->cap - t->len;
		va_start(ap, fmt);
		int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? room : 0, fmt, ap);
		va_end(ap);
		if (n < 0)
			return;
		if (t->s && (size_t)n < room) {
			t->len += (size_t)n;
			return;
		}
		size_t cap = t->cap ? t->cap * 2 : 4096;
		while (cap < t->len + (size_t)n + 1)
			cap *= 2;
		char *p = realloc(t->s, cap);
		if (!p)
			return;
		t->s = p;
		t->cap = cap;
	}
}

static void format_time(int64_t unix_s, char *out, size_t cap)
{
	time_t t = (time_t)unix_s;
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static const char *worker_state_name(uint32_t s)
{
	switch (s) {
	case WORKER_STARTING: return "starting";
	case WORKER_RUNNING: return "running";
	case WORKER_STOPPING: return "stopping";
	case WORKER_DEAD: return "dead";
	default: return "empty";
	}
}

/* "3 minutes", "1 hour", "12 seconds": how operators read durations. */
static void format_duration(int64_t ms, char *out, size_t cap)
{
	int64_t s = ms < 0 ? 0 : ms / 1000;
	const char *unit = "second";
	int64_t n = s;
	if (s >= 86400)
		n = s / 86400, unit = "day";
	else if (s >= 3600)
		n = s / 3600, unit = "hour";
	else if (s >= 60)
		n = s / 60, unit = "minute";
	snprintf(out, cap, "%lld %s%s", (long long)n, unit, n == 1 ? "" : "s");
}

struct bridge_walk {
	struct text *t;
	int count;
	struct sessdir_entry oldest;
};

/* Components are the directory's entries without '@' or '/'. */
static int bridge_line(const struct sessdir_entry *e, void *arg)
{
	struct bridge_walk *w = arg;
	char name[64], since[48];
	if (strchr(e->jid, '@') || strchr(e->jid, '/'))
		return 0;
	if (config_callbridge_name(cfg, e->jid, name) < 0)
		snprintf(name, sizeof name, "?");
	format_duration(now_ms() - e->since_ms, since, sizeof since);
	tprintf(w->t, "call bridge: %s %s from %s on worker %u for %s%s\n", name, e->jid,
		e->address, e->worker, since, e->tls ? " (TLS)" : "");
	if (!w->count++ || e->since_ms < w->oldest.since_ms)
		w->oldest = *e;
	return 0;
}

static void status_callbridges(struct text *t)
{
	struct bridge_walk w = { .t = t };
	sessdir_foreach(shm_sessdir(shm), bridge_line, &w);
	tprintf(t, "call bridges connected: %d\n", w.count);
	tprintf(t, "authentication: %s\n", config_auth_mode_name(cfg->auth));
	if (cfg->auth != AUTH_CALLBRIDGE)
		return;
	if (!w.count) {
		tprintf(t, "authentication service: no authentication components found\n");
		return;
	}
	char name[SESSDIR_JID_MAX], since[48];
	if (config_callbridge_name(cfg, w.oldest.jid, name) < 0)
		snprintf(name, sizeof name, "%s", w.oldest.jid);
	format_duration(now_ms() - w.oldest.since_ms, since, sizeof since);
	tprintf(t, "authentication service: registered (%s) for %s\n", name, since);
}

static void cmd_status(struct text *t)
{
	struct shm_cluster cl;
	shm_cluster_read(shm, &cl);
	char when[32];
	tprintf(t, "version: %s\n", XMPPD_VERSION);
	tprintf(t, "uptime: %lld s\n", (long long)(now_ms() / 1000 - shm->control.start_time));
	tprintf(t, "node: %s\n", cfg->node_name);
	tprintf(t, "domain: %s\n", cfg->domain);
	tprintf(t, "config: %s\n", cfg->source);
	tprintf(t, "cluster role: %s\n", shm_role_name((enum shm_role)cl.role));
	tprintf(t, "accepting: %s\n", atomic_load(&shm->control.accepting) ? "yes" : "no");
	tprintf(t, "sessions: %u\n", sessdir_count(shm_sessdir(shm)));
	uint32_t conns = 0;
	for (int i = 0; i < cfg->worker_count; i++) {
		struct shm_worker *w = &shm->workers[i];
		conns += atomic_load(&w->connections);
		tprintf(t, "worker %d: pid %d state %s connections %u stanzas_in %llu "
			   "stanzas_out %llu\n", i, (int)atomic_load(&w->pid),
			worker_state_name(atomic_load(&w->state)), atomic_load(&w->connections),
			(unsigned long long)atomic_load(&w->stanzas_in),
			(unsigned long long)atomic_load(&w->stanzas_out));
	}
	tprintf(t, "connections: %u\n", conns);
	tprintf(t, "election worker: pid %d\n", (int)election.pid);
	for (int l = 0; l < cfg->listener_count; l++) {
		const struct listener_config *lc = &cfg->listeners[l];
		bool v6 = strchr(lc->address, ':') != NULL;
		tprintf(t, "listener: %s %s%s%s:%u tls=%s\n", config_listener_type_name(lc->type),
			v6 ? "[" : "", lc->address, v6 ? "]" : "", lc->port,
			config_tls_mode_name(lc->tls));
	}
	status_callbridges(t);
	tprintf(t, "tls key: %s\n", tls_key_path);
	tprintf(t, "tls certificate: %s\n", tls_cert_path);
	tprintf(t, "tls bundle: %s\n", cfg->tls_bundle[0] ? cfg->tls_bundle : "-");
	format_time(cert_info.not_after, when, sizeof when);
	tprintf(t, "tls certificate expires: %s\n", when);
	tprintf(t, "tls certificate sha256: %s\n", cert_info.sha256_fp);
	tprintf(t, "tls certificate names: %s\n", cert_info.sans[0] ? cert_info.sans : "-");
}

static int session_line(const struct sessdir_entry *e, void *arg)
{
	tprintf(arg, "%s %u %s %s\n", e->jid, e->worker, e->address, e->tls ? "yes" : "no");
	return 0;
}

static void cmd_cluster_status(struct text *t)
{
	struct shm_cluster cl;
	shm_cluster_read(shm, &cl);
	char when[32];
	format_time(cl.last_change_ms / 1000, when, sizeof when);
	tprintf(t, "node: %s (id %08x)\n", cl.node_name, cl.node_id);
	tprintf(t, "role: %s\n", shm_role_name((enum shm_role)cl.role));
	tprintf(t, "term: %llu\n", (unsigned long long)cl.term);
	tprintf(t, "leader: %s\n", cl.role == ROLE_STANDALONE ? "- (no cluster configured)"
							     : cl.leader_address);
	tprintf(t, "last state change: %s\n", when);
	tprintf(t, "peers: %u\n", cl.peer_count);
	for (uint32_t i = 0; i < cl.peer_count && i < SHM_MAX_PEERS; i++)
		tprintf(t, "peer: %s %s %s\n", cl.peers[i].name, cl.peers[i].address,
			cl.peers[i].healthy ? "healthy" : "unreachable");
	tprintf(t, "tls key: %s\n", tls_key_path);
	tprintf(t, "tls certificate: %s\n", tls_cert_path);
	tprintf(t, "trust bundle: %s\n", cfg->tls_bundle[0] ? cfg->tls_bundle : "-");
}

static void set_accepting(bool on)
{
	atomic_store(&shm->control.accepting, on ? 1 : 0);
	for (int i = 0; i < cfg->worker_count; i++)
		if (slots[i].pid > 0)
			kill(slots[i].pid, SIGUSR2);
	log_info("%s accepting new connections", on ? "resumed" : "stopped");
}

static void begin_stop(const char *why, int sig)
{
	if (stopping)
		return;
	stopping = true;
	atomic_store(&shm->control.stopping, 1);
	stop_deadline_ms = now_ms() + cfg->drain_timeout_ms + STOP_GRACE_EXTRA_MS;
	log_info("stopping (%s)", why);
	signal_children(sig);
}

static void handle_control(void)
{
	char req[CONTROL_REQUEST_MAX];
	int fd = control_accept(control_fd, req, sizeof req);
	if (fd < 0)
		return;
	struct text t = { 0 };
	int status = 0;
	if (!strcmp(req, "status")) {
		cmd_status(&t);
	} else if (!strcmp(req, "sessions")) {
		tprintf(&t, "JID WORKER ADDRESS TLS\n");
		sessdir_foreach(shm_sessdir(shm), session_line, &t);
	} else if (!strcmp(req, "cluster status")) {
		cmd_cluster_status(&t);
	} else if (!strcmp(req, "reload")) {
		reload(fd);
		return; /* answered when the workers have switched */
	} else if (!strcmp(req, "enable")) {
		set_accepting(true);
		tprintf(&t, "accepting: yes\n");
	} else if (!strcmp(req, "disable")) {
		set_accepting(false);
		tprintf(&t, "accepting: no\n");
	} else if (!strcmp(req, "stop")) {
		tprintf(&t, "stopping\n");
		control_reply(fd, 0, t.s);
		free(t.s);
		begin_stop("xmppctl stop", SIGTERM);
		return;
	} else {
		tprintf(&t, "unknown command: %s\n", req);
		status = 1;
	}
	control_reply(fd, status, t.s ? t.s : "");
	free(t.s);
}

/* ---- the loop --------------------------------------------------------------------- */

static int setup_signals(void)
{
	sigset_t set;
	sigemptyset(&set);
	int sigs[] = { SIGCHLD, SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2 };
	for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
		sigaddset(&set, sigs[i]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal_fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	return signal_fd < 0 ? -1 : 0;
}

static void handle_signals(void)
{
	struct signalfd_siginfo si;
	while (read(signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap();
			break;
		case SIGHUP:
			log_info("SIGHUP: reloading");
			reload(-1);
			break;
		case SIGTERM:
			begin_stop("SIGTERM", SIGTERM);
			break;
		case SIGINT:
			begin_stop("SIGINT", SIGTERM);
			break;
		case SIGQUIT:
			log_info("SIGQUIT: stopping at once");
			signal_children(SIGKILL);
			stopping = quitting = true;
			stop_deadline_ms = now_ms();
			break;
		case SIGUSR1:
			log_open(cfg->log_file);
			signal_children(SIGUSR1);
			log_info("log file reopened");
			break;
		}
	}
}

static void cleanup(void)
{
	if (control_fd >= 0) {
		close(control_fd);
		unlink(cfg->control_socket);
	}
	unlink(cfg->pid_file);
	tls_ctx_free(tls);
	tls = NULL;
}

int supervisor_run(struct config *config)
{
	cfg = config;
	log_set_name("supervisor");
	prctl(PR_SET_NAME, "xmppd");
	if (setup_signals() < 0) {
		log_error("signalfd: %s", strerror(errno));
		return 1;
	}
	int rc = mkdir_p(cfg->data_dir, 0700);
	if (rc < 0) {
		log_error("cannot create data directory %s: %s", cfg->data_dir, strerror(-rc));
		return 1;
	}
	if (check_pid_file() < 0)
		return 1;
	raise_fd_limit();
	tls_global_init();
	if (load_sasl_secret() < 0 || ensure_tls_files() < 0)
		goto fail;
	char err[1024];
	tls = tls_ctx_load(tls_key_path, tls_cert_path, cfg->tls_bundle, err, sizeof err);
	if (!tls) {
		log_error("TLS: %s", err);
		goto fail;
	}
	tls_ctx_cert_info(tls, &cert_info);
	if (open_listeners() < 0)
		goto fail;

	/* Room for at least four of the largest stanzas; rings are sized in
	 * powers of two, and pages are only resident once used. */
	uint64_t ring_bytes = 8u << 20;
	while (ring_bytes < (uint64_t)cfg->max_stanza_size * 4)
		ring_bytes *= 2;
	shm = shm_create((uint32_t)cfg->worker_count, cfg->max_sessions, ring_bytes);
	if (!shm) {
		log_error("cannot create the shared-memory segment: %s", strerror(errno));
		goto fail;
	}
	shm->control.start_time = now_ms() / 1000;
	atomic_store(&shm->control.accepting, 1);
	atomic_store(&shm->control.log_level, (uint32_t)cfg->log_level);
	snprintf(shm->control.tls_key, sizeof shm->control.tls_key, "%s", tls_key_path);
	snprintf(shm->control.tls_cert, sizeof shm->control.tls_cert, "%s", tls_cert_path);
	snprintf(shm->control.tls_bundle, sizeof shm->control.tls_bundle, "%s", cfg->tls_bundle);

	doorbells = calloc((size_t)cfg->worker_count, sizeof *doorbells);
	slots = calloc((size_t)cfg->worker_count, sizeof *slots);
	if (!doorbells || !slots)
		goto fail;
	for (int i = 0; i < cfg->worker_count; i++) {
		doorbells[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (doorbells[i] < 0) {
			log_error("eventfd: %s", strerror(errno));
			goto fail;
		}
	}
	control_fd = control_listen(cfg->control_socket);
	if (control_fd < 0) {
		log_error("cannot open the control socket %s: %s", cfg->control_socket,
			  strerror(-control_fd));
		goto fail;
	}
	log_info("xmppd %s starting: node %s, domain %s, config %s", XMPPD_VERSION,
		 cfg->node_name, cfg->domain, cfg->source);

	if (spawn_election() < 0)
		goto fail;
	for (int i = 0; i < cfg->worker_count; i++)
		if (spawn_worker(i) < 0)
			goto fail;

	while (!stopping || children_alive()) {
		struct pollfd p[2] = {
			{ .fd = signal_fd, .events = POLLIN },
			{ .fd = control_fd, .events = POLLIN },
		};
		int timeout = (!ready || reload_client != -1) ? 20 : 500;
		poll(p, 2, timeout);
		if (p[0].revents)
			handle_signals();
		if (p[1].revents)
			handle_control();
		if (!stopping) {
			respawn_due();
			check_ready();
		}
		reload_progress();
		if (stopping && now_ms() > stop_deadline_ms && children_alive()) {
			log_warn("children still running after the drain timeout: killing them");
			signal_children(SIGKILL);
			stop_deadline_ms = now_ms() + 1000;
		}
	}
	reload_answer(1, "reload failed: xmppd stopped\n");
	log_info("stopped");
	cleanup();
	shm_destroy(shm);
	return 0;
fail:
	if (slots) {
		stopping = true;
		signal_children(SIGKILL);
		while (waitpid(-1, NULL, 0) > 0)
			;
	}
	cleanup();
	return 1;
}
