/*
 * The socket floor of a media gateway on this host: a relay in C that does only the
 * socket work the gateway does per call, and the paced peers that drive it.
 *
 * Built and run by loadtest/floor_bench.py (`python -m loadtest.floor_bench`), which
 * pins the two processes and reads the relay's CPU; see that module for the figures.
 *
 *   floor_relay relay
 *       Listen on 127.0.0.1 (an ephemeral port, printed as "port N"), and relay: every
 *       connection opens with a 4-byte little-endian id (call * 2 + leg), and whatever
 *       is read on one leg of a call is written to the other at once (one recv and one
 *       send per message, over epoll), as the gateway moves a caller frame to the agent
 *       and the agent's frame to the carrier. Runs until SIGTERM or SIGINT.
 *
 *   floor_relay peer PORT CALLS CARRIER_BYTES AGENT_BYTES WARMUP_S SECONDS
 *       Open CALLS carrier legs and CALLS agent legs to the relay and send, every 20 ms
 *       per call, one CARRIER_BYTES message on the carrier leg and one AGENT_BYTES message
 *       on the agent leg. Calls are spread evenly over the 20 ms (calls start at random
 *       times in real traffic); sends are grouped by the millisecond. Each message
 *       carries its send time (CLOCK_MONOTONIC ns, first 8 bytes), so what comes back
 *       through the relay gives the latency of the whole path (both kernels' loopback
 *       TCP and the relay). Prints "measuring" when WARMUP_S is over and "done" after
 *       SECONDS more, then one JSON line of counts and latency percentiles (of the
 *       messages sent in the measured part).
 *
 * Every socket has TCP_NODELAY, as uvloop and picows set it on the gateway's sockets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#define MAX_CALLS 4096
#define MAX_EVENTS 512
#define TICK_NS 20000000LL
#define SLOT_NS 1000000LL /* sends are grouped by the millisecond */
#define HIST_US 200000    /* latency histogram: 1 µs buckets up to 200 ms */

static volatile sig_atomic_t stopping = 0;

static void on_signal(int sig) {
    (void)sig;
    stopping = 1;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void no_delay(int fd) {
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) die("TCP_NODELAY");
}

static void add_fd(int ep, int fd, uint64_t data) {
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static int read_exact(int fd, void *buf, size_t size) {
    size_t got = 0;
    while (got < size) {
        ssize_t n = recv(fd, (char *)buf + got, size - got, 0);
        if (n <= 0) return -1;
        got += (size_t)n;
    }
    return 0;
}

/* ---- relay ------------------------------------------------------------------------ */

static int relay_fds[2 * MAX_CALLS];

static void relay_accept(int listener, int ep) {
    int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) return;
    uint8_t hello[4];
    /* The peer writes its id first thing; a blocking read of 4 bytes (set-up, not traffic). */
    if (read_exact(fd, hello, sizeof hello) < 0) {
        close(fd);
        return;
    }
    uint32_t id = hello[0] | hello[1] << 8 | hello[2] << 16 | (uint32_t)hello[3] << 24;
    if (id >= 2 * MAX_CALLS || relay_fds[id] >= 0) {
        close(fd);
        return;
    }
    no_delay(fd);
    relay_fds[id] = fd;
    add_fd(ep, fd, id);
}

static int relay(void) {
    static char buf[65536];
    for (int i = 0; i < 2 * MAX_CALLS; i++) relay_fds[i] = -1;
    int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listener < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
    if (listen(listener, 4096) < 0) die("listen");
    if (getsockname(listener, (struct sockaddr *)&addr, &len) < 0) die("getsockname");
    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    const uint64_t listen_key = UINT64_MAX;
    add_fd(ep, listener, listen_key);
    struct epoll_event events[MAX_EVENTS];
    unsigned long long short_writes = 0;
    while (!stopping) {
        int ready = epoll_wait(ep, events, MAX_EVENTS, -1);
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            uint64_t key = events[i].data.u64;
            if (key == listen_key) {
                relay_accept(listener, ep);
                continue;
            }
            int fd = relay_fds[key];
            if (fd < 0) continue;
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            int other = relay_fds[key ^ 1];
            if (n <= 0) { /* a leg hung up: the call is over, both legs close */
                close(fd);
                relay_fds[key] = -1;
                if (other >= 0) close(other);
                relay_fds[key ^ 1] = -1;
                continue;
            }
            if (other >= 0 && send(other, buf, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT) != n)
                short_writes++; /* the peer stopped reading: a gateway would drop it too */
        }
    }
    fprintf(stderr, "relay: %llu short writes\n", short_writes);
    return 0;
}

