/* Keys, certificates and CSRs, and interop with the openssl CLI:
 * our signatures verify with `openssl dgst -sha256 -verify`, openssl's with
 * ours; our certificates pass `openssl verify -CAfile`, our CSRs
 * `openssl req -verify`, and the SAN shows in `openssl x509 -text`. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/entropy.h>
#include <mbedtls/pk.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "check.h"
#include "fixture.h"

static char dir[256];
static int have_openssl;

static void path_in(char *out, size_t n, const char *name)
{
    snprintf(out, n, "%s/%s", dir, name);
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int rc = system(cmd);
    return rc == 0 ? 0 : 1;
}

static void write_file(const char *name, const void *data, size_t len)
{
    char p[512];
    el_error err;
    path_in(p, sizeof p, name);
    CHECK_OK(el_fs_write_atomic(p, data, len, 0644, &err), &err);
}

static void test_keys(void)
{
    el_error err;
    el_crypto_key *k = fx_key(), *priv = NULL, *pub = NULL;
    char p_priv[512], p_pub[512];
    path_in(p_priv, sizeof p_priv, "k.key");
    path_in(p_pub, sizeof p_pub, "k.pub");
    CHECK_OK(el_crypto_key_save_private(k, p_priv, &err), &err);
    CHECK_OK(el_crypto_key_save_public(k, p_pub, &err), &err);
    struct stat st;
    CHECK(stat(p_priv, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK_OK(el_crypto_key_load(p_priv, 1, &priv, &err), &err);
    CHECK_OK(el_crypto_key_load(p_pub, 0, &pub, &err), &err);
    CHECK(el_crypto_key_has_private(priv) && !el_crypto_key_has_private(pub));
    char a[65], b[65], c[65];
    el_crypto_key_id(k, a, &err);
    el_crypto_key_id(priv, b, &err);
    el_crypto_key_id(pub, c, &err);
    CHECK_STR(a, b);
    CHECK_STR(a, c);
    /* Key id = SHA-256 of the SPKI DER. */
    uint8_t *spki;
    size_t spki_len;
    CHECK_OK(el_crypto_key_spki(k, &spki, &spki_len, &err), &err);
    char want[65];
    el_sha256_hex(spki, spki_len, want);
    CHECK_STR(a, want);
    CHECK(spki_len == 91);
    el_free(spki);

    uint8_t s1[EL_CRYPTO_SIG_MAX], s2[EL_CRYPTO_SIG_MAX];
    size_t l1, l2;
    CHECK_OK(el_crypto_sign(priv, "msg", 3, s1, &l1, &err), &err);
    CHECK_OK(el_crypto_sign(k, "msg", 3, s2, &l2, &err), &err);
    CHECK(l1 == l2 && memcmp(s1, s2, l1) == 0);          /* deterministic */
    CHECK_OK(el_crypto_verify(pub, "msg", 3, s1, l1, &err), &err);
    CHECK(el_crypto_sign(pub, "msg", 3, s1, &l1, &err) == EL_EUSAGE);
    /* A public key file is not a private key, a P-384 key is refused. */
    el_crypto_key *bad = NULL;
    CHECK(el_crypto_key_load(p_pub, 1, &bad, &err) == EL_EINPUT && bad == NULL);

    if (have_openssl) {
        /* ours -> openssl: the bundle message form, hashed once. */
        write_file("msg.bin", "edgeloop-bundle-v1\0{}", 21);
        uint8_t sig[EL_CRYPTO_SIG_MAX];
        size_t sl;
        CHECK_OK(el_crypto_sign(k, "edgeloop-bundle-v1\0{}", 21, sig, &sl, &err), &err);
        write_file("msg.sig", sig, sl);
        CHECK(sh("cd %s && openssl dgst -sha256 -verify k.pub -signature msg.sig msg.bin "
                 ">/dev/null", dir) == 0);
        /* openssl -> ours, with a key openssl made and we load. */
        CHECK(sh("cd %s && openssl ecparam -name prime256v1 -genkey -noout -out o.key "
                 "2>/dev/null && openssl ec -in o.key -pubout -out o.pub 2>/dev/null && "
                 "openssl dgst -sha256 -sign o.key -out o.sig msg.bin", dir) == 0);
        el_crypto_key *opub = NULL;
        char p[512];
        path_in(p, sizeof p, "o.pub");
        CHECK_OK(el_crypto_key_load(p, 0, &opub, &err), &err);
        path_in(p, sizeof p, "o.sig");
        uint8_t *osig = NULL;
        size_t osl = 0;
        CHECK_OK(el_fs_read_file(p, 1024, &osig, &osl, &err), &err);
        if (opub && osig) {
            CHECK_OK(el_crypto_verify(opub, "edgeloop-bundle-v1\0{}", 21, osig, osl, &err),
                     &err);
            CHECK(el_crypto_verify(opub, "edgeloop-bundle-v1\0{ }", 22, osig, osl, &err) ==
                  EL_ETRUST);
        }
        el_free(osig);
        el_crypto_key_destroy(opub);
        /* openssl's PKCS#8 private key loads too. */
        CHECK(sh("cd %s && openssl pkcs8 -topk8 -nocrypt -in o.key -out o8.key", dir) == 0);
        el_crypto_key *o8 = NULL;
        path_in(p, sizeof p, "o8.key");
        CHECK_OK(el_crypto_key_load(p, 1, &o8, &err), &err);
        el_crypto_key_destroy(o8);
        CHECK(sh("cd %s && openssl ecparam -name secp384r1 -genkey -noout -out p384.key "
                 "2>/dev/null", dir) == 0);
        path_in(p, sizeof p, "p384.key");
        CHECK(el_crypto_key_load(p, 1, &bad, &err) == EL_EINPUT);
    }
    el_crypto_key_destroy(k);
    el_crypto_key_destroy(priv);
    el_crypto_key_destroy(pub);
}

