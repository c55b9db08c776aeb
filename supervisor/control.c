/*
 * control.c: the control socket's transport (see control.h). The commands
 * themselves are carried out by the supervisor (supervisor.c).
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "supervisor/control.h"

static int fill_addr(struct sockaddr_un *sa, const char *path)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa->sun_path)
		return -ENAMETOOLONG;
	strcpy(sa->sun_path, path);
	return 0;
}

int control_listen(const char *path)
{
	struct sockaddr_un sa;
	int rc = fill_addr(&sa, path);
	if (rc < 0)
		return rc;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(path); /* the pid file check has already ruled out a live owner */
	mode_t old = umask(077);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (rc < 0 || listen(fd, 64) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	chmod(path, 0600);
	return fd;
}

int control_accept(int listen_fd, char *req, size_t cap)
{
	int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return -errno;
	size_t len = 0;
	/* xmppctl writes its one line at once; give a slow client 1 s. */
	while (len + 1 < cap) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 1000) <= 0)
			break;
		ssize_t n = read(fd, req + len, cap - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(req, '\n', len))
			break;
	}
	req[len] = '\0';
	char *nl = strchr(req, '\n');
	if (!nl) {
		close(fd);
		return -EPROTO;
	}
	*nl = '\0';
	return fd;
}

static void write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = fd, .events = POLLOUT };
				if (poll(&p, 1, 1000) > 0)
					continue;
			}
			return;
		}
		s += n;
		len -= (size_t)n;
	}
}

void control_reply(int fd, int status, const char *text)
{
	char head[16];
	int n = snprintf(head, sizeof head, "%d\n", status);
	write_all(fd, head, (size_t)n);
	write_all(fd, text, strlen(text));
	close(fd);
}

int control_request(const char *path, const char *req, char **out)
{
	struct sockaddr_un sa;
	int rc = fill_addr(&sa, path);
	if (rc < 0)
		return rc;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	write_all(fd, req, strlen(req));
	write_all(fd, "\n", 1);
	size_t len = 0, cap = 4096;
	char *buf = malloc(cap);
	for (;;) {
		if (!buf) {
			close(fd);
			return -ENOMEM;
		}
		if (len + 1 == cap) {
			char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				close(fd);
				return -ENOMEM;
			}
			buf = nb;
			cap *= 2;
		}
		ssize_t n = read(fd, buf + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	char *nl = strchr(buf, '\n');
	if (!nl) {
		free(buf);
		return -EPROTO;
	}
	int status = atoi(buf);
	memmove(buf, nl + 1, strlen(nl + 1) + 1);
	*out = buf;
	return status;
}
