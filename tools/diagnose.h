/*
 * diagnose: `xmppctl diagnose [options] [DOMAIN]`, the checks the meeting
 * appliance's troubleshooting guides make by hand, each finding printed
 * with its cause and its fix.
 *
 * Checked: the SRV records _xmpp-client._tcp, _xmpp-server._tcp and
 * _xmpp-component._tcp of DOMAIN (present, every target resolves, every
 * target's port answers); the node's certificate (its SANs cover DOMAIN and
 * every node FQDN the SRV records name, the key matches, the chain verifies
 * against the configured bundle, expiry); call-bridge secrets present.
 * DOMAIN defaults to the configured domain.
 */
#ifndef XMPPD_DIAGNOSE_H
#define XMPPD_DIAGNOSE_H

#include "common/config.h"

/* ARGC/ARGV start at the word "diagnose". Prints findings on stdout.
 * Returns xmppctl's exit status: 0 all clean, 1 something is wrong,
 * 2 usage. */
int diagnose_main(const struct config *cfg, int argc, char **argv);

#endif
