/* The hub's network side: one listening socket, a fixed pool of worker
 * threads, keep-alive connections over mutual TLS.
 *
 * Design notes:
 *  1. The accept thread only accepts and queues file descriptors; TLS
 *     handshakes run in the workers, so a slow handshake blocks one worker
 *     for at most the handshake timeout, never the accept loop.
 *  2. A bounded queue: when every worker is busy and the queue is full the
 *     new connection is closed at once (counted in /metrics) instead of
 *     piling up memory.
 *  3. Each request is bounded in time (request_timeout_ms from its first
 *     byte to its last) and a keep-alive connection waits idle_timeout_ms
 *     for the next one, so a slowloris client frees its worker.
 *  4. Shutdown (SIGTERM/SIGINT sets hub->stop): the accept loop stops, each
 *     worker finishes the request it is serving, answers it and closes;
 *     queued connections not yet served are closed. Blobs are written with
 *     el_fs_write_atomic and rows committed after, so stopping at any point
 *     leaves no half-written bundle visible.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "base/log.h"
#include "hub.h"

#define QUEUE_CAP 1024
#define BLOB_PIECE (1u << 20)

typedef struct conn_queue {
    pthread_mutex_t lock;
    pthread_cond_t ready;
    int fds[QUEUE_CAP];
    size_t head, count;
    int closed;
} conn_queue;

typedef struct server {
    el_hub *hub;
    conn_queue queue;
} server;

static int queue_push(conn_queue *q, int fd)
{
    pthread_mutex_lock(&q->lock);
    int ok = q->count < QUEUE_CAP && !q->closed;
    if (ok) {
        q->fds[(q->head + q->count) % QUEUE_CAP] = fd;
        q->count++;
        pthread_cond_signal(&q->ready);
    }
    pthread_mutex_unlock(&q->lock);
    return ok ? 0 : -1;
}

/* Returns the next fd, or -1 once the queue is closed. */
static int queue_pop(conn_queue *q)
{
    pthread_mutex_lock(&q->lock);
    while (!q->count && !q->closed)
        pthread_cond_wait(&q->ready, &q->lock);
    int fd = -1;
    if (q->count && !q->closed) {
        fd = q->fds[q->head];
        q->head = (q->head + 1) % QUEUE_CAP;
        q->count--;
    }
    pthread_mutex_unlock(&q->lock);
    return fd;
}

static void queue_close(conn_queue *q)
{
    pthread_mutex_lock(&q->lock);
    q->closed = 1;
    while (q->count) {
        close(q->fds[q->head]);
        q->head = (q->head + 1) % QUEUE_CAP;
        q->count--;
    }
    pthread_cond_broadcast(&q->ready);
    pthread_mutex_unlock(&q->lock);
}

static long io_read(void *io, void *buf, size_t len, el_error *err)
{
    return el_tls_read(io, buf, len, err);
}

static int io_write(void *io, const void *buf, size_t len, el_error *err)
{
    return el_tls_write(io, buf, len, err);
}

/* Sends RESP (body or streamed blob). Returns 0 or the stream's error. */
static int send_response(el_hub *hub, el_http_conn *http, el_hub_response *resp,
                         int keep_alive, el_error *err)
{
    if (!resp->blob[0]) {
        atomic_fetch_add(&hub->metrics.bytes_out, resp->len);
        return el_http_write_response(http, resp->status, resp->content_type, resp->extra,
                                      resp->body, resp->len, keep_alive, err);
    }
    int rc = el_http_write_head(http, resp->status, resp->content_type, resp->extra,
                                resp->blob_len, keep_alive, err);
    uint8_t *piece = el_malloc(BLOB_PIECE);
    if (!piece)
        return el_error_set(err, EL_ENOMEM, "out of memory for a blob piece");
    uint64_t off = resp->blob_off, left = resp->blob_len;
    while (!rc && left) {
        size_t n = left < BLOB_PIECE ? (size_t)left : BLOB_PIECE;
        rc = hub->store->ops->blob_read(hub->store, resp->blob, off, n, piece, err);
        if (!rc)
            rc = http->write(http->io, piece, n, err);
        off += n;
        left -= n;
        atomic_fetch_add(&hub->metrics.bytes_out, n);
    }
    el_free(piece);
    return rc;
}

/* Serves requests on one TLS connection until it closes, times out, the
 * client asks to close, or the hub stops. */
