/* Strict HTTP/1.1 subset (see http.h for why we have our own).
 *
 * Invariants:
 *  1. No byte beyond a limit is ever stored: the head is accumulated in the
 *     connection buffer only up to head_max, a body is allocated only after
 *     its declared length passed body_max.
 *  2. Every line ends in CRLF; a bare LF or CR, a control character, an
 *     obs-folded line or a header without a token name is malformed (400).
 *  3. Requests carry bodies by Content-Length only; Transfer-Encoding on a
 *     request is answered 501. Responses may be chunked (chunk sizes are
 *     bounded by what is left of body_max before they are read).
 *  4. Strings in el_http_msg point into msg->head, a private copy of the
 *     head with NULs written over the delimiters.
 */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <strings.h>
#include <string.h>

#include "base/alloc.h"

#define DEFAULT_LINE_MAX 2048
#define DEFAULT_BODY_MAX (1u << 20)

void el_http_conn_init(el_http_conn *conn, void *io, el_http_read_fn read,
                       el_http_write_fn write)
{
    conn->io = io;
    conn->read = read;
    conn->write = write;
    conn->pos = conn->end = 0;
}

int el_http_conn_pending(const el_http_conn *conn)
{
    return conn->end > conn->pos;
}

void el_http_msg_init(el_http_msg *msg)
{
    memset(msg, 0, offsetof(el_http_msg, head));
    msg->head[0] = '\0';
    msg->content_length = -1;
    msg->query = "";
}

void el_http_msg_finish(el_http_msg *msg)
{
    el_free(msg->body);
    msg->body = NULL;
    msg->body_len = 0;
}

const char *el_http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

static void limits_fill(const el_http_limits *in, el_http_limits *out)
{
    el_http_limits def = {0};
    if (in)
        def = *in;
    if (!def.line_max)
        def.line_max = DEFAULT_LINE_MAX;
    if (!def.head_max || def.head_max > EL_HTTP_HEAD_MAX)
        def.head_max = EL_HTTP_HEAD_MAX;
    if (def.line_max > def.head_max)
        def.line_max = def.head_max;
    if (!def.headers_max || def.headers_max > EL_HTTP_MAX_HEADERS)
        def.headers_max = EL_HTTP_MAX_HEADERS;
    if (!def.body_max)
        def.body_max = DEFAULT_BODY_MAX;
    *out = def;
}

/* Refills the buffer (compacting it first). Returns bytes read, 0 at end of
 * stream, or a negative code. */
static long fill(el_http_conn *conn, el_error *err)
{
    if (conn->pos > 0) {
        memmove(conn->buf, conn->buf + conn->pos, conn->end - conn->pos);
        conn->end -= conn->pos;
        conn->pos = 0;
    }
    if (conn->end == sizeof conn->buf)
        return el_error_set(err, EL_EINTERNAL, "HTTP buffer full");
    long got = conn->read(conn->io, conn->buf + conn->end, sizeof conn->buf - conn->end, err);
    if (got > 0)
        conn->end += (size_t)got;
    return got;
}

static int is_tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* Looks for CRLFCRLF in the buffer; returns the head length including it,
 * or 0. Refuses a bare LF or CR anywhere in the head. */
static long find_head_end(const el_http_conn *conn, size_t *scanned, int *bad)
{
    const uint8_t *b = conn->buf + conn->pos;
    size_t n = conn->end - conn->pos;
    for (size_t i = *scanned; i < n; i++) {
        if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r')) {
            *bad = 1;
            return 0;
        }
        if (b[i] == '\r' && i + 1 < n && b[i + 1] != '\n') {
            *bad = 1;
            return 0;
        }
        if (b[i] == '\n' && i >= 3 && b[i - 3] == '\r' && b[i - 2] == '\n')
            return (long)(i + 1);
    }
    *scanned = n > 0 ? n - 1 : 0;
    return 0;
}

/* Reads the head into msg->head. Returns 0, 1 at clean EOF before a byte,
 * or a negative code with *STATUS. */
