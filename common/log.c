/*
 * log: one line per event, written with a single write(2).
 *
 * Why one write of at most LOG_LINE_MAX bytes: every process shares the
 * destination. On a file opened with O_APPEND the kernel moves to the end and
 * writes in one step, and a write of at most PIPE_BUF bytes to a pipe (stderr
 * under systemd or a test harness) is never split by another process's write.
 * So a line is built whole in a stack buffer, cut with "..." if it would not
 * fit, and written once.
 *
 * Control characters in a message (newlines above all) become spaces: one
 * event stays one line, and a peer-supplied string such as a JID cannot forge
 * a line of its own or send escape sequences to an operator's terminal.
 *
 * State is per process and unlocked: each process is single-threaded.
 */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 2048 /* newline included */
_Static_assert(LOG_LINE_MAX <= PIPE_BUF, "a line must reach a pipe in one atomic write");

static int log_fd = STDERR_FILENO;
static bool log_fd_owned; /* false while log_fd is stderr, which we never close */
static enum log_level log_threshold = LOG_LEVEL_INFO;
static char log_name[32];

int log_open(const char *path)
{
	int fd = STDERR_FILENO;

	if (path && path[0]) {
		/* On failure the old destination stays: a bad USR1 reopen or
		 * reload must not leave the process without a log. */
		fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
		if (fd < 0)
			return -errno;
	}
	if (log_fd_owned)
		close(log_fd);
	log_fd = fd;
	log_fd_owned = path && path[0];
	return 0;
}

void log_set_level(enum log_level level)
{
	log_threshold = level;
}

void log_set_name(const char *name)
{
	snprintf(log_name, sizeof log_name, "%s", name ? name : "");
}

static const char *level_name(enum log_level level)
{
	switch (level) {
	case LOG_LEVEL_DEBUG:
		return "DEBUG";
	case LOG_LEVEL_INFO:
		return "INFO";
	case LOG_LEVEL_WARN:
		return "WARN";
	case LOG_LEVEL_ERROR:
		break;
	}
	return "ERROR";
}

/* Cut LINE[HEAD..LEN) at MAX bytes with a "..." marker, never inside a
 * UTF-8 sequence. Returns the new length. */
static size_t truncate_marked(char *line, size_t head, size_t max)
{
	size_t cut = max - 3;

	while (cut > head && ((unsigned char)line[cut] & 0xc0) == 0x80)
		cut--;
	memcpy(line + cut, "...", 3);
	return cut + 3;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	char line[LOG_LINE_MAX];
	struct timespec now;
	struct tm tm;
	va_list ap;
	size_t head, len;
	int n, saved_errno = errno; /* callers log and then look at errno */

	if (level < log_threshold)
		return;
	clock_gettime(CLOCK_REALTIME, &now);
	gmtime_r(&now.tv_sec, &tm);
	n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s [%s] ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, now.tv_nsec / 1000000, level_name(level),
		     log_name[0] ? log_name : program_invocation_short_name);
	if (n < 0)
		goto out;
	head = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;

	va_start(ap, fmt);
	n = vsnprintf(line + head, sizeof line - head, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	len = head + (size_t)n;
	if (len > sizeof line - 1) /* room for the newline */
		len = truncate_marked(line, head, sizeof line - 1);

	for (size_t i = head; i < len; i++)
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = ' ';
	line[len++] = '\n';

	/* Short writes only happen on a full disk or a non-blocking pipe;
	 * finish the line if the kernel lets us, and give up otherwise:
	 * there is nowhere left to report a logging failure. */
	for (size_t done = 0; done < len;) {
		ssize_t w = write(log_fd, line + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		done += (size_t)w;
	}
out:
	errno = saved_errno;
}