static void write_pem(const char *name, const char *label, const uint8_t *der, size_t len)
{
    char *pem;
    el_error err;
    CHECK_OK(el_crypto_pem(label, der, len, &pem, &err), &err);
    write_file(name, pem, strlen(pem));
    el_free(pem);
}

static void test_certs(void)
{
    el_error err;
    fx_fleet f;
    fx_fleet_init(&f);
    const uint8_t *ca_der;
    size_t ca_len;
    el_crypto_cert_der(f.ca, &ca_der, &ca_len);
    write_pem("ca.crt", "CERTIFICATE", ca_der, ca_len);

    el_crypto_cert_info info;
    CHECK_OK(el_crypto_cert_get_info(f.ca, &info, &err), &err);
    CHECK(info.is_ca);
    CHECK_STR(info.role, "ca");
    CHECK_STR(info.cn, "test fleet CA");
    char fp[65];
    el_sha256_hex(ca_der, ca_len, fp);
    CHECK_STR(info.fingerprint, fp);

    /* Device: CSR made on the device, verified and issued by the CA. */
    el_crypto_key *dev = fx_key();
    uint8_t *csr;
    size_t csr_len;
    CHECK_OK(el_crypto_csr_create(dev, "dev-1", &csr, &csr_len, &err), &err);
    write_pem("dev.csr", "CERTIFICATE REQUEST", csr, csr_len);
    el_crypto_key *req_key = NULL;
    char cn[EL_CRYPTO_NAME_MAX + 1];
    CHECK_OK(el_crypto_csr_verify(csr, csr_len, &req_key, cn, &err), &err);
    CHECK_STR(cn, "dev-1");
    char a[65], b[65];
    el_crypto_key_id(dev, a, &err);
    el_crypto_key_id(req_key, b, &err);
    CHECK_STR(a, b);

    /* Forged CSR: the subject changed after signing. */
    uint8_t *forged = el_malloc(csr_len);
    memcpy(forged, csr, csr_len);
    uint8_t *at = memmem(forged, csr_len, "dev-1", 5);
    CHECK(at != NULL);
    if (at)
        at[4] = '2';
    el_crypto_key *fk = NULL;
    CHECK(el_crypto_csr_verify(forged, csr_len, &fk, cn, &err) == EL_ETRUST && fk == NULL);
    CHECK_STR(err.tag, "bad_signature");
    write_pem("forged.csr", "CERTIFICATE REQUEST", forged, csr_len);
    el_free(forged);

    el_crypto_cert_params p = {.cn = "dev-1", .role = "device", .group = "line-a",
                               .not_before = FX_T0, .not_after = FX_T0 + 365 * FX_DAY};
    uint8_t *der;
    size_t der_len;
    CHECK_OK(el_crypto_cert_issue(f.ca, f.ca_key, req_key, &p, &der, &der_len, &err), &err);
    write_pem("dev.crt", "CERTIFICATE", der, der_len);
    el_crypto_cert *cert = NULL;
    CHECK_OK(el_crypto_cert_parse(der, der_len, &cert, &err), &err);
    el_free(der);
    CHECK_OK(el_crypto_cert_get_info(cert, &info, &err), &err);
    CHECK_STR(info.role, "device");
    CHECK_STR(info.group, "line-a");
    CHECK_STR(info.cn, "dev-1");
    CHECK_STR(info.key_id, a);
    CHECK(!info.is_ca && info.not_before == FX_T0 && info.not_after == FX_T0 + 365 * FX_DAY);
    CHECK(strlen(info.serial) == 32 && info.serial[0] != '0');
    CHECK_OK(el_crypto_cert_verify(cert, f.ca, FX_T0 + FX_DAY, &err), &err);
    CHECK(el_crypto_cert_verify(cert, f.ca, FX_T0 + 400 * FX_DAY, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "expired");
    CHECK(el_crypto_cert_verify(cert, f.ca, FX_T0 - 1, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "expired");
    /* A leaf is not a trust anchor; another CA did not issue it. */
    CHECK(el_crypto_cert_verify(cert, cert, FX_T0 + FX_DAY, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "untrusted_signer");
    fx_fleet other;
    fx_fleet_init(&other);
    CHECK(el_crypto_cert_verify(cert, other.ca, FX_T0 + FX_DAY, &err) == EL_ETRUST);
    CHECK_STR(err.tag, "untrusted_signer");
    /* The wrong CA key is refused at issue time. */
    CHECK(el_crypto_cert_issue(f.ca, other.ca_key, req_key, &p, &der, &der_len, &err) ==
          EL_EUSAGE);
    fx_fleet_finish(&other);

    /* Hub: subjectAltName DNS names. */
    const char *names[] = {"hub.example.net", "hub-2.example.net"};
    el_crypto_cert_params hp = {.cn = "hub", .role = "hub", .dns = names, .n_dns = 2,
                                .not_before = FX_T0, .not_after = FX_T0 + 365 * FX_DAY};
    CHECK_OK(el_crypto_cert_issue(f.ca, f.ca_key, req_key, &hp, &der, &der_len, &err), &err);
    write_pem("hub.crt", "CERTIFICATE", der, der_len);
    el_crypto_cert *hub = NULL;
    CHECK_OK(el_crypto_cert_parse(der, der_len, &hub, &err), &err);
    el_free(der);
    CHECK_OK(el_crypto_cert_get_info(hub, &info, &err), &err);
    CHECK(info.n_dns == 2);
    CHECK_STR(info.dns[0], "hub.example.net");
    CHECK_STR(info.dns[1], "hub-2.example.net");
    hp.cn = "bad,name";
    CHECK(el_crypto_cert_issue(f.ca, f.ca_key, req_key, &hp, &der, &der_len, &err) ==
          EL_EUSAGE);

    if (have_openssl) {
        /* openssl checks expiry against the real clock: pass -attime. */
        CHECK(sh("cd %s && openssl verify -attime %lld -CAfile ca.crt dev.crt hub.crt "
                 ">/dev/null", dir, (long long)(FX_T0 + FX_DAY)) == 0);
        /* openssl 3.0 `req -verify` exits 0 either way: judge by its words. */
        CHECK(sh("cd %s && openssl req -in dev.csr -verify -noout 2>&1 | "
                 "grep -q 'verify OK'", dir) == 0);
        CHECK(sh("cd %s && openssl req -in forged.csr -verify -noout 2>&1 | "
                 "grep -q 'verify failure'", dir) == 0);
        CHECK(sh("cd %s && openssl x509 -in hub.crt -noout -text | grep -q "
                 "'DNS:hub.example.net, DNS:hub-2.example.net'", dir) == 0);
        CHECK(sh("cd %s && openssl x509 -in dev.crt -noout -subject | grep -q "
                 "'OU *= *device'", dir) == 0);
        /* A CSR made by openssl is accepted. */
        CHECK(sh("cd %s && openssl req -new -key o.key -subj /CN=ossl-dev -out o.csr", dir) ==
              0);
        char pth[512];
        uint8_t *ocsr = NULL;
        size_t ol = 0;
        path_in(pth, sizeof pth, "o.csr");
        CHECK_OK(el_fs_read_file(pth, 65536, &ocsr, &ol, &err), &err);
        el_crypto_key *ok = NULL;
        CHECK_OK(el_crypto_csr_verify(ocsr, ol, &ok, cn, &err), &err);
        CHECK_STR(cn, "ossl-dev");
        el_crypto_key_destroy(ok);
        el_free(ocsr);
    }
    el_crypto_cert_destroy(hub);
    el_crypto_cert_destroy(cert);
    el_crypto_key_destroy(req_key);
    el_crypto_key_destroy(dev);
    el_free(csr);
    fx_fleet_finish(&f);
}

static void test_kat_with_openssl(void)
{
    /* The committed bundle vector's signature verifies with openssl over
     * "edgeloop-bundle-v1" 0x00 header (DESIGN.md). */
    const char *src = getenv("EDGELOOP_SOURCE_ROOT");
    if (!have_openssl || !src)
        return;
    CHECK(sh("cd %s && v=%s/tests/crypto/vectors && "
             "openssl ec -in $v/rfc6979-p256.pem -pubout -out kat.pub 2>/dev/null && "
             "{ printf 'edgeloop-bundle-v1\\0'; cat $v/kat1.header.json; } > kat.msg && "
             "sed -n 's/^signature=//p' $v/kat1.txt | xxd -r -p > kat.sig && "
             "openssl dgst -sha256 -verify kat.pub -signature kat.sig kat.msg >/dev/null",
             dir, src) == 0);
    CHECK(sh("cd %s && [ \"$(sha256sum < %s/tests/crypto/vectors/kat1.header.json | "
             "cut -c1-64)\" = \"$(sed -n 's/^bundle_id=//p' "
             "%s/tests/crypto/vectors/kat1.txt)\" ]", dir, src, src) == 0);
}

/* The TLS hooks (tls.c design notes 9, 10): el_crypto_ecp_sign_hash gives
 * mbedTLS's own deterministic signature bytes for SHA-256 and SHA-384
 * handshake hashes, and el_crypto_ecp_verify_hash agrees with mbedTLS on
 * them (ECDSA on P-256 reads the first 32 bytes of a longer hash). */
static void test_tls_hooks(void)
{
    mbedtls_pk_context pk;
    mbedtls_pk_init(&pk);
    el_error err;
    uint8_t seed[32];
    CHECK_OK(el_crypto_random(seed, sizeof seed, &err), &err);
    mbedtls_ctr_drbg_context drbg;
    mbedtls_entropy_context ent;
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    CHECK(mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, seed, sizeof seed) == 0);
    CHECK(mbedtls_pk_setup(&pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) == 0);
    CHECK(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(pk),
                              mbedtls_ctr_drbg_random, &drbg) == 0);
    const mbedtls_md_type_t mds[2] = {MBEDTLS_MD_SHA256, MBEDTLS_MD_SHA384};
    for (int round = 0; round < 8; round++) {
        mbedtls_md_type_t md = mds[round % 2];
        size_t hlen = md == MBEDTLS_MD_SHA256 ? 32 : 48;
        uint8_t hash[48];
        CHECK_OK(el_crypto_random(hash, sizeof hash, &err), &err);
        unsigned char want[MBEDTLS_ECDSA_MAX_LEN], got[MBEDTLS_ECDSA_MAX_LEN];
        size_t wl = 0, gl = 0;
        CHECK(mbedtls_pk_sign(&pk, md, hash, hlen, want, &wl, mbedtls_ctr_drbg_random,
                              &drbg) == 0);
        CHECK(el_crypto_ecp_sign_hash(mbedtls_pk_ec(pk), (int)md, hash, hlen, got, &gl,
                                      mbedtls_ctr_drbg_random, &drbg) == 0);
        CHECK(wl == gl && !memcmp(want, got, wl));
        CHECK(mbedtls_pk_verify(&pk, md, hash, hlen, got, gl) == 0);
        CHECK(el_crypto_ecp_verify_hash(mbedtls_pk_ec(pk), hash, hlen, got, gl) == 0);
        uint8_t other[48];
        memcpy(other, hash, sizeof other);
        other[round % 32] ^= 0x10;
        CHECK(el_crypto_ecp_verify_hash(mbedtls_pk_ec(pk), other, hlen, got, gl) == 1);
        CHECK(mbedtls_pk_verify(&pk, md, other, hlen, got, gl) != 0);
        if (hlen == 48) {   /* past the first 32 bytes: both accept */
            memcpy(other, hash, sizeof other);
            other[40] ^= 0x10;
            CHECK(el_crypto_ecp_verify_hash(mbedtls_pk_ec(pk), other, hlen, got, gl) == 0);
            CHECK(mbedtls_pk_verify(&pk, md, other, hlen, got, gl) == 0);
        }
        got[gl - 1] ^= 1;
        CHECK(el_crypto_ecp_verify_hash(mbedtls_pk_ec(pk), hash, hlen, got, gl) == 1);
    }
    /* a hash shorter than the order is not ours to check */
    uint8_t h20[20] = {1};
    unsigned char sig[MBEDTLS_ECDSA_MAX_LEN];
    size_t sl = 0;
    CHECK(mbedtls_pk_sign(&pk, MBEDTLS_MD_SHA1, h20, sizeof h20, sig, &sl,
                          mbedtls_ctr_drbg_random, &drbg) == 0);
    CHECK(el_crypto_ecp_verify_hash(mbedtls_pk_ec(pk), h20, sizeof h20, sig, sl) == -1);
    mbedtls_pk_free(&pk);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
}

/* el_crypto_verify parses the DER signature itself (crypto.c design note
 * 6): every single-byte change, a trailing byte, a cut, r = 0 and s = n must
 * fail; the untouched signature must pass, for several keys and messages. */
static void test_verify_malformed(void)
{
    el_error err;
    for (int round = 0; round < 4; round++) {
        el_crypto_key *k = NULL;
        CHECK_OK(el_crypto_key_generate(&k, &err), &err);
        char msg[32];
        int mlen = snprintf(msg, sizeof msg, "status %d", round);
        uint8_t sig[EL_CRYPTO_SIG_MAX + 1], bad[EL_CRYPTO_SIG_MAX + 1];
        size_t len;
        CHECK_OK(el_crypto_sign(k, msg, (size_t)mlen, sig, &len, &err), &err);
        CHECK_OK(el_crypto_verify(k, msg, (size_t)mlen, sig, len, &err), &err);
        CHECK(el_crypto_verify(k, msg, (size_t)mlen - 1, sig, len, &err) == EL_ETRUST);
        int wrong = 0;
        for (size_t i = 0; i < len; i++) {
            for (int bit = 0; bit < 8; bit += 3) {
                memcpy(bad, sig, len);
                bad[i] ^= (uint8_t)(1u << bit);
                wrong += el_crypto_verify(k, msg, (size_t)mlen, bad, len, &err) == 0;
            }
        }
        CHECK(wrong == 0);
        memcpy(bad, sig, len);
        bad[len] = 0;
        CHECK(el_crypto_verify(k, msg, (size_t)mlen, bad, len + 1, &err) == EL_ETRUST);
        /* a byte after s inside the SEQUENCE (short-form length) */
        CHECK(sig[1] < 0x7f);
        bad[1]++;
        CHECK(el_crypto_verify(k, msg, (size_t)mlen, bad, len + 1, &err) == EL_ETRUST);
        CHECK(el_crypto_verify(k, msg, (size_t)mlen, sig, len - 1, &err) == EL_ETRUST);
        CHECK(el_crypto_verify(k, msg, (size_t)mlen, sig, 0, &err) == EL_ETRUST);
        el_crypto_key_destroy(k);
    }
    el_crypto_key *k = fx_key();
    /* r = 0, s = 1 */
    static const uint8_t zero_r[] = {0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01};
    CHECK(el_crypto_verify(k, "m", 1, zero_r, sizeof zero_r, &err) == EL_ETRUST);
    /* r = 1, s = n (the P-256 group order) */
    static const uint8_t s_is_n[] = {
        0x30, 0x26, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0xff, 0xff, 0xff, 0xff, 0x00,
        0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6,
        0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25,
        0x51};
    CHECK(el_crypto_verify(k, "m", 1, s_is_n, sizeof s_is_n, &err) == EL_ETRUST);
    el_crypto_key_destroy(k);
}

/* More keys than the verification table holds (crypto.c note 8), used by
 * four threads at once in a scrambled order: every good signature verifies
 * (first sight, cached, evicted and rebuilt), and each fails on another
 * key's message. */
#define MANY_KEYS 300
static el_crypto_key *many_keys[MANY_KEYS];
static uint8_t many_sigs[MANY_KEYS][EL_CRYPTO_SIG_MAX];
static size_t many_lens[MANY_KEYS];
static atomic_int many_wrong;

static void *verify_many(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    el_error err;
    for (int n = 0; n < MANY_KEYS / 2; n++) {
        seed = seed * 1103515245u + 12345u;
        int i = (int)((seed >> 8) % MANY_KEYS);
        char msg[16];
        snprintf(msg, sizeof msg, "key %d", i);
        if (el_crypto_verify(many_keys[i], msg, strlen(msg), many_sigs[i], many_lens[i], &err))
            atomic_fetch_add(&many_wrong, 1);
        snprintf(msg, sizeof msg, "key %d", (i + 1) % MANY_KEYS);
        if (el_crypto_verify(many_keys[i], msg, strlen(msg), many_sigs[i], many_lens[i], &err) !=
            EL_ETRUST)
            atomic_fetch_add(&many_wrong, 1);
    }
    return NULL;
}

static void test_verify_many_keys(void)
{
    el_error err;
    for (int i = 0; i < MANY_KEYS; i++) {
        char msg[16];
        snprintf(msg, sizeof msg, "key %d", i);
        CHECK_OK(el_crypto_key_generate(&many_keys[i], &err), &err);
        CHECK_OK(el_crypto_sign(many_keys[i], msg, strlen(msg), many_sigs[i], &many_lens[i],
                                &err),
                 &err);
    }
    pthread_t t[4];
    for (uintptr_t k = 0; k < 4; k++)
        CHECK(pthread_create(&t[k], NULL, verify_many, (void *)(k + 1)) == 0);
    for (int k = 0; k < 4; k++)
        pthread_join(t[k], NULL);
    CHECK_MSG(atomic_load(&many_wrong) == 0, "%d wrong verdicts", atomic_load(&many_wrong));
    for (int i = 0; i < MANY_KEYS; i++)
        el_crypto_key_destroy(many_keys[i]);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/el-x509-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    have_openssl = system("openssl version >/dev/null 2>&1") == 0 &&
                   system("xxd -v >/dev/null 2>&1") == 0;
    if (!have_openssl)
        fprintf(stderr, "openssl or xxd missing: interop checks skipped\n");
    test_keys();
    test_verify_malformed();
    test_tls_hooks();
    test_verify_many_keys();
    test_certs();
    test_kat_with_openssl();
    sh("rm -rf %s", dir);
    return el_test_done("test_x509");
}
