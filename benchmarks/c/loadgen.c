/*
 * The benchmark's load generator: one scenario against one port of 127.0.0.1,
 * one thread, epoll, non-blocking sockets. Prints one JSON line.
 *
 *   loadgen bulk     --port P --duration MS [--concurrency 1] [--ramp MS]
 *   loadgen connect  --port P --duration MS [--concurrency 32]
 *   loadgen tls      --port P --duration MS [--concurrency 16]
 *   loadgen pingpong --port P --duration MS [--concurrency 16] [--size 64] [--rate PER_SECOND]
 *   loadgen features                        {"tls":true|false,"openssl":"..."}
 *
 * bulk      N streams to a duplex backend, each writing and reading as fast as
 *           it can at the same time; MB/s (10^6 bytes) of both directions
 *           together, counted from --ramp ms on (so buffers are full at both
 *           ends of the window and bytes written = bytes delivered).
 * connect   C slots, each in a loop: connect, send a 32-byte request, read
 *           the 32-byte reply, wait for the server to close, close. Against
 *           the backend's `rr` service (which closes first).
 * tls       the same with a full TLS 1.3 handshake after connect (no session
 *           reuse); the server's close_notify is answered with ours (NGINX
 *           waits for it before it closes).
 * pingpong  C persistent connections, one SIZE-byte request in flight each.
 *           Without --rate each sends the next as soon as its reply is in
 *           (saturation). With --rate, requests fall due at RATE per second in
 *           all, spread evenly over the connections; a request held back
 *           because its connection's previous reply came late is timed from
 *           when it was due, so a stall is not hidden by sending less.
 *           Latency: CLOCK_MONOTONIC from send (or due) to the whole reply.
 *
 * Every loop is bounded: by the duration (plus at most 2 s to let
 * connections in flight finish), and by a count of calls per event.
 */
#include "common.h"
#include <sys/timerfd.h>

#ifdef WITH_TLS
#include <openssl/err.h>
#include <openssl/ssl.h>
#else
typedef struct ssl_st SSL;
#endif

enum state { CLOSED, CONNECTING, HANDSHAKE, REQUEST, REPLY, TLS_CLOSING, CLOSING, IDLE };

struct conn {
  int fd;
  enum state state;
  uint32_t events; /* epoll interest; 0 = not registered */
  size_t done;     /* bytes of the request sent, or of the reply read */
  uint64_t start;  /* ping-pong: when the current request started */
  uint64_t due;    /* ping-pong at a rate: when the next request is due */
  SSL *ssl;
};

static struct {
  const char *scenario;
  long port, duration_ms, ramp_ms, concurrency, size, rate;
} opt = {.duration_ms = 2000};

#define MS 1000000ull
#define MAX_CALLS 8 /* reads or writes per event, so one busy connection cannot starve the others */
#define MAX_SAMPLES (4u << 20)

static int ep;
static struct sockaddr_in target;
static char buf[256 * 1024];     /* reads land here; the bytes are only counted */
static char payload[128 * 1024]; /* what is written */
static long completed;           /* connect, tls: finished within the duration */
static long completed_all;       /* ... and while draining after it */
static long errors;
static char first_error[200];
#ifdef WITH_TLS
static SSL_CTX *tls_ctx;
#endif

static int ms_until(uint64_t t) {
  uint64_t now = now_ns();
  return t <= now ? 0 : (int)((t - now + MS - 1) / MS);
}

static void want(struct conn *c, uint32_t events) {
  if (c->events == events) return;
  ep_ctl(ep, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, events, c);
  c->events = events;
}

static void close_conn(struct conn *c) {
#ifdef WITH_TLS
  if (c->ssl) SSL_free(c->ssl);
#endif
  c->ssl = NULL;
  close(c->fd);
  c->fd = -1;
  c->events = 0;
  c->state = CLOSED;
}

static void fail(struct conn *c, const char *what, const char *why) {
  errors++;
  if (!first_error[0]) snprintf(first_error, sizeof first_error, "%s: %s", what, why);
  close_conn(c);
}

/* Blocking connect for the persistent scenarios; the socket is non-blocking afterwards. */
static int connect_now(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&target, sizeof target) < 0) die("connect to 127.0.0.1:%ld: %s", opt.port, strerror(errno));
  set_nonblock(fd);
  set_nodelay(fd);
  return fd;
}