/* ---- peer ------------------------------------------------------------------------- */

struct leg {
    int fd;
    size_t in_size; /* the size of the messages this leg receives (the other leg's) */
    size_t have;    /* bytes of the message being received */
    char rec[65536];
};

static struct leg legs[2 * MAX_CALLS];
static uint32_t hist[HIST_US + 1];

static int connect_leg(int port, uint32_t id) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    no_delay(fd);
    uint8_t hello[4] = {id & 0xFF, (id >> 8) & 0xFF, (id >> 16) & 0xFF, id >> 24};
    if (send(fd, hello, sizeof hello, MSG_NOSIGNAL) != (ssize_t)sizeof hello) die("hello");
    return fd;
}

static int64_t window_from, window_to; /* the measured part, by send time */

/* Take what arrived on a leg; count whole messages sent in the measured part, and their
 * latency. Counted by send time, not arrival, so what is in flight at either edge of the
 * window is neither lost nor gained. */
static unsigned long long drain(struct leg *leg, unsigned long long *late) {
    unsigned long long messages = 0;
    char buf[65536];
    for (;;) {
        ssize_t n = recv(leg->fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n <= 0) break;
        int64_t at = now_ns();
        for (ssize_t pos = 0; pos < n;) {
            size_t take = leg->in_size - leg->have;
            if ((size_t)(n - pos) < take) take = (size_t)(n - pos);
            memcpy(leg->rec + leg->have, buf + pos, take);
            leg->have += take;
            pos += (ssize_t)take;
            if (leg->have < leg->in_size) break;
            leg->have = 0;
            int64_t sent;
            memcpy(&sent, leg->rec, sizeof sent);
            if (sent >= window_from && sent < window_to) {
                messages++;
                int64_t us = (at - sent) / 1000;
                if (us < 0) us = 0;
                if (us > HIST_US) {
                    us = HIST_US;
                    (*late)++;
                }
                hist[us]++;
            }
        }
    }
    return messages;
}

static long percentile_us(unsigned long long total, double q) {
    unsigned long long want = (unsigned long long)(q * (double)total), seen = 0;
    for (long us = 0; us <= HIST_US; us++) {
        seen += hist[us];
        if (seen > want) return us;
    }
    return HIST_US;
}

