/*
 * election.c: the election worker (see election.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "election/election.h"

#define HEARTBEAT_MS 500

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int election_node_id(const char *data_dir, uint32_t *id)
{
	char path[CONFIG_PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/node-id", data_dir);
	FILE *f = fopen(path, "r");
	if (f) {
		unsigned v;
		int ok = fscanf(f, "%x", &v) == 1;
		fclose(f);
		if (ok && v) {
			*id = v;
			return 0;
		}
	}
	uint32_t v = 0;
	while (v == 0)
		if (getrandom(&v, sizeof v, 0) != sizeof v)
			return -errno;
	char tmp[CONFIG_PATH_MAX + 24];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	fprintf(f, "%08x\n", v);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		int e = errno;
		fclose(f);
		return -e;
	}
	fclose(f);
	if (rename(tmp, path) < 0)
		return -errno;
	*id = v;
	return 0;
}

static void publish_standalone(struct shm_segment *shm, const struct config *cfg, uint32_t id)
{
	shm_cluster_write_begin(shm);
	struct shm_cluster *cl = &shm->cluster;
	bool first = cl->pid == 0 && cl->last_change_ms == 0;
	cl->node_id = id;
	if (first || cl->role != ROLE_STANDALONE)
		cl->last_change_ms = wall_ms();
	cl->role = ROLE_STANDALONE;
	cl->term = 0;
	cl->leader_id = 0;
	cl->peer_count = 0;
	snprintf(cl->node_name, sizeof cl->node_name, "%s", cfg->node_name);
	cl->leader_address[0] = '\0';
	cl->heartbeat_ms = wall_ms();
	cl->pid = getpid();
	shm_cluster_write_end(shm);
}

int election_main(const struct config *cfg, struct shm_segment *shm, pid_t supervisor)
{
	log_set_name("election");
	prctl(PR_SET_NAME, "xmppd-election");
	prctl(PR_SET_PDEATHSIG, SIGTERM);
	if (getppid() != supervisor)
		return 0;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGQUIT);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGHUP);
	sigprocmask(SIG_BLOCK, &set, NULL);
	int sfd = signalfd(-1, &set, SFD_CLOEXEC);
	if (sfd < 0) {
		log_error("signalfd: %s", strerror(errno));
		return 3;
	}
	uint32_t id;
	int rc = election_node_id(cfg->data_dir, &id);
	if (rc < 0) {
		log_error("cannot read or create the node id in %s: %s", cfg->data_dir,
			  strerror(-rc));
		return 3;
	}
	publish_standalone(shm, cfg, id);
	log_info("election worker started (pid %d): node %s id %08x, role STANDALONE "
		 "(no cluster configured)", (int)getpid(), cfg->node_name, id);
	for (;;) {
		struct pollfd p = { .fd = sfd, .events = POLLIN };
		if (poll(&p, 1, HEARTBEAT_MS) > 0) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
				if (si.ssi_signo == SIGUSR1)
					log_open(cfg->log_file);
				else if (si.ssi_signo != SIGHUP)
					break;
			}
		}
		if (getppid() != supervisor)
			break;
		shm_cluster_write_begin(shm);
		shm->cluster.heartbeat_ms = wall_ms();
		shm_cluster_write_end(shm);
	}
	return 0;
}