static void print_tail(double seconds, double cpu) {
  /* cpu_s: during the measured window; cpu_total_s: since the process started (set-up included) */
  printf(",\"seconds\":%.4f,\"cpu_s\":%.4f,\"cpu_pct\":%.1f,\"cpu_total_s\":%.4f,\"errors\":%ld", seconds, cpu,
         seconds > 0 ? cpu / seconds * 100 : 0, cpu_seconds(), errors);
  if (first_error[0]) printf(",\"first_error\":\"%s\"", first_error);
  printf("}\n");
}

/* ---- bulk ---------------------------------------------------------------- */

static void bulk(void) {
  long n = opt.concurrency ? opt.concurrency : 1;
  struct conn *conns = calloc((size_t)n, sizeof *conns);
  if (!conns) die("out of memory");
  for (long i = 0; i < n; i++) {
    conns[i].fd = connect_now();
    want(&conns[i], EPOLLIN | EPOLLOUT);
  }
  uint64_t up = 0, down = 0, up0 = 0, down0 = 0;
  uint64_t t0 = now_ns() + opt.ramp_ms * MS, t1 = t0 + opt.duration_ms * MS;
  int counting = 0;
  double cpu0 = 0;
  struct epoll_event ev[64];
  for (uint64_t now = now_ns(); now < t1; now = now_ns()) {
    if (!counting && now >= t0) {
      counting = 1;
      t0 = now;
      up0 = up;
      down0 = down;
      cpu0 = cpu_seconds();
    }
    int k = epoll_wait(ep, ev, 64, ms_until(counting ? t1 : t0));
    if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < k; i++) {
      struct conn *c = ev[i].data.ptr;
      if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        for (int j = 0; j < MAX_CALLS; j++) {
          ssize_t r = recv(c->fd, buf, sizeof buf, 0);
          if (r > 0) down += (uint64_t)r;
          else if (r == 0) die("bulk: the server closed a stream");
          else if (errno == EAGAIN) break;
          else die("bulk: recv: %s", strerror(errno));
        }
      }
      if (ev[i].events & EPOLLOUT) {
        for (int j = 0; j < MAX_CALLS; j++) {
          ssize_t r = send(c->fd, payload, sizeof payload, MSG_NOSIGNAL);
          if (r < 0 && errno != EAGAIN) die("bulk: send: %s", strerror(errno));
          if (r > 0) up += (uint64_t)r;
          if (r < (ssize_t)sizeof payload) break;
        }
      }
    }
  }
  double seconds = (double)(now_ns() - t0) / 1e9, cpu = cpu_seconds() - cpu0;
  up -= up0;
  down -= down0;
  printf("{\"scenario\":\"bulk\",\"streams\":%ld,\"mbps\":%.1f,\"up_mbps\":%.1f,\"down_mbps\":%.1f,\"bytes\":%llu", n,
         (double)(up + down) / 1e6 / seconds, (double)up / 1e6 / seconds, (double)down / 1e6 / seconds, (unsigned long long)(up + down));
  print_tail(seconds, cpu);
  for (long i = 0; i < n; i++) close(conns[i].fd);
  free(conns);
}

/* ---- connect and tls: one exchange per connection ------------------------ */

static void start_conn(struct conn *c) {
  c->done = 0;
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c->fd < 0) die("socket: %s", strerror(errno));
  set_nodelay(c->fd);
  c->state = CONNECTING;
  if (connect(c->fd, (struct sockaddr *)&target, sizeof target) < 0 && errno != EINPROGRESS) return fail(c, "connect", strerror(errno));
  want(c, EPOLLOUT); /* writable once connected (or failed) */
}

#ifdef WITH_TLS
/* After an SSL call returned r <= 0: wait for what it needs, or fail. */
static void tls_wait(struct conn *c, int r, const char *what) {
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) return want(c, EPOLLIN);
  if (e == SSL_ERROR_WANT_WRITE) return want(c, EPOLLOUT);
  char why[160];
  unsigned long code = ERR_get_error();
  if (code) ERR_error_string_n(code, why, sizeof why);
  else snprintf(why, sizeof why, "%s", e == SSL_ERROR_ZERO_RETURN || r == 0 ? "connection closed" : strerror(errno));
  ERR_clear_error();
  fail(c, what, why);
}
#endif

