/* Known-answer vectors for signing and the .elb format, and the streaming
 * reader. Vectors live in tests/crypto/vectors/ (README there):
 *  - rfc6979-p256.pem: the P-256 key of RFC 6979 A.2.5; signing "sample"
 *    must give the RFC's (r, s) — proves deterministic ECDSA over SHA-256.
 *  - kat1.header.json + kat1.payload signed by that key must give exactly
 *    kat1.elb, whose bundle id and key id are in kat1.txt.
 * `test_bundle --write-vector DIR` regenerates kat1.elb and kat1.txt (only
 * when the format changes on purpose; the version in the magic must then
 * change too). */
#include <fcntl.h>
#include <unistd.h>

#include "base/fs.h"
#include "check.h"
#include "fixture.h"

static char vec_dir[1024];

static uint8_t *slurp(const char *name, size_t *len)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", vec_dir, name);
    uint8_t *buf = NULL;
    el_error err;
    if (el_fs_read_file(path, 1 << 20, &buf, len, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
    return buf;
}

static el_crypto_key *kat_key(void)
{
    size_t len;
    uint8_t *pem = slurp("rfc6979-p256.pem", &len);
    el_crypto_key *key = NULL;
    el_error err;
    int rc = el_crypto_key_parse(pem, len, 1, &key, &err);
    el_free(pem);
    CHECK_OK(rc, &err);
    return key;
}

static void test_rfc6979(el_crypto_key *key)
{
    static const char r_hex[] = "efd48b2aacb6a8fd1140dd9cd45e81d69d2c877b56aaf991c34d0ea84eaf3716";
    static const char s_hex[] = "f7cb1c942d657c41d436c7a1b6e29f65f3e900dbb9aff4064dc4ab2f843acda8";
    uint8_t sig[EL_CRYPTO_SIG_MAX];
    size_t sig_len;
    el_error err;
    CHECK_OK(el_crypto_sign(key, "sample", 6, sig, &sig_len, &err), &err);
    /* DER: 30 46 02 21 00 r 02 21 00 s (both have the top bit set). */
    CHECK(sig_len == 72);
    char hex[2 * EL_CRYPTO_SIG_MAX + 1];
    el_hex(sig, sig_len, hex);
    CHECK(strncmp(hex, "3046022100", 10) == 0);
    CHECK(strncmp(hex + 10, r_hex, 64) == 0);
    CHECK(strncmp(hex + 74, "022100", 6) == 0);
    CHECK(strncmp(hex + 80, s_hex, 64) == 0);
    CHECK_OK(el_crypto_verify(key, "sample", 6, sig, sig_len, &err), &err);
    CHECK(el_crypto_verify(key, "sampke", 6, sig, sig_len, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "bad_signature");
}

static uint8_t *build_kat(el_crypto_key *key, size_t *len)
{
    size_t hlen, plen;
    uint8_t *header = slurp("kat1.header.json", &hlen);
    uint8_t *payload = slurp("kat1.payload", &plen);
    el_bundle b;
    el_bundle_init(&b);
    b.header = header;
    b.header_len = hlen;
    b.payload = payload;
    b.payload_len = plen;
    el_error err;
    uint8_t *out = NULL;
    CHECK_OK(el_bundle_add_signature(&b, key, &err), &err);
    CHECK_OK(el_bundle_serialize(&b, &out, len, &err), &err);
    el_free(header);
    el_free(payload);
    return out;
}

static void write_vector(el_crypto_key *key)
{
    size_t len;
    uint8_t *bytes = build_kat(key, &len);
    el_bundle b;
    el_error err;
    char path[1200], txt[512];
    CHECK_OK(el_bundle_parse(bytes, len, &b, &err), &err);
    snprintf(path, sizeof path, "%s/kat1.elb", vec_dir);
    CHECK_OK(el_fs_write_atomic(path, bytes, len, 0644, &err), &err);
    char sig_hex[2 * EL_CRYPTO_SIG_MAX + 1];
    el_hex(b.sigs[0].sig, b.sigs[0].sig_len, sig_hex);
    int n = snprintf(txt, sizeof txt, "bundle_id=%s\nkey_id=%s\nsignature=%s\n", b.id,
                     b.sigs[0].key_id, sig_hex);
    snprintf(path, sizeof path, "%s/kat1.txt", vec_dir);
    CHECK_OK(el_fs_write_atomic(path, txt, (size_t)n, 0644, &err), &err);
    el_free(bytes);
}

static void test_kat_bundle(el_crypto_key *key)
{
    size_t len, want_len, txt_len;
    uint8_t *bytes = build_kat(key, &len);
    uint8_t *want = slurp("kat1.elb", &want_len);
    char *txt = (char *)slurp("kat1.txt", &txt_len);
    CHECK(len == want_len && memcmp(bytes, want, len) == 0);

    el_bundle b;
    el_error err;
    CHECK_OK(el_bundle_parse(want, want_len, &b, &err), &err);
    CHECK(b.n_sigs == 1);
    char line[256];
    snprintf(line, sizeof line, "bundle_id=%s\n", b.id);
    CHECK(strstr(txt, line) != NULL);
    char kid[65];
    CHECK_OK(el_crypto_key_id(key, kid, &err), &err);
    CHECK_STR(b.sigs[0].key_id, kid);
    snprintf(line, sizeof line, "key_id=%s\n", kid);
    CHECK(strstr(txt, line) != NULL);
    /* Framing bytes, pinned independently of the code: magic, LE length. */
    CHECK(memcmp(want, "ELB1", 4) == 0);
    CHECK(want[4] == (uint8_t)b.header_len && want[5] == (uint8_t)(b.header_len >> 8) &&
          want[6] == 0 && want[7] == 0);
    CHECK(want[8 + b.header_len] == 1 && want[9 + b.header_len] == 0);
    CHECK(want[10 + b.header_len] == 64 && want[11 + b.header_len] == 0);
    CHECK_OK(el_bundle_verify_sig(&b, 0, key, &err), &err);
    el_manifest m;
    CHECK_OK(el_manifest_parse(b.header, b.header_len, 1 << 20, &m, &err), &err);
    CHECK(m.type == EL_MANIFEST_RELEASE && m.kind == EL_KIND_POLICY && m.counter == 1);
    CHECK_OK(el_bundle_check_payload(&b, m.payload_sha256, m.payload_size, &err), &err);
    el_manifest_finish(&m);

    /* Streaming reader: same framing, payload verified by hash from the fd. */
    char path[1200];
    snprintf(path, sizeof path, "%s/kat1.elb", vec_dir);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    el_bundle s;
    CHECK_OK(el_bundle_read_head_fd(fd, &s, &err), &err);
    CHECK(s.head_len == b.head_len && s.n_sigs == 1 && strcmp(s.id, b.id) == 0);
    CHECK(s.payload == NULL);
    CHECK_OK(el_manifest_parse(s.header, s.header_len, 1 << 20, &m, &err), &err);
    CHECK_OK(el_bundle_stream_payload(fd, m.payload_sha256, m.payload_size, NULL, NULL,
                                      &err), &err);
    close(fd);
    /* Streamed payload one byte short and one byte long. */
    fd = open(path, O_RDONLY);
    el_bundle_finish(&s);
    CHECK_OK(el_bundle_read_head_fd(fd, &s, &err), &err);
    CHECK(el_bundle_stream_payload(fd, m.payload_sha256, m.payload_size + 1, NULL, NULL,
                                   &err) == EL_ETRUST);
    CHECK_STR(err.tag, "truncated");
    close(fd);
    fd = open(path, O_RDONLY);
    el_bundle_finish(&s);
    CHECK_OK(el_bundle_read_head_fd(fd, &s, &err), &err);
    CHECK(el_bundle_stream_payload(fd, m.payload_sha256, m.payload_size - 1, NULL, NULL,
                                   &err) == EL_ETRUST);
    CHECK_STR(err.tag, "oversize");
    close(fd);
    el_bundle_finish(&s);
    el_manifest_finish(&m);

    el_free(bytes);
    el_free(want);
    el_free(txt);
}

static void test_limits(el_crypto_key *key)
{
    el_error err;
    el_bundle b;
    /* Header length above 64 KiB is refused before anything past it is read:
     * the input here is only the 8 fixed bytes. */
    uint8_t big[8] = {'E', 'L', 'B', '1', 0x01, 0x00, 0x01, 0x00};
    CHECK(el_bundle_parse(big, sizeof big, &b, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "oversize");
    /* 17 signatures. */
    uint8_t many[8 + 2 + 2] = {'E', 'L', 'B', '1', 2, 0, 0, 0, '{', '}', 17, 0};
    CHECK(el_bundle_parse(many, sizeof many, &b, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "oversize");
    /* Other versions of the magic, and garbage. */
    const char *magics[] = {"ELB0", "ELB2", "elb1", "\0\0\0\0"};
    for (int i = 0; i < 4; i++) {
        uint8_t v[12] = {0, 0, 0, 0, 2, 0, 0, 0, '{', '}', 0, 0};
        memcpy(v, magics[i], 4);
        CHECK(el_bundle_parse(v, sizeof v, &b, &err) == EL_EINPUT);
    }
    uint8_t ok[12] = {'E', 'L', 'B', '1', 2, 0, 0, 0, '{', '}', 0, 0};
    CHECK_OK(el_bundle_parse(ok, sizeof ok, &b, &err), &err);
    CHECK(b.n_sigs == 0 && b.payload_len == 0);
    /* A manifest of another format version is refused after parsing. */
    const char *v2 = "{\"type\":\"release\",\"version\":2}";
    el_manifest m;
    CHECK(el_manifest_parse((const uint8_t *)v2, strlen(v2), 100, &m, &err) == EL_EINPUT);
    /* 16 signatures fit, the 17th does not; the same key twice does not. */
    el_bundle s;
    el_bundle_init(&s);
    s.header = (const uint8_t *)"{}";
    s.header_len = 2;
    CHECK_OK(el_bundle_add_signature(&s, key, &err), &err);
    CHECK(el_bundle_add_signature(&s, key, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "duplicate_signer");
}

int main(int argc, char **argv)
{
    const char *src = getenv("EDGELOOP_SOURCE_ROOT");
    snprintf(vec_dir, sizeof vec_dir, "%s/tests/crypto/vectors", src ? src : ".");
    el_crypto_key *key = kat_key();
    if (!key)
        return el_test_done("test_bundle");
    if (argc == 3 && strcmp(argv[1], "--write-vector") == 0) {
        snprintf(vec_dir, sizeof vec_dir, "%s", argv[2]);
        write_vector(key);
        el_crypto_key_destroy(key);
        return el_test_done("test_bundle --write-vector");
    }
    test_rfc6979(key);
    test_kat_bundle(key);
    test_limits(key);
    el_crypto_key_destroy(key);
    return el_test_done("test_bundle");
}
