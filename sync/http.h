/* A strict, small HTTP/1.1 reader and writer for the hub protocol.
 *
 * Why our own parser: it must take no new dependency (Debian's http-parser
 * is unmaintained, llhttp is not packaged for C here), and the hub needs far
 * less than a general parser: Content-Length bodies on requests, chunked or
 * sized bodies on responses, keep-alive, and hard limits checked before any
 * byte past them is read. Anything outside that subset is refused with a
 * clear 4xx rather than guessed at (no obs-fold, no bare LF, no
 * Transfer-Encoding on requests, no conflicting Content-Length).
 *
 * The reader pulls bytes through a callback, so the same code runs over a
 * TLS connection, a socket in tests, or a memory buffer in the fuzz target.
 */
#ifndef EL_SYNC_HTTP_H
#define EL_SYNC_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "base/error.h"

#define EL_HTTP_HEAD_MAX 8192      /* request/status line + headers, bytes */
#define EL_HTTP_MAX_HEADERS 32
#define EL_HTTP_BUF 16384

typedef struct el_http_limits {
    size_t line_max;     /* request or status line; 0 = 2048 */
    size_t head_max;     /* whole head; 0 = EL_HTTP_HEAD_MAX (never more) */
    size_t headers_max;  /* header count; 0 = EL_HTTP_MAX_HEADERS (never more) */
    size_t body_max;     /* body bytes; 0 = 1 MiB */
} el_http_limits;

typedef struct el_http_header {
    const char *name;    /* as received; compare case-insensitively */
    const char *value;   /* without surrounding whitespace */
} el_http_header;

/* One request or response. Strings point into HEAD; BODY is owned. */
typedef struct el_http_msg {
    const char *method;  /* requests */
    const char *target;  /* requests: path plus query as received */
    char path[1024];     /* requests: target before '?' */
    const char *query;   /* requests: after '?', "" when none */
    int status;          /* responses */
    int minor;           /* HTTP/1.MINOR, 0 or 1 */
    size_t n_headers;
    el_http_header headers[EL_HTTP_MAX_HEADERS];
    int64_t content_length;  /* -1 when absent */
    int chunked;
    int keep_alive;
    uint8_t *body;       /* el_malloc'd, NUL-terminated (not counted) */
    size_t body_len;
    char head[EL_HTTP_HEAD_MAX + 1];
} el_http_msg;

typedef long (*el_http_read_fn)(void *io, void *buf, size_t len, el_error *err);
typedef int (*el_http_write_fn)(void *io, const void *buf, size_t len, el_error *err);

/* A buffered byte stream: READ returns >0 bytes, 0 at end of stream or a
 * negative EL_E* code; WRITE returns 0 or a negative code. */
typedef struct el_http_conn {
    void *io;
    el_http_read_fn read;
    el_http_write_fn write;
    size_t pos, end;
    uint8_t buf[EL_HTTP_BUF];
} el_http_conn;

void el_http_conn_init(el_http_conn *conn, void *io, el_http_read_fn read,
                       el_http_write_fn write);
/* 1 when bytes of a next message are already buffered. */
int el_http_conn_pending(const el_http_conn *conn);

void el_http_msg_init(el_http_msg *msg);
/* Frees the body; MSG may be reused after el_http_msg_init. */
void el_http_msg_finish(el_http_msg *msg);

/* Reads one request (head and Content-Length body) into MSG.
 * Returns 0; 1 when the stream ended cleanly before the first byte; or a
 * negative code with *STATUS set to the HTTP status to answer with (400,
 * 413, 414, 431, 501, 505) or 0 when the stream failed (EL_EIO: nothing
 * can be answered). MSG holds what was parsed so far on failure and must be
 * finished either way. */
int el_http_read_request(el_http_conn *conn, const el_http_limits *limits,
                         el_http_msg *msg, int *status, el_error *err);

/* Reads one response (Content-Length, chunked, or until close) into MSG.
 * Returns 0 or a negative code (EL_EINPUT malformed, EL_EIO stream). */
int el_http_read_response(el_http_conn *conn, const el_http_limits *limits,
                          el_http_msg *msg, el_error *err);

/* Value of header NAME (case-insensitive), or NULL. */
const char *el_http_header_get(const el_http_msg *msg, const char *name);

/* Writes a response with Content-Length. EXTRA is "" or complete header
 * lines, each ending in CRLF. Returns 0 or the stream's error. */
int el_http_write_response(el_http_conn *conn, int status, const char *content_type,
                           const char *extra, const void *body, size_t len,
                           int keep_alive, el_error *err);

/* Writes only the head of a response whose CONTENT_LENGTH body bytes the
 * caller then writes itself (streamed blobs). */
int el_http_write_head(el_http_conn *conn, int status, const char *content_type,
                       const char *extra, uint64_t content_length, int keep_alive,
                       el_error *err);

/* Writes a request with Content-Length (omitted for an empty GET). */
int el_http_write_request(el_http_conn *conn, const char *method, const char *host,
                          const char *target, const char *extra,
                          const char *content_type, const void *body, size_t len,
                          el_error *err);

/* Reason phrase for STATUS ("Unknown" for others). Static storage. */
const char *el_http_reason(int status);

/* Parses a Range header of the form "bytes=FIRST-[LAST]" or "bytes=-SUFFIX"
 * against a resource of SIZE bytes. Returns 0 with [*FIRST, *LAST]
 * inclusive, 1 when the header is absent or not a single byte range (serve
 * the whole resource), or -1 when unsatisfiable (answer 416). */
int el_http_parse_range(const char *value, uint64_t size, uint64_t *first,
                        uint64_t *last);

#endif
