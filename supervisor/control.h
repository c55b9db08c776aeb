/*
 * control: the control socket xmppctl talks to (a UNIX stream socket, mode
 * 0600, in the data directory by default).
 *
 * Protocol: the client sends one request line ("status\n", "reload\n", ...)
 * and reads the answer until the server closes: the first line is the exit
 * status xmppctl should return (0 ok, 1 the command failed), the rest is the
 * text to print. One request per connection.
 */
#ifndef XMPPD_CONTROL_H
#define XMPPD_CONTROL_H

#include <stddef.h>

#define CONTROL_REQUEST_MAX 1024

/* Bind and listen on PATH (replacing a stale socket). Returns fd or -errno. */
int control_listen(const char *path);
/* Accept one client and read its request line into REQ (NUL-terminated,
 * newline stripped). Returns the client fd, or -errno. */
int control_accept(int listen_fd, char *req, size_t cap);
/* Send STATUS and TEXT to the client and close it. */
void control_reply(int fd, int status, const char *text);

/* Client side (xmppctl): send REQ, read the whole answer into a malloc'd
 * string (*OUT, status line removed) and return the status, or -errno when
 * the server cannot be reached. */
int control_request(const char *path, const char *req, char **out);

#endif
