/* sync/http.c over an in-memory stream: pipelined keep-alive requests, the
 * 4xx answer for each kind of malformed or oversized head, responses sized,
 * chunked (with extensions and trailers) and read to close, and Range
 * headers. No network. */
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "check.h"
#include "client.h"
#include "http.h"

typedef struct memstream {
    const char *data;
    size_t size, pos, piece;
    char out[4096];
    size_t out_len;
} memstream;

static long mem_read(void *io, void *buf, size_t len, el_error *err)
{
    memstream *m = io;
    (void)err;
    size_t n = m->size - m->pos;
    if (n > len)
        n = len;
    if (n > m->piece)
        n = m->piece;
    memcpy(buf, m->data + m->pos, n);
    m->pos += n;
    return (long)n;
}

static int mem_write(void *io, const void *buf, size_t len, el_error *err)
{
    memstream *m = io;
    (void)err;
    if (len > sizeof m->out - m->out_len)
        return EL_EIO;
    memcpy(m->out + m->out_len, buf, len);
    m->out_len += len;
    return 0;
}

static el_http_conn conn;
static el_http_msg msg;

/* Reads one request from TEXT; returns the rc and the status in *STATUS. */
static int one_request(const char *text, size_t piece, const el_http_limits *lim, int *status)
{
    static memstream m;
    memset(&m, 0, sizeof m);
    m.data = text;
    m.size = strlen(text);
    m.piece = piece;
    el_error err;
    el_http_conn_init(&conn, &m, mem_read, mem_write);
    el_http_msg_init(&msg);
    int rc = el_http_read_request(&conn, lim, &msg, status, &err);
    return rc;
}

static void test_pipelined(void)
{
    static const char text[] = "GET /v1/releases?since=7 HTTP/1.1\r\nHost: hub\r\n"
                               "X-Empty:\r\n\r\n"
                               "PUT /v1/bundles/ab HTTP/1.1\r\nhost: hub\r\n"
                               "Content-Length: 5\r\nConnection: close\r\n\r\nhello";
    memstream m = {.data = text, .size = sizeof text - 1, .piece = 3};
    el_error err;
    int status;
    el_http_conn_init(&conn, &m, mem_read, mem_write);
    el_http_msg_init(&msg);
    CHECK(el_http_read_request(&conn, NULL, &msg, &status, &err) == 0);
    CHECK_STR(msg.method, "GET");
    CHECK_STR(msg.path, "/v1/releases");
    CHECK_STR(msg.query, "since=7");
    CHECK(msg.keep_alive == 1);
    CHECK(msg.body_len == 0);
    CHECK(el_http_header_get(&msg, "x-empty") && !el_http_header_get(&msg, "X-Empty")[0]);
    el_http_msg_finish(&msg);
    el_http_msg_init(&msg);
    CHECK(el_http_read_request(&conn, NULL, &msg, &status, &err) == 0);
    CHECK_STR(msg.method, "PUT");
    CHECK(msg.body_len == 5 && !memcmp(msg.body, "hello", 5));
    CHECK(msg.keep_alive == 0);
    el_http_msg_finish(&msg);
    el_http_msg_init(&msg);
    CHECK(el_http_read_request(&conn, NULL, &msg, &status, &err) == 1);   /* clean EOF */
    el_http_msg_finish(&msg);
}

static void expect_status(const char *text, const el_http_limits *lim, int want)
{
    int status = 0;
    int rc = one_request(text, 7, lim, &status);
    CHECK_MSG(rc < 0 && status == want, "rc=%d status=%d want %d for %.40s", rc, status, want,
              text);
    el_http_msg_finish(&msg);
}

