/*
 * xmppd: the entry point. Parses the command line, loads and validates the
 * node layout, then hands over to the supervisor.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/config.h"
#include "common/log.h"
#include "supervisor/supervisor.h"

static void usage(FILE *to)
{
	fprintf(to, "usage: xmppd [-c FILE] [-t] [-V]\n"
		    "  -c FILE  node layout (YAML); without it the built-in default:\n"
		    "           domain localhost, c2s on 127.0.0.1:5222, data in ./xmppd-data\n"
		    "  -t       check the configuration and exit\n"
		    "  -V       print the version and exit\n");
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	bool check_only = false;
	int opt;
	while ((opt = getopt(argc, argv, "c:thV")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = true;
			break;
		case 'V':
			printf("xmppd %s\n", XMPPD_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	static struct config cfg;
	char err[CONFIG_ERR_MAX];
	if (path) {
		if (config_load(&cfg, path, err, sizeof err) < 0) {
			fprintf(stderr, "xmppd: %s\n", err);
			return 1;
		}
	} else {
		config_default(&cfg);
	}
	if (check_only) {
		printf("xmppd: %s: configuration ok\n", cfg.source);
		return 0;
	}
	log_set_level(cfg.log_level);
	if (log_open(cfg.log_file) < 0) {
		fprintf(stderr, "xmppd: cannot open log file %s\n", cfg.log_file);
		return 1;
	}
	return supervisor_run(&cfg);
}
