/* agent/base: SHA-256 against FIPS 180-4 vectors, JSON limits, atomic
 * writes, arena, allocation failure injection, error model, digest set. */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/arena.h"
#include "base/digest_set.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/json.h"
#include "base/sha256.h"
#include "check.h"

static void test_sha256(void)
{
    char hex[65];
    el_sha256_hex("", 0, hex);
    CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    el_sha256_hex("abc", 3, hex);
    CHECK_STR(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    el_sha256_hex(two, strlen(two), hex);
    CHECK_STR(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    /* one million 'a', fed in uneven pieces to exercise block boundaries */
    el_sha256_ctx ctx;
    el_sha256_init(&ctx);
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    size_t left = 1000000;
    while (left) {
        size_t n = left < sizeof chunk ? left : sizeof chunk;
        el_sha256_update(&ctx, chunk, n);
        left -= n;
    }
    uint8_t d[32];
    el_sha256_final(&ctx, d);
    el_hex(d, 32, hex);
    CHECK_STR(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    uint8_t back[32];
    CHECK(el_unhex(hex, back, 32) == 0 && memcmp(back, d, 32) == 0);
    CHECK(el_unhex("zz", back, 1) == -1);
}

/* Random data of many lengths (around block and padding boundaries, and
 * long runs of whole blocks), hashed in one piece and in uneven pieces,
 * against `openssl dgst -sha256`: an implementation nobody here wrote. The
 * test runs once with the block function this CPU picks and once with
 * EDGELOOP_SHA256_PORTABLE=1. */
static void test_sha256_openssl(void)
{
    printf("sha256 implementation: %s\n", el_sha256_impl());
    if (system("command -v openssl >/dev/null 2>&1") != 0) {
        printf("openssl is not installed: random-data comparison skipped\n");
        return;
    }
    static const size_t lens[] = {1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 4096, 65537, 300001};
    char dir[] = "/tmp/el-test-sha-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    uint64_t x = 0x243f6a8885a308d3ull;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t len = lens[i];
        uint8_t *buf = el_malloc(len);
        for (size_t k = 0; k < len; k++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            buf[k] = (uint8_t)(x >> 32);
        }
        char path[600], cmd[800], want[100] = "", hex[65], hex2[65];
        snprintf(path, sizeof path, "%s/d%zu", dir, i);
        FILE *f = fopen(path, "wb");
        CHECK(f && fwrite(buf, 1, len, f) == len);
        if (f)
            fclose(f);
        snprintf(cmd, sizeof cmd, "openssl dgst -sha256 -r %s", path);
        FILE *o = popen(cmd, "r");
        CHECK(o && fgets(want, sizeof want, o));
        if (o)
            pclose(o);
        want[64] = '\0';
        el_sha256_hex(buf, len, hex);
        CHECK_MSG(!strcmp(hex, want), "length %zu: %s, openssl %s", len, hex, want);
        el_sha256_ctx ctx;
        el_sha256_init(&ctx);
        for (size_t off = 0, step = 1; off < len; step = step * 3 + 1) {
            size_t n = len - off < step ? len - off : step;
            el_sha256_update(&ctx, buf + off, n);
            off += n;
        }
        uint8_t d[32];
        el_sha256_final(&ctx, d);
        el_hex(d, 32, hex2);
        CHECK_MSG(!strcmp(hex2, want), "length %zu in pieces: %s, openssl %s", len, hex2, want);
        el_free(buf);
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_json(void)
{
    el_error err;
    json_t *j = el_json_parse("{\"a\":1,\"b\":\"x\",\"c\":2.5}", 23, 100, "doc", &err);
    CHECK(j != NULL);
    int64_t a = 0;
    const char *b = NULL;
    double c = 0;
    CHECK_OK(el_json_get_i64(j, "a", 0, 10, &a, "doc", &err), &err);
    CHECK(a == 1);
    CHECK_OK(el_json_get_str(j, "b", &b, "doc", &err), &err);
    CHECK_STR(b, "x");
    CHECK_OK(el_json_get_f64(j, "c", &c, "doc", &err), &err);
    CHECK(c == 2.5);
    CHECK(el_json_get_i64(j, "a", 2, 10, &a, "doc", &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "\"a\"") != NULL);
    CHECK(el_json_get_str(j, "missing", &b, "doc", &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "missing") != NULL);
    CHECK(el_json_get_i64(j, "b", 0, 10, &a, "doc", &err) == EL_EINPUT);
    json_decref(j);

    CHECK(el_json_parse("{\"a\":1,\"a\":2}", 13, 100, "dup", &err) == NULL);
    CHECK(err.code == EL_EINPUT);
    CHECK(el_json_parse("{\"a\":1}", 7, 6, "big", &err) == NULL);
    CHECK(strstr(err.msg, "limit") != NULL);
    CHECK(el_json_parse("{\"a\":1} x", 9, 100, "trail", &err) == NULL);
    CHECK(el_json_parse("{\"a\":", 5, 100, "cut", &err) == NULL);
}

static void test_fs(void)
{
    char dir[] = "/tmp/el-test-base-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512], sub[512];
    el_error err;
    snprintf(sub, sizeof sub, "%s/a/b/c", dir);
    CHECK_OK(el_fs_mkdirs(sub, 0755, &err), &err);
    CHECK(el_fs_exists(sub));
    CHECK_OK(el_fs_join(path, sizeof path, sub, "file"), &err);
    CHECK_OK(el_fs_write_atomic(path, "hello", 5, 0600, &err), &err);
    uint8_t *buf;
    size_t len;
    CHECK_OK(el_fs_read_file(path, 100, &buf, &len, &err), &err);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0 && buf[5] == '\0');
    el_free(buf);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(el_fs_read_file(path, 4, &buf, &len, &err) == EL_EINPUT);
    CHECK(el_fs_read_file("/nonexistent/x", 4, &buf, &len, &err) == EL_ENOTFOUND);

    /* a full disk leaves the old content and no temporary file */
    setenv("EDGELOOP_FAULT", "other,fs.enospc", 1);
    CHECK(el_fs_write_atomic(path, "world!", 6, 0600, &err) == EL_ENOSPC);
    unsetenv("EDGELOOP_FAULT");
    CHECK_OK(el_fs_read_file(path, 100, &buf, &len, &err), &err);
    CHECK(len == 5 && memcmp(buf, "hello", 5) == 0);
    el_free(buf);
    DIR *d = opendir(sub);
    CHECK(d != NULL);
    for (struct dirent *e; (e = readdir(d));)
        CHECK(!strstr(e->d_name, ".tmp."));
    closedir(d);

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

/* Threads of one process writing the same path at once (a hub's workers
 * storing the same content-addressed blob) must each succeed and leave the
 * whole content: each write has a temporary file of its own. */
#define RACE_WRITERS 4
#define RACE_ROUNDS 60
#define RACE_LEN (256 * 1024)

typedef struct race_arg {
    const char *path;
    const uint8_t *data;
    int failures;
    int torn;
} race_arg;

static void *race_writer(void *p)
{
    race_arg *a = p;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        el_error err = {0};
        if (el_fs_write_atomic(a->path, a->data, RACE_LEN, 0644, &err)) {
            a->failures++;
            continue;
        }
        struct stat st;
        if (stat(a->path, &st) != 0 || st.st_size != RACE_LEN)
            a->torn++;
    }
    return NULL;
}

static void test_fs_concurrent_writers(void)
{
    char dir[] = "/tmp/el-test-race-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char path[512];
    snprintf(path, sizeof path, "%s/blob", dir);
    uint8_t *data = el_malloc(RACE_LEN);
    CHECK(data != NULL);
    for (size_t i = 0; i < RACE_LEN; i++)
        data[i] = (uint8_t)(i * 31 + 7);
    pthread_t t[RACE_WRITERS];
    race_arg a[RACE_WRITERS];
    for (int i = 0; i < RACE_WRITERS; i++) {
        a[i] = (race_arg){path, data, 0, 0};
        CHECK(pthread_create(&t[i], NULL, race_writer, &a[i]) == 0);
    }
    int failures = 0, torn = 0;
    for (int i = 0; i < RACE_WRITERS; i++) {
        pthread_join(t[i], NULL);
        failures += a[i].failures;
        torn += a[i].torn;
    }
    CHECK(failures == 0);
    CHECK(torn == 0);
    uint8_t *back;
    size_t len;
    el_error err;
    CHECK_OK(el_fs_read_file(path, RACE_LEN, &back, &len, &err), &err);
    CHECK(len == RACE_LEN && memcmp(back, data, RACE_LEN) == 0);
    el_free(back);
    /* no temporary file is left behind */
    DIR *d = opendir(dir);
    CHECK(d != NULL);
    int entries = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            entries++;
    closedir(d);
    CHECK(entries == 1);
    el_free(data);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
}

static void test_arena_alloc(void)
{
    el_arena arena;
    el_arena_init(&arena, 256);
    char *a = el_arena_alloc(&arena, 10);
    char *b = el_arena_alloc(&arena, 1000);   /* larger than a block */
    CHECK(a && b && ((uintptr_t)a % 64) == 0 && ((uintptr_t)b % 64) == 0);
    memset(b, 7, 1000);
    el_arena_reset(&arena);
    char *c = el_arena_alloc(&arena, 16);
    CHECK(c && c[0] == 0);
    el_arena_finish(&arena);

    el_alloc_fail_after(2);
    void *p1 = el_malloc(8);
    void *p2 = el_malloc(8);
    void *p3 = el_malloc(8);
    CHECK(p1 != NULL && p2 == NULL && p3 == NULL);
    el_alloc_fail_reset();
    el_free(p1);
    CHECK(el_calloc(SIZE_MAX / 2, 4) == NULL);
}

static void test_error(void)
{
    el_error err;
    el_error_clear(&err);
    CHECK(el_error_set(&err, EL_EINPUT, "file %s", "x.json") == EL_EINPUT);
    CHECK_STR(err.tag, "bad_input");
    el_error_prefix(&err, "loading");
    CHECK_STR(err.msg, "loading: file x.json");
    el_error_set_tag(&err, EL_ETRUST, "bad_signature", "sig");
    CHECK_STR(err.tag, "bad_signature");
    CHECK(el_error_exit_status(EL_ETRUST) == 3);
    CHECK(el_error_exit_status(EL_EPOLICY) == 3);
    CHECK(el_error_exit_status(EL_EINPUT) == 2);
    CHECK(el_error_exit_status(EL_EUSAGE) == 1);
    CHECK(el_error_exit_status(EL_OK) == 0);
    CHECK(el_error_set(NULL, EL_EIO, "ignored") == EL_EIO);
}

/* KEY(i): a digest whose first 8 bytes (the set index) are SET. */
static void digest_of(uint8_t key[EL_SHA256_LEN], uint64_t set, int i)
{
    char text[32];
    snprintf(text, sizeof text, "key %d", i);
    el_sha256(text, strlen(text), key);
    for (int b = 7; b >= 0; b--, set >>= 8)
        key[b] = (uint8_t)set;
}

static void test_digest_set(void)
{
    el_digest_set s;
    CHECK(el_digest_set_init(&s, 64) == 0);
    uint8_t k[8][EL_SHA256_LEN];
    for (int i = 0; i < 8; i++)
        digest_of(k[i], 3, i);   /* all in one set of 4 ways */
    CHECK(!el_digest_set_has(&s, k[0]));
    for (int i = 0; i < 4; i++)
        el_digest_set_add(&s, k[i]);
    for (int i = 0; i < 4; i++)
        CHECK(el_digest_set_has(&s, k[i]));
    /* k[0] was used last by the loop above... touch 1..3 so k[0] is oldest */
    for (int i = 1; i < 4; i++)
        CHECK(el_digest_set_has(&s, k[i]));
    el_digest_set_add(&s, k[4]);
    CHECK(!el_digest_set_has(&s, k[0]));
    CHECK(el_digest_set_has(&s, k[1]) && el_digest_set_has(&s, k[4]));
    el_digest_set_add(&s, k[4]);               /* again: no second copy */
    CHECK(el_digest_set_has(&s, k[2]) && el_digest_set_has(&s, k[3]));
    /* other sets are not disturbed */
    uint8_t other[EL_SHA256_LEN];
    digest_of(other, 5, 99);
    el_digest_set_add(&s, other);
    CHECK(el_digest_set_has(&s, other) && el_digest_set_has(&s, k[4]));
    /* a key differing in its last byte only is another key */
    uint8_t near[EL_SHA256_LEN];
    memcpy(near, k[4], sizeof near);
    near[EL_SHA256_LEN - 1] ^= 1;
    CHECK(!el_digest_set_has(&s, near));
    el_digest_set_finish(&s);
    /* tiny capacities still hold 4 */
    CHECK(el_digest_set_init(&s, 1) == 0 && s.n_sets == 1);
    el_digest_set_finish(&s);
    el_digest_set_finish(&s);                  /* twice is harmless */
}

int main(void)
{
    test_sha256();
    test_sha256_openssl();
    test_json();
    test_fs();
    test_fs_concurrent_writers();
    test_arena_alloc();
    test_error();
    test_digest_set();
    return el_test_done("test_base");
}
