/* libFuzzer target: the hub's HTTP/1.1 reader (sync/http.c), which parses
 * bytes from any TLS peer. We wrote our own strict parser rather than take a
 * dependency (Debian's http-parser is unmaintained, llhttp is not packaged),
 * so it gets its own fuzzer. The input is fed through the real buffered
 * reader in pieces whose sizes come from the first byte, as pipelined
 * requests (keep-alive), then again as a response (sized, chunked or
 * read-to-close), and its text is tried as a Range header. Must never
 * crash, leak, read out of bounds or accept more than its limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct source {
    const uint8_t *data;
    size_t size, pos, piece;
} source;

static long source_read(void *io, void *buf, size_t len, el_error *err)
{
    source *s = io;
    (void)err;
    size_t left = s->size - s->pos;
    size_t n = left < len ? left : len;
    if (n > s->piece)
        n = s->piece;
    memcpy(buf, s->data + s->pos, n);
    s->pos += n;
    return (long)n;
}

static int sink_write(void *io, const void *buf, size_t len, el_error *err)
{
    (void)io, (void)buf, (void)len, (void)err;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t piece = (size_t)(data[0] % 64) + 1;
    data++;
    size--;
    el_http_limits limits = {.line_max = 256, .head_max = 2048, .headers_max = 16,
                             .body_max = 4096};
    el_http_conn *conn = el_malloc(sizeof *conn);
    el_http_msg *msg = el_malloc(sizeof *msg);
    if (!conn || !msg)
        goto out;
    source src = {data, size, 0, piece};
    el_http_conn_init(conn, &src, source_read, sink_write);
    for (int i = 0; i < 64; i++) {
        el_error err;
        int status = 0;
        el_http_msg_init(msg);
        int rc = el_http_read_request(conn, &limits, msg, &status, &err);
        if (rc == 0) {
            /* what the parser accepted must honour the limits */
            if (msg->body_len > limits.body_max || msg->n_headers > limits.headers_max ||
                !msg->method || !msg->target || msg->target[0] != '/')
                abort();
            el_http_header_get(msg, "Host");
        } else if (rc < 0 && status && (status < 400 || status > 505)) {
            abort();
        }
        el_http_msg_finish(msg);
        if (rc != 0)
            break;
    }
    source again = {data, size, 0, piece};
    el_http_conn_init(conn, &again, source_read, sink_write);
    el_error err;
    el_http_msg_init(msg);
    if (el_http_read_response(conn, &limits, msg, &err) == 0 &&
        (msg->body_len > limits.body_max || msg->status < 100 || msg->status > 999))
        abort();
    el_http_msg_finish(msg);

    char *text = el_malloc(size + 1);
    if (text) {
        memcpy(text, data, size);
        text[size] = '\0';
        uint64_t first, last, total = (uint64_t)(piece * 1000);
        if (el_http_parse_range(text, total, &first, &last) == 0 &&
            (first > last || last >= total))
            abort();
        el_free(text);
    }
out:
    el_free(msg);
    el_free(conn);
    return 0;
}