static void finish(struct conn *c, uint64_t t_end) {
  completed_all++;
  if (now_ns() <= t_end) completed++;
  close_conn(c);
}

/* Advance one connection as far as its socket allows. */
static void step(struct conn *c, uint64_t t_end) {
  for (int pass = 0; pass < 16 && c->state != CLOSED; pass++) {
    ssize_t n;
    switch (c->state) {
    case CONNECTING: {
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err) return fail(c, "connect", strerror(err));
#ifdef WITH_TLS
      if (tls_ctx) {
        c->ssl = SSL_new(tls_ctx);
        if (!c->ssl) die("SSL_new failed");
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "bench.test");
        c->state = HANDSHAKE;
        continue;
      }
#endif
      c->state = REQUEST;
      continue;
    }
    case HANDSHAKE: {
#ifdef WITH_TLS
      int r = SSL_connect(c->ssl);
      if (r == 1) {
        c->state = REQUEST;
        continue;
      }
      return tls_wait(c, r, "handshake");
#endif
    }
    /* fallthrough: not reached without TLS */
    case REQUEST:
#ifdef WITH_TLS
      if (c->ssl) {
        int r = SSL_write(c->ssl, payload + c->done, (int)(opt.size - (long)c->done));
        if (r <= 0) return tls_wait(c, r, "write");
        n = r;
      } else
#endif
        n = send(c->fd, payload + c->done, (size_t)opt.size - c->done, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN) return want(c, EPOLLOUT);
        return fail(c, "send", strerror(errno));
      }
      c->done += (size_t)n;
      if ((long)c->done == opt.size) {
        c->done = 0;
        c->state = REPLY;
      }
      continue;
    case REPLY:
#ifdef WITH_TLS
      if (c->ssl) {
        int r = SSL_read(c->ssl, buf, sizeof buf);
        if (r <= 0) return tls_wait(c, r, "read");
        n = r;
      } else
#endif
        n = recv(c->fd, buf, sizeof buf, 0);
      if (n == 0) return fail(c, "read", "closed before the whole reply");
      if (n < 0) {
        if (errno == EAGAIN) return want(c, EPOLLIN);
        return fail(c, "recv", strerror(errno));
      }
      c->done += (size_t)n;
      if ((long)c->done >= opt.size) {
        c->state = c->ssl ? TLS_CLOSING : CLOSING; /* the server closes first */
        want(c, EPOLLIN);
      }
      continue;
    case TLS_CLOSING: /* wait for the server's close_notify (or its FIN), answer with ours */
#ifdef WITH_TLS
    {
      int r = SSL_read(c->ssl, buf, sizeof buf);
      if (r > 0) continue;
      if (SSL_get_error(c->ssl, r) == SSL_ERROR_ZERO_RETURN) {
        SSL_shutdown(c->ssl);
        ERR_clear_error();
        c->state = CLOSING;
        continue;
      }
      return tls_wait(c, r, "waiting for close_notify");
    }
#endif
    /* fallthrough: not reached without TLS */
    case CLOSING:
      n = recv(c->fd, buf, sizeof buf, 0);
      if (n == 0) return finish(c, t_end);
      if (n < 0) {
        if (errno == EAGAIN) return want(c, EPOLLIN);
        return fail(c, "waiting for the server to close", strerror(errno));
      }
      continue;
    default:
      return;
    }
  }
}