static int read_head(el_http_conn *conn, const el_http_limits *lim, el_http_msg *msg,
                     int *status, el_error *err)
{
    size_t scanned = 0;
    int bad = 0;
    for (;;) {
        long len = find_head_end(conn, &scanned, &bad);
        if (bad) {
            *status = 400;
            return el_error_set(err, EL_EINPUT, "HTTP line not ended by CRLF");
        }
        size_t have = conn->end - conn->pos;
        /* the first line alone may not exceed line_max */
        const uint8_t *nl = memchr(conn->buf + conn->pos, '\n', have);
        size_t first = nl ? (size_t)(nl - (conn->buf + conn->pos)) + 1 : have;
        if (first > lim->line_max + 2 || (!nl && have > lim->line_max)) {
            *status = 414;
            return el_error_set(err, EL_EINPUT, "HTTP first line longer than %zu bytes",
                                lim->line_max);
        }
        if (len > 0) {
            if ((size_t)len > lim->head_max) {
                *status = 431;
                return el_error_set(err, EL_EINPUT, "HTTP head longer than %zu bytes",
                                    lim->head_max);
            }
            memcpy(msg->head, conn->buf + conn->pos, (size_t)len);
            msg->head[len] = '\0';
            conn->pos += (size_t)len;
            return 0;
        }
        if (have >= lim->head_max) {
            *status = 431;
            return el_error_set(err, EL_EINPUT, "HTTP head longer than %zu bytes",
                                lim->head_max);
        }
        long got = fill(conn, err);
        if (got < 0) {
            *status = 0;
            return (int)got;
        }
        if (got == 0) {
            *status = have ? 400 : 0;
            if (!have)
                return 1;
            return el_error_set(err, EL_EINPUT, "HTTP stream ended inside a head");
        }
    }
}

/* Splits the header lines that follow the first line (which starts at
 * msg->head) and fills headers, content length, chunked, keep-alive. LINE
 * points at the first header line. */