static int peer(int port, int calls, size_t carrier_bytes, size_t agent_bytes, double warmup_s,
                double seconds) {
    if (calls < 1 || calls > MAX_CALLS) die("calls out of range");
    if (carrier_bytes < 8 || agent_bytes < 8 || carrier_bytes > 65536 || agent_bytes > 65536)
        die("message sizes must be 8-65536 bytes");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) die("epoll_create1");
    for (int call = 0; call < calls; call++) {
        for (int side = 0; side < 2; side++) {
            uint32_t id = (uint32_t)(call * 2 + side);
            legs[id].fd = connect_leg(port, id);
            legs[id].in_size = side == 0 ? agent_bytes : carrier_bytes;
            legs[id].have = 0;
            add_fd(ep, legs[id].fd, id);
        }
    }
    char carrier_msg[65536], agent_msg[65536];
    memset(carrier_msg, 0x7F, carrier_bytes);
    memset(agent_msg, 0x01, agent_bytes);
    int timer = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    if (timer < 0) die("timerfd_create");
    int64_t start = now_ns() + 50000000LL; /* 50 ms for every socket to settle */
    struct itimerspec spec = {
        .it_interval = {.tv_sec = 0, .tv_nsec = SLOT_NS},
        .it_value = {.tv_sec = start / 1000000000LL, .tv_nsec = start % 1000000000LL},
    };
    if (timerfd_settime(timer, TFD_TIMER_ABSTIME, &spec, NULL) < 0) die("timerfd_settime");
    const uint64_t timer_key = UINT64_MAX;
    add_fd(ep, timer, timer_key);
    window_from = start + (int64_t)(warmup_s * 1e9);
    window_to = window_from + (int64_t)(seconds * 1e9);
    int64_t spacing = TICK_NS / calls; /* call i's frames are due at start + i*spacing + k*20ms */
    long long next_event = 0;          /* index k*calls + i of the next message pair to send */
    unsigned long long sent = 0, failed = 0, late = 0, measured_sent = 0;
    unsigned long long measured_received = 0;
    int announced = 0, done = 0;
    struct epoll_event events[MAX_EVENTS];
    int64_t drain_until = 0;
    for (;;) {
        int ready = epoll_wait(ep, events, MAX_EVENTS, -1); /* the timer ticks every ms */
        if (ready < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        for (int i = 0; i < ready; i++) {
            uint64_t key = events[i].data.u64;
            if (key != timer_key) {
                measured_received += drain(&legs[key], &late);
                continue;
            }
            uint64_t expirations;
            if (read(timer, &expirations, sizeof expirations) < 0) continue;
            int64_t now = now_ns();
            if (!announced && now >= window_from) {
                announced = 1;
                printf("measuring\n");
                fflush(stdout);
            }
            if (!done && now >= window_to) {
                done = 1;
                drain_until = now + 200000000LL; /* what is in flight comes back */
                printf("done\n");
                fflush(stdout);
            }
            if (done) continue;
            /* Every message pair due by now: call i of round k is due at start+k*20ms+i*spacing. */
            for (;;) {
                long long round = next_event / calls;
                int call = (int)(next_event % calls);
                int64_t due = start + round * TICK_NS + call * spacing;
                if (due > now) break;
                int64_t stamp = now_ns();
                int in_window = stamp >= window_from && stamp < window_to;
                memcpy(carrier_msg, &stamp, sizeof stamp);
                memcpy(agent_msg, &stamp, sizeof stamp);
                int ok = send(legs[2 * call].fd, carrier_msg, carrier_bytes,
                              MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)carrier_bytes;
                ok &= send(legs[2 * call + 1].fd, agent_msg, agent_bytes,
                           MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)agent_bytes;
                if (!ok) failed++;
                sent += 2;
                if (in_window) measured_sent += 2;
                next_event++;
            }
        }
        if (done && now_ns() >= drain_until) break;
    }
    unsigned long long counted = 0;
    for (long us = 0; us <= HIST_US; us++) counted += hist[us];
    printf("{\"calls\": %d, \"sent\": %llu, \"failed_sends\": %llu, "
           "\"measured_sent\": %llu, \"measured_received\": %llu, \"over_200ms\": %llu, "
           "\"latency_us\": {\"p50\": %ld, \"p90\": %ld, \"p99\": %ld, \"p999\": %ld}}\n",
           calls, sent, failed, measured_sent, measured_received, late,
           percentile_us(counted, 0.50), percentile_us(counted, 0.90),
           percentile_us(counted, 0.99), percentile_us(counted, 0.999));
    fflush(stdout);
    for (int id = 0; id < 2 * calls; id++) close(legs[id].fd);
    return 0;
}

int main(int argc, char **argv) {
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (argc == 2 && strcmp(argv[1], "relay") == 0) return relay();
    if (argc == 8 && strcmp(argv[1], "peer") == 0)
        return peer(atoi(argv[2]), atoi(argv[3]), (size_t)atol(argv[4]), (size_t)atol(argv[5]),
                    atof(argv[6]), atof(argv[7]));
    fprintf(stderr,
            "usage: floor_relay relay\n"
            "       floor_relay peer PORT CALLS CARRIER_BYTES AGENT_BYTES WARMUP_S SECONDS\n");
    return 2;
}