static void connections(int with_tls) {
  long n = opt.concurrency ? opt.concurrency : with_tls ? 16 : 32;
  opt.size = 32; /* what the rr backend expects and answers */
#ifdef WITH_TLS
  if (with_tls) {
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (!tls_ctx) die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(tls_ctx, TLS1_3_VERSION);
    /* The server's handshake signature is still verified; the certificate chain is not. */
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(tls_ctx, SSL_SESS_CACHE_OFF); /* every handshake a full one */
    SSL_CTX_set_options(tls_ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);  /* a FIN without close_notify ends it too */
  }
#else
  if (with_tls) die("built without OpenSSL (install libssl-dev and rebuild): no tls scenario");
#endif
  struct conn *conns = calloc((size_t)n, sizeof *conns);
  if (!conns) die("out of memory");
  uint64_t t_start = now_ns(), t_end = t_start + opt.duration_ms * MS, hard_end = t_end + 2000 * MS;
  double cpu0 = cpu_seconds();
  struct epoll_event ev[256];
  for (uint64_t now = t_start; now < hard_end; now = now_ns()) {
    long active = 0;
    for (long i = 0; i < n; i++) {
      if (conns[i].state == CLOSED && now < t_end) start_conn(&conns[i]);
      if (conns[i].state != CLOSED) active++;
    }
    if (active == 0 && now >= t_end) break;
    if (errors >= 1000 && completed_all == 0) break; /* nothing works: say so rather than spin */
    int k = epoll_wait(ep, ev, 256, now < t_end ? ms_until(t_end) : 100);
    if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < k; i++) step(ev[i].data.ptr, t_end);
  }
  double cpu = cpu_seconds() - cpu0;
  for (long i = 0; i < n; i++) {
    if (conns[i].state != CLOSED) close_conn(&conns[i]);
  }
  double seconds = (double)opt.duration_ms / 1e3;
  printf("{\"scenario\":\"%s\",\"cps\":%.1f,\"connections\":%ld,\"connections_total\":%ld", with_tls ? "tls" : "connect",
         (double)completed / seconds, completed, completed_all);
  print_tail((double)(now_ns() - t_start) / 1e9, cpu);
  free(conns);
}

/* ---- ping-pong ------------------------------------------------------------- */

static uint32_t *samples;
static size_t nsamples;
static long requests, late;

static void send_request(struct conn *c, uint64_t start) {
  /* One small request in flight per connection: the socket buffer always has room. */
  ssize_t n = send(c->fd, payload, (size_t)opt.size, MSG_NOSIGNAL);
  if (n != opt.size) die("ping-pong: send: %s", n < 0 ? strerror(errno) : "partial write");
  c->start = start;
  c->done = 0;
  c->state = REPLY;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

static double percentile_us(double p) {
  if (nsamples == 0) return 0;
  size_t i = (size_t)(p * (double)nsamples);
  return samples[i < nsamples ? i : nsamples - 1] / 1e3;
}

static void pingpong(void) {
  long n = opt.concurrency ? opt.concurrency : 16;
  if (!opt.size) opt.size = 64;
  uint64_t interval = opt.rate ? (uint64_t)(1e9 * (double)n / (double)opt.rate) : 0; /* per connection */
  struct conn *conns = calloc((size_t)n, sizeof *conns);
  samples = malloc(MAX_SAMPLES * sizeof *samples);
  if (!conns || !samples) die("out of memory");
  for (long i = 0; i < n; i++) {
    conns[i].fd = connect_now();
    want(&conns[i], EPOLLIN);
  }
  int tfd = -1;
  if (opt.rate) {
    prctl(PR_SET_TIMERSLACK, 1); /* wake when asked, not up to 50 µs later */
    tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die("timerfd_create: %s", strerror(errno));
    ep_ctl(ep, EPOLL_CTL_ADD, tfd, EPOLLIN, NULL);
  }
  uint64_t t_start = now_ns(), t_end = t_start + opt.duration_ms * MS;
  double cpu0 = cpu_seconds();
  for (long i = 0; i < n; i++) {
    if (opt.rate) {
      conns[i].due = t_start + (uint64_t)i * interval / (uint64_t)n; /* staggered */
      conns[i].state = IDLE;
    } else {
      send_request(&conns[i], now_ns());
    }
  }
  struct epoll_event ev[64];
  for (uint64_t now = now_ns(); now < t_end; now = now_ns()) {
    if (opt.rate) { /* send what is due; wake for the next one */
      uint64_t next = t_end;
      for (long i = 0; i < n; i++) {
        struct conn *c = &conns[i];
        if (c->state != IDLE) continue;
        if (c->due <= now) send_request(c, now);
        else if (c->due < next) next = c->due;
      }
      struct itimerspec at = {.it_value = {.tv_sec = (time_t)(next / 1000000000u), .tv_nsec = (long)(next % 1000000000u)}};
      timerfd_settime(tfd, TFD_TIMER_ABSTIME, &at, NULL);
    }
    int k = epoll_wait(ep, ev, 64, opt.rate ? 100 : ms_until(t_end));
    if (k < 0 && errno != EINTR) die("epoll_wait: %s", strerror(errno));
    for (int i = 0; i < k; i++) {
      struct conn *c = ev[i].data.ptr;
      if (!c) { /* the timer */
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN) die("timerfd read: %s", strerror(errno));
        continue;
      }
      for (int j = 0; j < MAX_CALLS && c->state == REPLY; j++) {
        ssize_t r = recv(c->fd, buf, sizeof buf, 0);
        if (r == 0) die("ping-pong: the server closed a connection");
        if (r < 0) {
          if (errno == EAGAIN) break;
          die("ping-pong: recv: %s", strerror(errno));
        }
        c->done += (size_t)r;
        if ((long)c->done < opt.size) continue;
        if ((long)c->done > opt.size) die("ping-pong: more bytes came back than were sent");
        uint64_t at = now_ns();
        if (at >= t_end) break;
        uint64_t lat = at - c->start;
        if (nsamples < MAX_SAMPLES) samples[nsamples++] = lat > UINT32_MAX ? UINT32_MAX : (uint32_t)lat;
        requests++;
        if (!opt.rate) {
          send_request(c, at);
        } else {
          c->due += interval;
          if (c->due <= at) { /* held back by the slow reply: it counts from when it was due */
            late++;
            send_request(c, c->due);
          } else {
            c->state = IDLE;
          }
        }
      }
    }
  }
  double seconds = (double)(now_ns() - t_start) / 1e9, cpu = cpu_seconds() - cpu0;
  qsort(samples, nsamples, sizeof *samples, cmp_u32);
  printf("{\"scenario\":\"pingpong\",\"rate\":%ld,\"rps\":%.1f,\"requests\":%ld,\"late\":%ld,\"p50_us\":%.1f,\"p99_us\":%.1f,"
         "\"p999_us\":%.1f,\"max_us\":%.1f",
         opt.rate, (double)requests / seconds, requests, late, percentile_us(0.50), percentile_us(0.99), percentile_us(0.999),
         nsamples ? samples[nsamples - 1] / 1e3 : 0.0);
  print_tail(seconds, cpu);
  for (long i = 0; i < n; i++) close(conns[i].fd);
  free(conns);
  free(samples);
}