static int parse_headers(char *line, const el_http_limits *lim, el_http_msg *msg,
                         int is_request, int *status, el_error *err)
{
    int conn_close = 0, conn_keep = 0;
    *status = 400;
    for (;;) {
        char *eol = strstr(line, "\r\n");
        if (!eol)
            return el_error_set(err, EL_EINPUT, "HTTP head not terminated");
        *eol = '\0';
        if (line == eol)
            break;
        if (*line == ' ' || *line == '\t')
            return el_error_set(err, EL_EINPUT, "HTTP obs-fold header line refused");
        if (msg->n_headers >= lim->headers_max) {
            *status = 431;
            return el_error_set(err, EL_EINPUT, "more than %zu HTTP headers", lim->headers_max);
        }
        char *colon = line;
        while (is_tchar((unsigned char)*colon))
            colon++;
        if (colon == line || *colon != ':')
            return el_error_set(err, EL_EINPUT, "malformed HTTP header name");
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        char *end = value + strlen(value);
        while (end > value && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        for (char *c = value; *c; c++)
            if ((unsigned char)*c < 0x20 && *c != '\t')
                return el_error_set(err, EL_EINPUT, "control character in HTTP header %s", line);
        msg->headers[msg->n_headers].name = line;
        msg->headers[msg->n_headers].value = value;
        msg->n_headers++;

        if (!strcasecmp(line, "Content-Length")) {
            if (!*value || strlen(value) > 18)
                return el_error_set(err, EL_EINPUT, "bad Content-Length");
            int64_t v = 0;
            for (const char *c = value; *c; c++) {
                if (*c < '0' || *c > '9')
                    return el_error_set(err, EL_EINPUT, "bad Content-Length");
                v = v * 10 + (*c - '0');
            }
            if (msg->content_length >= 0 && msg->content_length != v)
                return el_error_set(err, EL_EINPUT, "conflicting Content-Length headers");
            msg->content_length = v;
        } else if (!strcasecmp(line, "Transfer-Encoding")) {
            if (is_request) {
                *status = 501;
                return el_error_set(err, EL_EINPUT,
                                    "Transfer-Encoding on a request is not supported");
            }
            if (strcasecmp(value, "chunked"))
                return el_error_set(err, EL_EINPUT, "unsupported Transfer-Encoding %s", value);
            msg->chunked = 1;
        } else if (!strcasecmp(line, "Connection")) {
            if (strcasestr(value, "close"))
                conn_close = 1;
            if (strcasestr(value, "keep-alive"))
                conn_keep = 1;
        }
        line = eol + 2;
    }
    if (msg->chunked && msg->content_length >= 0)
        return el_error_set(err, EL_EINPUT, "both Content-Length and chunked");
    msg->keep_alive = conn_close ? 0 : (msg->minor == 1 || conn_keep);
    *status = 0;
    return 0;
}

static int parse_version(const char *v, int *minor)
{
    if (strncmp(v, "HTTP/1.", 7) || (v[7] != '0' && v[7] != '1') || v[8])
        return -1;
    *minor = v[7] - '0';
    return 0;
}

static int parse_request_head(el_http_msg *msg, const el_http_limits *lim, int *status,
                              el_error *err)
{
    *status = 400;
    char *line = msg->head;
    char *eol = strstr(line, "\r\n");
    if (!eol)
        return el_error_set(err, EL_EINPUT, "HTTP request line not terminated");
    *eol = '\0';
    char *sp1 = strchr(line, ' ');
    if (!sp1 || sp1 == line)
        return el_error_set(err, EL_EINPUT, "malformed HTTP request line");
    *sp1 = '\0';
    for (char *c = line; *c; c++)
        if (*c < 'A' || *c > 'Z')
            return el_error_set(err, EL_EINPUT, "malformed HTTP method");
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2 || sp2 == target || strchr(sp2 + 1, ' '))
        return el_error_set(err, EL_EINPUT, "malformed HTTP request line");
    *sp2 = '\0';
    if (parse_version(sp2 + 1, &msg->minor)) {
        if (!strncmp(sp2 + 1, "HTTP/", 5))
            *status = 505;
        return el_error_set(err, EL_EINPUT, "unsupported HTTP version %.16s", sp2 + 1);
    }
    if (target[0] != '/')
        return el_error_set(err, EL_EINPUT, "HTTP target must be an absolute path");
    for (char *c = target; *c; c++)
        if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f)
            return el_error_set(err, EL_EINPUT, "bad byte in HTTP target");
    msg->method = line;
    msg->target = target;
    const char *q = strchr(target, '?');
    size_t plen = q ? (size_t)(q - target) : strlen(target);
    if (plen >= sizeof msg->path) {
        *status = 414;
        return el_error_set(err, EL_EINPUT, "HTTP path too long");
    }
    memcpy(msg->path, target, plen);
    msg->path[plen] = '\0';
    msg->query = q ? q + 1 : "";
    int rc = parse_headers(eol + 2, lim, msg, 1, status, err);
    if (rc)
        return rc;
    if (msg->minor == 1 && !el_http_header_get(msg, "Host")) {
        *status = 400;
        return el_error_set(err, EL_EINPUT, "HTTP/1.1 request without Host");
    }
    return 0;
}

/* Reads exactly LEN bytes of body into a new buffer. */
static int read_exact(el_http_conn *conn, uint8_t *out, size_t len, el_error *err)
{
    size_t done = 0;
    while (done < len) {
        size_t have = conn->end - conn->pos;
        if (have) {
            size_t take = have < len - done ? have : len - done;
            memcpy(out + done, conn->buf + conn->pos, take);
            conn->pos += take;
            done += take;
            continue;
        }
        conn->pos = conn->end = 0;
        long got = conn->read(conn->io, conn->buf, sizeof conn->buf, err);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return el_error_set(err, EL_EIO, "HTTP stream ended inside a body");
        conn->end = (size_t)got;
    }
    return 0;
}

