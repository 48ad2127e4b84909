/*
 * The benchmark's backends, one thread, epoll. Listens on three ports of
 * 127.0.0.1 and prints {"echo":P,"duplex":P,"rr":P} once all accept:
 *
 *   echo    writes back what it reads (ping-pong); a FIN from the client is
 *           answered with a FIN once all is written.
 *   duplex  discards what it reads and writes a constant stream at the same
 *           time, as fast as the connection takes it (bulk, both directions).
 *   rr      reads a 32-byte request, answers 32 bytes and closes (new
 *           connections/s, TLS handshakes). The server closes first, as in
 *           HTTP/1.0: TIME_WAIT then stays with the accepted sockets and does
 *           not use up the connecting side's ephemeral ports (the load
 *           generator's, and the proxy's towards this backend).
 *
 *   backend [--lifetime SECONDS]   (default 14400; it also exits with its parent)
 */
#include "common.h"

enum kind { ECHO_LISTENER, DUPLEX_LISTENER, RR_LISTENER, ECHO_CONN, DUPLEX_CONN, RR_CONN };

#define ECHO_BUF 16384
#define STREAM_CHUNK (128 * 1024)
#define RR_SIZE 32
#define MAX_CALLS 8 /* reads or writes per event, so one busy connection cannot starve the others */

struct item {
  int fd;
  enum kind kind;
  size_t off, len; /* echo: bytes of buf read but not yet written back; rr: len = request bytes read */
  char buf[];      /* ECHO_BUF bytes for echo connections, none otherwise */
};

static char discard[STREAM_CHUNK];
static char stream[STREAM_CHUNK];
static int ep;

static struct item *new_item(int fd, enum kind kind, size_t extra) {
  struct item *it = calloc(1, sizeof *it + extra);
  if (!it) die("out of memory");
  it->fd = fd;
  it->kind = kind;
  return it;
}

static void drop(struct item *it) {
  close(it->fd); /* also removes it from the epoll set */
  free(it);
}

static int listen_on_any_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = loopback(0);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 4096) < 0) die("listen: %s", strerror(errno));
  if (getsockname(fd, (struct sockaddr *)&a, &len) < 0) die("getsockname: %s", strerror(errno));
  return fd;
}

static int port_of(int fd) {
  struct sockaddr_in a;
  socklen_t len = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &len);
  return ntohs(a.sin_port);
}

static void on_accept(struct item *l) {
  for (int i = 0; i < 64; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or a connection already reset: nothing to do */
    set_nodelay(fd);
    if (l->kind == ECHO_LISTENER) ep_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN, new_item(fd, ECHO_CONN, ECHO_BUF));
    else if (l->kind == RR_LISTENER) ep_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN, new_item(fd, RR_CONN, 0));
    else ep_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLOUT, new_item(fd, DUPLEX_CONN, 0));
  }
}

/* Write back what is pending; returns 0 when all is written, 1 when the socket is full, -1 on error. */
static int echo_flush(struct item *c) {
  while (c->off < c->len) {
    ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
    if (n < 0) return errno == EAGAIN ? 1 : -1;
    c->off += (size_t)n;
  }
  c->off = c->len = 0;
  return 0;
}

static void on_echo(struct item *c, uint32_t events) {
  if (c->len > 0) { /* waiting for room to write back what is pending */
    int r = echo_flush(c);
    if (r < 0) return drop(c);
    if (r > 0) return;
    ep_ctl(ep, EPOLL_CTL_MOD, c->fd, EPOLLIN, c); /* written: read again */
  }
  if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR))) return;
  for (int i = 0; i < MAX_CALLS; i++) {
    ssize_t n = recv(c->fd, c->buf, ECHO_BUF, 0);
    if (n == 0) return drop(c); /* the client's FIN: everything read was written back */
    if (n < 0) {
      if (errno != EAGAIN) drop(c);
      return;
    }
    c->len = (size_t)n;
    int r = echo_flush(c);
    if (r < 0) return drop(c);
    if (r > 0) { /* the client is not reading: stop reading until it does */
      ep_ctl(ep, EPOLL_CTL_MOD, c->fd, EPOLLOUT, c);
      return;
    }
  }
}

static void on_rr(struct item *c) {
  for (int i = 0; i < MAX_CALLS; i++) {
    ssize_t n = recv(c->fd, discard, sizeof discard, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c); /* gone before its request was whole */
    if (n < 0) return;
    c->len += (size_t)n;
    if (c->len >= RR_SIZE) {
      send(c->fd, stream, RR_SIZE, MSG_NOSIGNAL); /* 32 bytes always fit an empty socket buffer */
      return drop(c);
    }
  }
}

static void on_duplex(struct item *c, uint32_t events) {
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
    for (int i = 0; i < MAX_CALLS; i++) {
      ssize_t n = recv(c->fd, discard, sizeof discard, 0);
      if (n == 0 || (n < 0 && errno != EAGAIN)) return drop(c);
      if (n < 0) break;
    }
  }
  if (events & EPOLLOUT) {
    for (int i = 0; i < MAX_CALLS; i++) {
      ssize_t n = send(c->fd, stream, sizeof stream, MSG_NOSIGNAL);
      if (n < 0 && errno != EAGAIN) return drop(c);
      if (n < (ssize_t)sizeof stream) break;
    }
  }
}

int main(int argc, char **argv) {
  common_init("backend");
  long lifetime = 14400;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--lifetime") && i + 1 < argc) lifetime = atol(argv[++i]);
    else die("usage: backend [--lifetime SECONDS]");
  }
  if (lifetime <= 0) die("--lifetime must be positive");
  memset(stream, 'd', sizeof stream);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));
  struct item *echo = new_item(listen_on_any_port(), ECHO_LISTENER, 0);
  struct item *duplex = new_item(listen_on_any_port(), DUPLEX_LISTENER, 0);
  struct item *rr = new_item(listen_on_any_port(), RR_LISTENER, 0);
  ep_ctl(ep, EPOLL_CTL_ADD, echo->fd, EPOLLIN, echo);
  ep_ctl(ep, EPOLL_CTL_ADD, duplex->fd, EPOLLIN, duplex);
  ep_ctl(ep, EPOLL_CTL_ADD, rr->fd, EPOLLIN, rr);
  printf("{\"echo\":%d,\"duplex\":%d,\"rr\":%d}\n", port_of(echo->fd), port_of(duplex->fd), port_of(rr->fd));
  fflush(stdout);

  uint64_t end = now_ns() + (uint64_t)lifetime * 1000000000u;
  struct epoll_event events[256];
  while (now_ns() < end) {
    int n = epoll_wait(ep, events, 256, 1000);
    if (n < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      struct item *it = events[i].data.ptr;
      switch (it->kind) {
      case ECHO_LISTENER:
      case DUPLEX_LISTENER:
      case RR_LISTENER: on_accept(it); break;
      case RR_CONN: on_rr(it); break;
      case ECHO_CONN: on_echo(it, events[i].events); break;
      case DUPLEX_CONN: on_duplex(it, events[i].events); break;
      }
    }
  }
  return 0;
}