/* ---- main ---------------------------------------------------------------- */

static long number(const char *name, const char *text, long min, long max) {
  char *end;
  errno = 0;
  long v = strtol(text, &end, 10);
  if (errno || *end || v < min || v > max) die("%s must be an integer in %ld..%ld, not \"%s\"", name, min, max, text);
  return v;
}

int main(int argc, char **argv) {
  common_init("loadgen");
  if (argc < 2) die("usage: loadgen bulk|connect|tls|pingpong --port P [--duration MS] [--concurrency N] [--size B] [--rate R] [--ramp MS] | features");
  opt.scenario = argv[1];
  if (!strcmp(opt.scenario, "features")) {
#ifdef WITH_TLS
    printf("{\"tls\":true,\"openssl\":\"%s\"}\n", OpenSSL_version(OPENSSL_VERSION));
#else
    printf("{\"tls\":false}\n");
#endif
    return 0;
  }
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) die("%s needs a value", a);
    const char *v = argv[++i];
    if (!strcmp(a, "--port")) opt.port = number(a, v, 1, 65535);
    else if (!strcmp(a, "--duration")) opt.duration_ms = number(a, v, 1, 600000);
    else if (!strcmp(a, "--ramp")) opt.ramp_ms = number(a, v, 0, 60000);
    else if (!strcmp(a, "--concurrency")) opt.concurrency = number(a, v, 1, 10000);
    else if (!strcmp(a, "--size")) opt.size = number(a, v, 1, 65536);
    else if (!strcmp(a, "--rate")) opt.rate = number(a, v, 1, 10000000);
    else die("unknown option %s", a);
  }
  if (!opt.port) die("--port is required");
  target = loopback((int)opt.port);
  memset(payload, 'p', sizeof payload);
  ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) die("epoll_create1: %s", strerror(errno));
  if (!strcmp(opt.scenario, "bulk")) bulk();
  else if (!strcmp(opt.scenario, "connect")) connections(0);
  else if (!strcmp(opt.scenario, "tls")) connections(1);
  else if (!strcmp(opt.scenario, "pingpong")) pingpong();
  else die("unknown scenario %s", opt.scenario);
  return 0;
}