static void test_refusals(void)
{
    el_http_limits lim = {.line_max = 64, .head_max = 512, .headers_max = 4, .body_max = 10};
    expect_status("GET /x HTTP/1.1\nHost: a\n\n", &lim, 400);              /* bare LF */
    expect_status("GET /x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", &lim, 400);
    expect_status("GET /x HTTP/1.1\r\n\r\n", &lim, 400);                   /* no Host */
    expect_status("get /x HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 400);        /* method */
    expect_status("GET x HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 400);         /* target */
    expect_status("GET /x  HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 400);       /* spaces */
    expect_status("GET /x HTTP/1.2\r\nHost: a\r\n\r\n", &lim, 505);
    expect_status("GET /x HTTP/1.1\r\nHo st: a\r\n\r\n", &lim, 400);
    expect_status("GET /x HTTP/1.1\r\nHost: a\x01\r\n\r\n", &lim, 400);
    expect_status("GET /xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx "
                  "HTTP/1.1\r\nHost: a\r\n\r\n",
                  &lim, 414);
    expect_status("GET /x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n", &lim,
                  431);
    expect_status("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", &lim, 413);
    expect_status("PUT /x HTTP/1.1\r\nHost: a\r\n\r\n", &lim, 411);
    expect_status("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                  &lim, 400);
    expect_status("PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", &lim, 400);
    expect_status("PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &lim, 501);
    expect_status("GET /x HTTP/1.1\r\nHost: a\r\n", &lim, 400);            /* truncated */
    /* a head that never ends is cut at head_max, not buffered forever */
    char endless[2048];
    memset(endless, 0, sizeof endless);
    strcpy(endless, "GET /x HTTP/1.1\r\nHost: a\r\n");
    for (size_t i = strlen(endless); i < sizeof endless - 1; i++)
        endless[i] = (i % 40 == 39) ? '\n' : (i % 40 == 38 ? '\r' : 'h');
    expect_status(endless, &lim, 431);
}

static int one_response(const char *text, size_t len, el_http_msg *out)
{
    static memstream m;
    memset(&m, 0, sizeof m);
    m.data = text;
    m.size = len;
    m.piece = 5;
    el_error err;
    el_http_limits lim = {.body_max = 64};
    el_http_conn_init(&conn, &m, mem_read, mem_write);
    el_http_msg_init(out);
    return el_http_read_response(&conn, &lim, out, &err);
}

static void test_responses(void)
{
    static const char chunked[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "5;name=v\r\nhello\r\nA\r\n, chunked!\r\n0\r\n"
                                  "Trailer: 1\r\n\r\n";
    CHECK(one_response(chunked, sizeof chunked - 1, &msg) == 0);
    CHECK(msg.status == 200 && msg.body_len == 15 && !memcmp(msg.body, "hello, chunked!", 15));
    CHECK(msg.keep_alive == 1);
    el_http_msg_finish(&msg);
    static const char too_big[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                  "41\r\n";
    CHECK(one_response(too_big, sizeof too_big - 1, &msg) == EL_EINPUT);
    el_http_msg_finish(&msg);
    static const char bad_chunk[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                    "5\r\nhelloX\r\n0\r\n\r\n";
    CHECK(one_response(bad_chunk, sizeof bad_chunk - 1, &msg) == EL_EINPUT);
    el_http_msg_finish(&msg);
    static const char sized[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}";
    CHECK(one_response(sized, sizeof sized - 1, &msg) == 0);
    CHECK(msg.status == 404 && msg.body_len == 2);
    el_http_msg_finish(&msg);
    static const char to_close[] = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
    CHECK(one_response(to_close, sizeof to_close - 1, &msg) == 0);
    CHECK(msg.body_len == 13 && msg.keep_alive == 0);
    el_http_msg_finish(&msg);
    static const char garbage[] = "HTTP/1.1 2x0 OK\r\n\r\n";
    CHECK(one_response(garbage, sizeof garbage - 1, &msg) == EL_EINPUT);
    el_http_msg_finish(&msg);

    /* what we write, we read back */
    memstream m = {.piece = 4096};
    el_error err;
    el_http_conn_init(&conn, &m, mem_read, mem_write);
    CHECK(el_http_write_response(&conn, 201, NULL, "X-A: b\r\n", "{\"ok\":1}", 8, 1, &err) == 0);
    el_http_msg out;
    CHECK(one_response(m.out, m.out_len, &out) == 0);
    CHECK(out.status == 201 && out.body_len == 8 && el_http_header_get(&out, "x-a"));
    el_http_msg_finish(&out);
}

static void test_range(void)
{
    uint64_t a, b;
    CHECK(el_http_parse_range("bytes=0-99", 1000, &a, &b) == 0 && a == 0 && b == 99);
    CHECK(el_http_parse_range("bytes=900-", 1000, &a, &b) == 0 && a == 900 && b == 999);
    CHECK(el_http_parse_range("bytes=900-5000", 1000, &a, &b) == 0 && b == 999);
    CHECK(el_http_parse_range("bytes=-100", 1000, &a, &b) == 0 && a == 900 && b == 999);
    CHECK(el_http_parse_range("bytes=-5000", 1000, &a, &b) == 0 && a == 0);
    CHECK(el_http_parse_range("bytes=1000-", 1000, &a, &b) == -1);
    CHECK(el_http_parse_range("bytes=5-1", 1000, &a, &b) == 1);
    CHECK(el_http_parse_range("bytes=0-1,5-6", 1000, &a, &b) == 1);
    CHECK(el_http_parse_range("items=0-1", 1000, &a, &b) == 1);
    CHECK(el_http_parse_range(NULL, 1000, &a, &b) == 1);
    CHECK(el_http_parse_range("bytes=99999999999999999999-", 1000, &a, &b) == 1);
}

static void test_backoff(void)
{
    uint64_t seed = 7;
    int64_t max_seen = 0, distinct = 0, last = -1;
    for (unsigned attempt = 0; attempt < 12; attempt++) {
        int64_t ceiling = 100LL << attempt;
        if (ceiling > 5000)
            ceiling = 5000;
        for (int i = 0; i < 50; i++) {
            int64_t d = el_client_backoff_ms(attempt, 100, 5000, &seed);
            CHECK(d >= 0 && d <= ceiling);
            if (d > max_seen)
                max_seen = d;
            distinct += d != last;
            last = d;
        }
    }
    CHECK(max_seen > 2500);    /* the cap is reached, not exceeded */
    CHECK(distinct > 500);     /* jittered, not a fixed schedule */
}

int main(void)
{
    test_backoff();
    test_pipelined();
    test_refusals();
    test_responses();
    test_range();
    return el_test_done("test_hub_http");
}
