/*
 * election: the election worker, a process of its own from the start.
 *
 * It owns the cluster section of shared memory (the only writer, under the
 * section's seqlock). Without cluster configuration, the only kind there is
 * today, it publishes the role STANDALONE with this node's id and name and
 * keeps a heartbeat; membership, keep-alives and leader election through
 * etcd come with the cluster issue and plug in here, not elsewhere.
 *
 * The node id is kept in DATA_DIR/node-id (created on first start, random)
 * so a node keeps its identity across restarts.
 */
#ifndef XMPPD_ELECTION_H
#define XMPPD_ELECTION_H

#include <sys/types.h>

#include "common/config.h"
#include "shm/shm.h"

/* Runs in the forked child; returns its exit status. */
int election_main(const struct config *cfg, struct shm_segment *shm, pid_t supervisor);

/* Read DATA_DIR/node-id, creating it when missing. 0 or -errno. */
int election_node_id(const char *data_dir, uint32_t *id);

#endif