static int read_sized_body(el_http_conn *conn, el_http_msg *msg, size_t len, el_error *err)
{
    msg->body = el_malloc(len + 1);
    if (!msg->body)
        return el_error_set(err, EL_ENOMEM, "out of memory for a %zu-byte HTTP body", len);
    int rc = read_exact(conn, msg->body, len, err);
    if (rc)
        return rc;
    msg->body[len] = '\0';
    msg->body_len = len;
    return 0;
}

int el_http_read_request(el_http_conn *conn, const el_http_limits *limits,
                         el_http_msg *msg, int *status, el_error *err)
{
    el_http_limits lim;
    limits_fill(limits, &lim);
    *status = 0;
    int rc = read_head(conn, &lim, msg, status, err);
    if (rc)
        return rc;
    if ((rc = parse_request_head(msg, &lim, status, err)) != 0)
        return rc;
    if (msg->content_length < 0) {
        if (!strcmp(msg->method, "PUT") || !strcmp(msg->method, "POST")) {
            *status = 411;
            return el_error_set(err, EL_EINPUT, "%s without Content-Length", msg->method);
        }
        msg->content_length = 0;
    }
    if ((uint64_t)msg->content_length > lim.body_max) {
        *status = 413;
        msg->keep_alive = 0;
        return el_error_set(err, EL_EINPUT, "HTTP body of %lld bytes exceeds the %zu-byte limit",
                            (long long)msg->content_length, lim.body_max);
    }
    rc = read_sized_body(conn, msg, (size_t)msg->content_length, err);
    if (rc)
        *status = 0;
    return rc;
}

/* Reads one CRLF-terminated line of at most MAX bytes into OUT. */
static int read_line(el_http_conn *conn, char *out, size_t max, el_error *err)
{
    for (;;) {
        uint8_t *b = conn->buf + conn->pos;
        size_t have = conn->end - conn->pos;
        uint8_t *nl = memchr(b, '\n', have);
        if (nl) {
            size_t len = (size_t)(nl - b);
            if (len == 0 || b[len - 1] != '\r' || len > max)
                return el_error_set(err, EL_EINPUT, "malformed chunk line");
            memcpy(out, b, len - 1);
            out[len - 1] = '\0';
            conn->pos += len + 1;
            return 0;
        }
        if (have > max)
            return el_error_set(err, EL_EINPUT, "chunk line too long");
        long got = fill(conn, err);
        if (got < 0)
            return (int)got;
        if (got == 0)
            return el_error_set(err, EL_EIO, "HTTP stream ended inside a chunk line");
    }
}

static int read_chunked_body(el_http_conn *conn, const el_http_limits *lim,
                             el_http_msg *msg, el_error *err)
{
    char line[256];
    size_t cap = 0;
    int rc;
    for (;;) {
        if ((rc = read_line(conn, line, sizeof line - 1, err)) != 0)
            return rc;
        uint64_t size = 0;
        size_t digits = 0;
        const char *c = line;
        for (; isxdigit((unsigned char)*c); c++, digits++) {
            if (digits >= 15)
                return el_error_set(err, EL_EINPUT, "chunk size too large");
            size = size * 16 + (uint64_t)(isdigit((unsigned char)*c) ? *c - '0'
                                                                       : (tolower(*c) - 'a' + 10));
        }
        if (!digits || (*c && *c != ';' && *c != ' ' && *c != '\t'))
            return el_error_set(err, EL_EINPUT, "malformed chunk size");
        if (size == 0)
            break;
        if (size > lim->body_max - msg->body_len)
            return el_error_set(err, EL_EINPUT, "chunked body exceeds the %zu-byte limit",
                                lim->body_max);
        size_t need = msg->body_len + (size_t)size + 1;
        if (need > cap) {
            size_t ncap = cap ? cap : 4096;
            while (ncap < need)
                ncap *= 2;
            uint8_t *nb = el_realloc(msg->body, ncap);
            if (!nb)
                return el_error_set(err, EL_ENOMEM, "out of memory for a chunked body");
            msg->body = nb;
            cap = ncap;
        }
        if ((rc = read_exact(conn, msg->body + msg->body_len, (size_t)size, err)) != 0)
            return rc;
        msg->body_len += (size_t)size;
        if ((rc = read_line(conn, line, 2, err)) != 0)
            return rc;
        if (line[0])
            return el_error_set(err, EL_EINPUT, "chunk data not followed by CRLF");
    }
    /* trailers: bounded count, then the empty line */
    for (int n = 0;; n++) {
        if (n > (int)lim->headers_max)
            return el_error_set(err, EL_EINPUT, "too many chunked trailers");
        if ((rc = read_line(conn, line, sizeof line - 1, err)) != 0)
            return rc;
        if (!line[0])
            break;
    }
    if (!msg->body && !(msg->body = el_malloc(1)))
        return el_error_set(err, EL_ENOMEM, "out of memory");
    msg->body[msg->body_len] = '\0';
    return 0;
}