static void serve_connection(el_hub *hub, el_tls_conn *conn)
{
    const el_tls_peer *peer = el_tls_conn_peer(conn);
    el_http_conn *http = el_malloc(sizeof *http);
    el_http_msg *req = el_malloc(sizeof *req);
    if (!http || !req)
        goto out;
    el_http_conn_init(http, conn, io_read, io_write);
    if (peer->role == EL_TLS_ROLE_DEVICE)
        hub->store->ops->device_seen(hub->store, peer->cn, peer->group, peer->serial,
                                     (int64_t)time(NULL), NULL);
    el_http_limits limits = {.body_max = hub->body_max};
    for (;;) {
        if (!el_http_conn_pending(http) &&
            !el_tls_wait(conn, hub->idle_timeout_ms, &hub->stop))
            break;
        el_error err = {0};
        int status = 0;
        el_http_msg_init(req);
        el_tls_set_deadline(conn, hub->request_timeout_ms);
        int rc = el_http_read_request(http, &limits, req, &status, &err);
        el_hub_response resp;
        memset(&resp, 0, sizeof resp);
        enum el_hub_route route = EL_HUB_R_OTHER;
        int keep_alive = 0;
        if (rc == 1) {
            el_http_msg_finish(req);
            break;
        }
        if (rc && !status) {
            /* the stream broke or timed out: nothing can be answered */
            el_log_info("hub: %s: %s", peer->cn, err.msg);
            el_hub_count(hub, route, 408);
            el_http_msg_finish(req);
            break;
        }
        if (rc) {
            el_hub_error_response(&resp, status, "bad_request", err.msg);
        } else {
            atomic_fetch_add(&hub->metrics.bytes_in, req->body_len);
            route = el_hub_route(hub, peer, req, &resp);
            keep_alive = req->keep_alive && !hub->stop;
        }
        el_hub_count(hub, route, resp.status);
        rc = send_response(hub, http, &resp, keep_alive, &err);
        el_free(resp.body);
        el_http_msg_finish(req);
        el_tls_set_deadline(conn, 0);
        if (rc || !keep_alive)
            break;
    }
out:
    el_free(req);
    el_free(http);
}

static void *worker_main(void *arg)
{
    server *srv = arg;
    el_hub *hub = srv->hub;
    for (;;) {
        int fd = queue_pop(&srv->queue);
        if (fd < 0)
            return NULL;
        el_tls_conn *conn = NULL;
        el_error err = {0};
        if (el_tls_accept(hub->tls, fd, &conn, &err)) {
            atomic_fetch_add(&hub->metrics.handshake_failures, 1);
            el_log_info("hub: handshake refused: %s", err.msg);
            continue;
        }
        atomic_fetch_add(el_tls_conn_resumed(conn) ? &hub->metrics.handshakes_resumed
                                                   : &hub->metrics.handshakes_full,
                         1);
        serve_connection(hub, conn);
        el_tls_close(conn);
    }
}

/* Binds ADDR:PORT. Returns the socket or a negative code. */
static int listen_on(const char *spec, int *port_out, el_error *err)
{
    char host[256];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon == spec || (size_t)(colon - spec) >= sizeof host || !colon[1])
        return el_error_set(err, EL_EUSAGE, "--listen wants ADDR:PORT, got \"%s\"", spec);
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai)
        return el_error_set(err, EL_EUSAGE, "--listen %s: %s", spec, gai_strerror(gai));
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 512) < 0) {
        int e = errno;
        freeaddrinfo(res);
        if (fd >= 0)
            close(fd);
        return el_error_set(err, EL_EIO, "cannot listen on %s: %s", spec, strerror(e));
    }
    freeaddrinfo(res);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *port_out = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

int el_hub_serve(el_hub *hub, const el_hub_serve_opts *opts, el_error *err)
{
    int port = 0;
    int lfd = listen_on(opts->listen, &port, err);
    if (lfd < 0)
        return lfd;
    if (opts->port_file) {
        char text[16];
        int n = snprintf(text, sizeof text, "%d\n", port);
        int rc = el_fs_write_atomic(opts->port_file, text, (size_t)n, 0644, err);
        if (rc) {
            close(lfd);
            return rc;
        }
    }
    printf("edgeloop-hub: listening on %s (port %d), %d workers\n", opts->listen, port,
           opts->workers);
    fflush(stdout);

    server srv;
    memset(&srv, 0, sizeof srv);
    srv.hub = hub;
    pthread_mutex_init(&srv.queue.lock, NULL);
    pthread_cond_init(&srv.queue.ready, NULL);
    int nworkers = opts->workers > 0 ? opts->workers : 8;
    pthread_t *threads = el_calloc((size_t)nworkers, sizeof *threads);
    if (!threads) {
        close(lfd);
        return el_error_set(err, EL_ENOMEM, "out of memory for workers");
    }
    int started = 0;
    for (; started < nworkers; started++)
        if (pthread_create(&threads[started], NULL, worker_main, &srv))
            break;
    int rc = 0;
    if (started == 0)
        rc = el_error_set(err, EL_EINTERNAL, "cannot start worker threads");
    while (!rc && !hub->stop) {
        struct pollfd pfd = {.fd = lfd, .events = POLLIN};
        int n = poll(&pfd, 1, 200);
        if (n <= 0)
            continue;
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        if (queue_push(&srv.queue, fd)) {
            atomic_fetch_add(&hub->metrics.rejected_busy, 1);
            close(fd);
        }
    }
    close(lfd);
    queue_close(&srv.queue);
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    el_free(threads);
    pthread_cond_destroy(&srv.queue.ready);
    pthread_mutex_destroy(&srv.queue.lock);
    return rc;
}
