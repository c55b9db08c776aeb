/*
 * log: one line per event, "2026-11-21T23:44:01.123Z LEVEL [who] message".
 *
 * Every process (supervisor, workers, election worker) writes to the same
 * destination with O_APPEND and a single write(2) per line, so lines from
 * different processes never interleave inside a line. Never pass a secret or
 * a password to these functions.
 */
#ifndef XMPPD_LOG_H
#define XMPPD_LOG_H

#include "common/config.h"

/* Open PATH (append) or use stderr when PATH is NULL or empty.
 * Returns 0 or -errno. Safe to call again (USR1 reopen). */
int log_open(const char *path);
void log_set_level(enum log_level level);
/* "supervisor", "worker 1", "election" ... shown in brackets. */
void log_set_name(const char *name);

void log_msg(enum log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
