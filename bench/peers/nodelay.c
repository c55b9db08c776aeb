/*
 * LD_PRELOAD shim used by bench/compare for jabberd2 only: jabberd2 2.7 has
 * no setting for TCP_NODELAY and leaves Nagle's algorithm on for every client
 * socket (strace shows only SO_REUSEADDR), so each login round trip waits for
 * a delayed ACK (~100 ms per login where the others take a few ms). Every
 * other server in the comparison runs with TCP_NODELAY; this gives jabberd2
 * the same by setting it on each socket accept() returns and each socket it
 * connects (c2s and sm to the router carry every stanza too).
 *
 * Built by bench/compare into its scratch directory:
 *   cc -shared -fPIC -O2 -o nodelay.so bench/peers/nodelay.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

typedef int accept4_fn(int, struct sockaddr *, socklen_t *, int);
typedef int accept_fn(int, struct sockaddr *, socklen_t *);
typedef int connect_fn(int, const struct sockaddr *, socklen_t);

/* Fails quietly on sockets that are not TCP. */
static int with_nodelay(int fd)
{
	int one = 1;

	if (fd >= 0)
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	return fd;
}

int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
	static accept4_fn *real;

	if (!real)
		real = (accept4_fn *)dlsym(RTLD_NEXT, "accept4");
	return with_nodelay(real(fd, addr, len, flags));
}

int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
	static accept_fn *real;

	if (!real)
		real = (accept_fn *)dlsym(RTLD_NEXT, "accept");
	return with_nodelay(real(fd, addr, len));
}

/* A non-blocking connect returns -1 with EINPROGRESS: the option still
 * applies to the socket, so set it whatever the result and keep errno. */
int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	static connect_fn *real;
	int one = 1, rc, saved;

	if (!real)
		real = (connect_fn *)dlsym(RTLD_NEXT, "connect");
	rc = real(fd, addr, len);
	saved = errno;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	errno = saved;
	return rc;
}