/* Body delimited by the end of the stream (HTTP/1.0 style). */
static int read_to_eof(el_http_conn *conn, const el_http_limits *lim, el_http_msg *msg,
                       el_error *err)
{
    size_t cap = 0;
    for (;;) {
        size_t have = conn->end - conn->pos;
        if (have) {
            if (have > lim->body_max - msg->body_len)
                return el_error_set(err, EL_EINPUT, "HTTP body exceeds the %zu-byte limit",
                                    lim->body_max);
            if (msg->body_len + have + 1 > cap) {
                size_t ncap = (msg->body_len + have + 1) * 2;
                uint8_t *nb = el_realloc(msg->body, ncap);
                if (!nb)
                    return el_error_set(err, EL_ENOMEM, "out of memory for an HTTP body");
                msg->body = nb;
                cap = ncap;
            }
            memcpy(msg->body + msg->body_len, conn->buf + conn->pos, have);
            msg->body_len += have;
            conn->pos = conn->end = 0;
        }
        long got = fill(conn, err);
        if (got < 0)
            return (int)got;
        if (got == 0)
            break;
    }
    if (!msg->body && !(msg->body = el_malloc(1)))
        return el_error_set(err, EL_ENOMEM, "out of memory");
    msg->body[msg->body_len] = '\0';
    msg->keep_alive = 0;
    return 0;
}

int el_http_read_response(el_http_conn *conn, const el_http_limits *limits,
                          el_http_msg *msg, el_error *err)
{
    el_http_limits lim;
    limits_fill(limits, &lim);
    int status = 0;
    int rc = read_head(conn, &lim, msg, &status, err);
    if (rc == 1)
        return el_error_set(err, EL_EIO, "connection closed before an HTTP response");
    if (rc)
        return rc;
    char *line = msg->head;
    char *eol = strstr(line, "\r\n");
    if (!eol)
        return el_error_set(err, EL_EINPUT, "HTTP status line not terminated");
    *eol = '\0';
    char ver[9];
    if (strlen(line) < 12 || line[8] != ' ')
        return el_error_set(err, EL_EINPUT, "malformed HTTP status line");
    memcpy(ver, line, 8);
    ver[8] = '\0';
    if (parse_version(ver, &msg->minor))
        return el_error_set(err, EL_EINPUT, "unsupported HTTP version in response");
    if (!isdigit((unsigned char)line[9]) || !isdigit((unsigned char)line[10]) ||
        !isdigit((unsigned char)line[11]) || (line[12] && line[12] != ' ') || line[9] == '0')
        return el_error_set(err, EL_EINPUT, "malformed HTTP status code");
    msg->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    if ((rc = parse_headers(eol + 2, &lim, msg, 0, &status, err)) != 0)
        return rc;
    if (msg->status == 204 || msg->status == 304 || msg->status < 200) {
        msg->body = el_malloc(1);
        if (!msg->body)
            return el_error_set(err, EL_ENOMEM, "out of memory");
        msg->body[0] = '\0';
        return 0;
    }
    if (msg->chunked)
        return read_chunked_body(conn, &lim, msg, err);
    if (msg->content_length >= 0) {
        if ((uint64_t)msg->content_length > lim.body_max)
            return el_error_set(err, EL_EINPUT,
                                "HTTP response body of %lld bytes exceeds the %zu-byte limit",
                                (long long)msg->content_length, lim.body_max);
        return read_sized_body(conn, msg, (size_t)msg->content_length, err);
    }
    return read_to_eof(conn, &lim, msg, err);
}

