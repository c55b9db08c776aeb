/*
 * supervisor: the xmppd master process.
 *
 * Contracts (decided here, relied on by workers, xmppctl and the tests):
 * - Start-up: the configuration is validated and every listening socket,
 *   the TLS context, the shared-memory segment and the control socket exist
 *   before the first fork; any failure there exits 1 with one error line.
 * - Readiness: "xmppd ready" is logged once every worker slot reports
 *   RUNNING in shared memory and the election worker has published its role.
 * - Respawn: a worker that dies is respawned into the same slot after its
 *   session-directory entries and ring reservations are purged; a worker
 *   that exits with WORKER_EXIT_FATAL is not respawned (it could not start:
 *   respawning would only loop); more than CRASH_LIMIT deaths of one slot
 *   within CRASH_WINDOW back the respawn off exponentially, up to 30 s.
 * - Workers exit on their own when the supervisor dies (PR_SET_PDEATHSIG,
 *   and a parent-pid check on every tick).
 * - Signals: HUP reload (a transaction), TERM/INT graceful stop (exit 0),
 *   QUIT immediate stop, USR1 reopen logs. No work in signal handlers: the
 *   supervisor reads a signalfd in its poll loop.
 */
#ifndef XMPPD_SUPERVISOR_H
#define XMPPD_SUPERVISOR_H

#include "common/config.h"

#define XMPPD_VERSION "0.1.0"

/* Run the node until it is stopped. CFG was validated by the caller.
 * Returns the process exit status. */
int supervisor_run(struct config *cfg);

#endif