const char *el_http_header_get(const el_http_msg *msg, const char *name)
{
    for (size_t i = 0; i < msg->n_headers; i++)
        if (!strcasecmp(msg->headers[i].name, name))
            return msg->headers[i].value;
    return NULL;
}

/* Writes the head then the body; heads are small and bounded. */
static int write_message(el_http_conn *conn, const char *head, size_t head_len,
                         const void *body, size_t len, el_error *err)
{
    int rc = conn->write(conn->io, head, head_len, err);
    if (!rc && len)
        rc = conn->write(conn->io, body, len, err);
    return rc;
}

int el_http_write_head(el_http_conn *conn, int status, const char *content_type,
                       const char *extra, uint64_t content_length, int keep_alive,
                       el_error *err)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\n"
                     "Server: edgeloop-hub\r\n"
                     "Content-Type: %s\r\n"
                     "Content-Length: %llu\r\n"
                     "Connection: %s\r\n"
                     "%s\r\n",
                     status, el_http_reason(status),
                     content_type ? content_type : "application/json",
                     (unsigned long long)content_length, keep_alive ? "keep-alive" : "close",
                     extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head)
        return el_error_set(err, EL_EINTERNAL, "HTTP response head too long");
    return conn->write(conn->io, head, (size_t)n, err);
}

int el_http_write_response(el_http_conn *conn, int status, const char *content_type,
                           const char *extra, const void *body, size_t len,
                           int keep_alive, el_error *err)
{
    int rc = el_http_write_head(conn, status, content_type, extra, len, keep_alive, err);
    if (!rc && len)
        rc = conn->write(conn->io, body, len, err);
    return rc;
}

int el_http_write_request(el_http_conn *conn, const char *method, const char *host,
                          const char *target, const char *extra,
                          const char *content_type, const void *body, size_t len,
                          el_error *err)
{
    char head[2048];
    char length[96] = "";
    if (len || strcmp(method, "GET"))
        snprintf(length, sizeof length, "Content-Type: %s\r\nContent-Length: %zu\r\n",
                 content_type ? content_type : "application/octet-stream", len);
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\n"
                     "Host: %s\r\n"
                     "User-Agent: edgeloop\r\n"
                     "%s%s\r\n",
                     method, target, host, length, extra ? extra : "");
    if (n < 0 || (size_t)n >= sizeof head)
        return el_error_set(err, EL_EINTERNAL, "HTTP request head too long");
    return write_message(conn, head, (size_t)n, body, len, err);
}

static int parse_u64(const char **p, uint64_t *out)
{
    const char *c = *p;
    uint64_t v = 0;
    int digits = 0;
    for (; *c >= '0' && *c <= '9'; c++, digits++) {
        if (digits >= 19)
            return -1;
        v = v * 10 + (uint64_t)(*c - '0');
    }
    if (!digits)
        return -1;
    *p = c;
    *out = v;
    return 0;
}

int el_http_parse_range(const char *value, uint64_t size, uint64_t *first, uint64_t *last)
{
    if (!value || strncmp(value, "bytes=", 6) || strchr(value, ','))
        return 1;
    const char *p = value + 6;
    uint64_t a = 0, b = 0;
    if (*p == '-') {
        p++;
        if (parse_u64(&p, &b) || *p)
            return 1;
        if (b == 0 || size == 0)
            return -1;
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 0;
    }
    if (parse_u64(&p, &a) || *p != '-')
        return 1;
    p++;
    if (*p) {
        if (parse_u64(&p, &b) || *p || b < a)
            return 1;
    } else {
        b = size ? size - 1 : 0;
    }
    if (a >= size)
        return -1;
    *first = a;
    *last = b >= size ? size - 1 : b;
    return 0;
}
