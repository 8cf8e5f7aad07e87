/* ECDSA P-256 keys, signatures and X.509 over mbedTLS 2.28.
 *
 * Design notes:
 *  1. All mbedTLS calls of the project live here and in tls.c; the rest of
 *     sync/ sees only el_crypto_* types, so a 3.6 port touches two files.
 *  2. Signatures are deterministic (RFC 6979, MBEDTLS_ECDSA_DETERMINISTIC):
 *     the DRBG only blinds the computation, so a known-answer vector pins the
 *     bundle format byte for byte.
 *  3. Time never comes from the system clock: certificate validity is checked
 *     against a trusted time the caller passes. mbedTLS's own EXPIRED/FUTURE
 *     flags (computed from time(NULL)) are masked out and redone here.
 *  4. mbedTLS 2.28 parses a CSR without checking its signature; csr_verify
 *     hashes the CertificationRequestInfo and verifies it with the key inside,
 *     so a CSR whose subject was changed after signing is refused.
 *  5. 2.28 has no subjectAltName writer: san_der() builds the extension value
 *     (SEQUENCE OF [2] IA5String) by hand; names are short and restricted to
 *     [A-Za-z0-9.-], so the DER is simple and checked by openssl in tests.
 *  6. Verification runs in a shared, pre-warmed P-256 group (see
 *     shared_p256_init): measured on the hub it halves the cost of checking
 *     a status signature (BENCHMARKS.md, hub load).
 *  7. Signing runs in that group too (the nonce is RFC 6979, from the key
 *     and the hash, so the signature bytes are the same as
 *     mbedtls_ecdsa_write_signature's: the KAT pins them), with blinding
 *     from one process-wide DRBG: seeding a DRBG per signature cost 0.3 ms,
 *     a freshly loaded key's generator table 1.2 ms, the signature 0.6 ms.
 *  8. A verification key seen before has its point's comb table kept
 *     (kg_get, up to KEY_GROUPS keys, least recently used out): the
 *     verification equation is then computed here on mbedTLS's point
 *     arithmetic, and tested against mbedTLS's own verify, openssl's
 *     signatures and malformed ones (tests/crypto/test_x509.c).
 *  9. el_crypto_cert_verify remembers (leaf, CA) pairs that verified, by
 *     the SHA-256 of both DER encodings (bounded, least recently used out;
 *     base/digest_set.h): a device
 *     signs every delta with the same certificate. Validity at the trusted
 *     time is checked on every call; revocation is the caller's (trust.c).
 */
#include "crypto.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1.h>
#include <mbedtls/asn1write.h>
#include <mbedtls/base64.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecdsa.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/x509_csr.h>

#include "base/alloc.h"
#include "base/digest_set.h"
#include "base/fs.h"
#include "base/sha256.h"

#define KEY_PEM_MAX 1024
#define CERT_DER_MAX 4096
#define KEY_FILE_MAX 16384
#define CERT_FILE_MAX 65536

struct el_crypto_key {
    mbedtls_pk_context pk;
    int has_private;
};

struct el_crypto_cert {
    mbedtls_x509_crt crt;
};

typedef struct rng {
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
} rng;

static int rng_init(rng *r, el_error *err)
{
    static const char pers[] = "edgeloop-crypto";
    mbedtls_entropy_init(&r->entropy);
    mbedtls_ctr_drbg_init(&r->drbg);
    int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
                                   (const unsigned char *)pers, sizeof pers - 1);
    if (rc != 0) {
        mbedtls_ctr_drbg_free(&r->drbg);
        mbedtls_entropy_free(&r->entropy);
        return el_error_set(err, EL_EINTERNAL, "seeding the DRBG failed (-0x%04x)",
                            (unsigned)-rc);
    }
    return 0;
}

static void rng_free(rng *r)
{
    mbedtls_ctr_drbg_free(&r->drbg);
    mbedtls_entropy_free(&r->entropy);
}

int el_crypto_random(void *buf, size_t len, el_error *err)
{
    rng r;
    int rc = rng_init(&r, err);
    if (rc)
        return rc;
    uint8_t *p = buf;
    while (len > 0) {
        size_t n = len > MBEDTLS_CTR_DRBG_MAX_REQUEST ? MBEDTLS_CTR_DRBG_MAX_REQUEST : len;
        if (mbedtls_ctr_drbg_random(&r.drbg, p, n) != 0) {
            rng_free(&r);
            return el_error_set(err, EL_EINTERNAL, "DRBG failed");
        }
        p += n;
        len -= n;
    }
    rng_free(&r);
    return 0;
}

/* ---- keys ---------------------------------------------------------------- */

static el_crypto_key *key_new(void)
{
    el_crypto_key *key = el_calloc(1, sizeof *key);
    if (key)
        mbedtls_pk_init(&key->pk);
    return key;
}

void el_crypto_key_destroy(el_crypto_key *key)
{
    if (!key)
        return;
    mbedtls_pk_free(&key->pk);   /* zeroizes the private scalar */
    el_free(key);
}

static int is_p256(const mbedtls_pk_context *pk)
{
    return mbedtls_pk_get_type(pk) == MBEDTLS_PK_ECKEY &&
           mbedtls_pk_ec(*pk)->grp.id == MBEDTLS_ECP_DP_SECP256R1;
}

int el_crypto_key_generate(el_crypto_key **out, el_error *err)
{
    *out = NULL;
    el_crypto_key *key = key_new();
    if (!key)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    rng r;
    int rc = rng_init(&r, err);
    if (rc) {
        el_free(key);
        return rc;
    }
    if (mbedtls_pk_setup(&key->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) != 0 ||
        mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key->pk),
                            mbedtls_ctr_drbg_random, &r.drbg) != 0) {
        rng_free(&r);
        el_crypto_key_destroy(key);
        return el_error_set(err, EL_EINTERNAL, "P-256 key generation failed");
    }
    rng_free(&r);
    key->has_private = 1;
    *out = key;
    return 0;
}

static int looks_pem(const uint8_t *buf, size_t len)
{
    static const char begin[] = "-----BEGIN ";
    return len >= sizeof begin - 1 && memmem(buf, len, begin, sizeof begin - 1);
}

int el_crypto_key_parse(const uint8_t *buf, size_t len, int is_private,
                        el_crypto_key **out, el_error *err)
{
    *out = NULL;
    el_crypto_key *key = key_new();
    if (!key)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    /* mbedTLS wants PEM NUL-terminated with the NUL counted in the length. */
    uint8_t *copy = NULL;
    const uint8_t *in = buf;
    size_t in_len = len;
    if (looks_pem(buf, len)) {
        copy = el_malloc(len + 1);
        if (!copy) {
            el_free(key);
            return el_error_set(err, EL_ENOMEM, "out of memory");
        }
        memcpy(copy, buf, len);
        copy[len] = '\0';
        in = copy;
        in_len = len + 1;
    }
    int rc = is_private ? mbedtls_pk_parse_key(&key->pk, in, in_len, NULL, 0)
                        : mbedtls_pk_parse_public_key(&key->pk, in, in_len);
    if (copy) {
        el_wipe(copy, len + 1);
        el_free(copy);
    }
    if (rc != 0) {
        el_crypto_key_destroy(key);
        return el_error_set(err, EL_EINPUT, "not a %s key (-0x%04x)",
                            is_private ? "private" : "public", (unsigned)-rc);
    }
    if (!is_p256(&key->pk)) {
        el_crypto_key_destroy(key);
        return el_error_set(err, EL_EINPUT, "key is not ECDSA P-256");
    }
    key->has_private = is_private;
    *out = key;
    return 0;
}

int el_crypto_key_load(const char *path, int is_private, el_crypto_key **out,
                       el_error *err)
{
    *out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, KEY_FILE_MAX, &buf, &len, err);
    if (rc)
        return rc;
    rc = el_crypto_key_parse(buf, len, is_private, out, err);
    el_wipe(buf, len);
    el_free(buf);
    if (rc)
        return el_error_prefix(err, "%s", path);
    return 0;
}

int el_crypto_key_has_private(const el_crypto_key *key)
{
    return key && key->has_private;
}

int el_crypto_key_save_private(const el_crypto_key *key, const char *path,
                               el_error *err)
{
    if (!key->has_private)
        return el_error_set(err, EL_EUSAGE, "%s: key has no private half", path);
    unsigned char pem[KEY_PEM_MAX];
    if (mbedtls_pk_write_key_pem((mbedtls_pk_context *)&key->pk, pem, sizeof pem) != 0) {
        el_wipe(pem, sizeof pem);
        return el_error_set(err, EL_EINTERNAL, "%s: encoding the key failed", path);
    }
    int rc = el_fs_write_atomic(path, pem, strlen((char *)pem), 0600, err);
    el_wipe(pem, sizeof pem);
    return rc;
}

int el_crypto_key_save_public(const el_crypto_key *key, const char *path,
                              el_error *err)
{
    unsigned char pem[KEY_PEM_MAX];
    if (mbedtls_pk_write_pubkey_pem((mbedtls_pk_context *)&key->pk, pem, sizeof pem) != 0)
        return el_error_set(err, EL_EINTERNAL, "%s: encoding the key failed", path);
    return el_fs_write_atomic(path, pem, strlen((char *)pem), 0644, err);
}

/* mbedTLS writes DER at the end of the buffer; returns the length or < 0. */
static int spki_der(const mbedtls_pk_context *pk, unsigned char *buf, size_t size)
{
    return mbedtls_pk_write_pubkey_der((mbedtls_pk_context *)pk, buf, size);
}

int el_crypto_key_spki(const el_crypto_key *key, uint8_t **out, size_t *len,
                       el_error *err)
{
    unsigned char buf[256];
    int n = spki_der(&key->pk, buf, sizeof buf);
    if (n <= 0)
        return el_error_set(err, EL_EINTERNAL, "encoding the public key failed");
    *out = el_malloc((size_t)n);
    if (!*out)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    memcpy(*out, buf + sizeof buf - n, (size_t)n);
    *len = (size_t)n;
    return 0;
}

static int pk_key_id(const mbedtls_pk_context *pk, char out[EL_CRYPTO_KEY_ID_LEN + 1],
                     el_error *err)
{
    unsigned char buf[256];
    int n = spki_der(pk, buf, sizeof buf);
    if (n <= 0)
        return el_error_set(err, EL_EINTERNAL, "encoding the public key failed");
    el_sha256_hex(buf + sizeof buf - n, (size_t)n, out);
    return 0;
}

int el_crypto_key_id(const el_crypto_key *key, char out[EL_CRYPTO_KEY_ID_LEN + 1],
                     el_error *err)
{
    return pk_key_id(&key->pk, out, err);
}

/* ---- signatures ---------------------------------------------------------- */

/* Design note 6: one P-256 group for every verification. mbedTLS builds
 * the comb table of the generator lazily, in the group of each key, and a
 * key parsed for one verification (a peer certificate, a signer in a
 * bundle) pays that table every time: ~1.2 ms of a ~2.5 ms verification.
 * This group builds it once; after that ecp_mul only reads the group, so
 * threads share it. The signature is parsed as mbedtls_ecdsa_read_signature
 * does (SEQUENCE { INTEGER r, INTEGER s }, nothing after it). */
static mbedtls_ecp_group shared_p256;
static int shared_p256_ok;
static pthread_once_t shared_p256_once = PTHREAD_ONCE_INIT;

static void shared_p256_init(void)
{
    mbedtls_ecp_group_init(&shared_p256);
    if (mbedtls_ecp_group_load(&shared_p256, MBEDTLS_ECP_DP_SECP256R1) == 0 &&
        el_crypto_ecp_warm(&shared_p256) == 0)
        shared_p256_ok = 1;
}

int el_crypto_ecp_warm(void *group)
{
    mbedtls_ecp_group *grp = group;
    mbedtls_ecp_point r;
    mbedtls_mpi two;
    mbedtls_ecp_point_init(&r);
    mbedtls_mpi_init(&two);
    int rc = mbedtls_mpi_lset(&two, 2);
    if (!rc)
        rc = mbedtls_ecp_mul(grp, &r, &two, &grp->G, NULL, NULL);
    mbedtls_mpi_free(&two);
    mbedtls_ecp_point_free(&r);
    return rc ? EL_EINTERNAL : 0;
}

int el_crypto_ecp_adopt_table(void *group)
{
    mbedtls_ecp_group *g = group;
    pthread_once(&shared_p256_once, shared_p256_init);
    const mbedtls_ecp_group *c = &shared_p256;
    /* only a group loaded from mbedTLS's constants (h == 1: nothing but T
     * is ever allocated in it), of our curve, with no table yet */
    if (!shared_p256_ok || g->id != MBEDTLS_ECP_DP_SECP256R1 || g->h != 1 || g->T ||
        !c->T || !c->T_size)
        return 0;
    /* mbedTLS frees T with mbedtls_free: allocate it with mbedtls_calloc */
    mbedtls_ecp_point *t = mbedtls_calloc(c->T_size, sizeof *t);
    if (!t)
        return EL_ENOMEM;
    int rc = 0;
    for (size_t i = 0; i < c->T_size; i++)
        mbedtls_ecp_point_init(&t[i]);
    for (size_t i = 0; i < c->T_size && !rc; i++)
        rc = mbedtls_ecp_copy(&t[i], &c->T[i]);
    if (rc) {
        for (size_t i = 0; i < c->T_size; i++)
            mbedtls_ecp_point_free(&t[i]);
        mbedtls_free(t);
        return EL_ENOMEM;
    }
    g->T = t;
    g->T_size = c->T_size;
    return 0;
}

/* The blinding randomness of signatures (design note 7): one DRBG per
 * process, seeded on first use and again in a forked child. */
static pthread_mutex_t blind_lock = PTHREAD_MUTEX_INITIALIZER;
static rng blind_rng;
static pid_t blind_pid;
static int blind_ok;

static int blind_random(void *unused, unsigned char *out, size_t n)
{
    (void)unused;
    pthread_mutex_lock(&blind_lock);
    if (!blind_ok || blind_pid != getpid()) {
        if (blind_ok)
            rng_free(&blind_rng);
        blind_ok = rng_init(&blind_rng, NULL) == 0;
        blind_pid = getpid();
    }
    int rc = blind_ok ? mbedtls_ctr_drbg_random(&blind_rng.drbg, out, n)
                      : MBEDTLS_ERR_CTR_DRBG_ENTROPY_SOURCE_FAILED;
    pthread_mutex_unlock(&blind_lock);
    return rc;
}

/* DER SEQUENCE { INTEGER r, INTEGER s } into OUT (as
 * mbedtls_ecdsa_write_signature writes it). Returns 0 or an mbedTLS code. */
static int signature_der(const mbedtls_mpi *r, const mbedtls_mpi *s, unsigned char *out,
                         size_t cap, size_t *len)
{
    unsigned char *p = out + cap;
    int n, total = 0;
    if ((n = mbedtls_asn1_write_mpi(&p, out, s)) < 0)
        return n;
    total += n;
    if ((n = mbedtls_asn1_write_mpi(&p, out, r)) < 0)
        return n;
    total += n;
    if ((n = mbedtls_asn1_write_len(&p, out, (size_t)total)) < 0)
        return n;
    total += n;
    if ((n = mbedtls_asn1_write_tag(&p, out, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) <
        0)
        return n;
    total += n;
    memmove(out, p, (size_t)total);
    *len = (size_t)total;
    return 0;
}

int el_crypto_ecp_sign_hash(const void *keypair, int md_alg, const uint8_t *hash,
                            size_t hash_len, uint8_t *sig, size_t *sig_len,
                            int (*f_rng)(void *, unsigned char *, size_t), void *p_rng)
{
    const mbedtls_ecp_keypair *kp = keypair;
    pthread_once(&shared_p256_once, shared_p256_init);
    if (!shared_p256_ok || kp->grp.id != MBEDTLS_ECP_DP_SECP256R1)
        return -1;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int rc = mbedtls_ecdsa_sign_det_ext(&shared_p256, &r, &s, &kp->d, hash, hash_len,
                                        (mbedtls_md_type_t)md_alg, f_rng ? f_rng : blind_random,
                                        f_rng ? p_rng : NULL);
    if (!rc)
        rc = signature_der(&r, &s, sig, MBEDTLS_ECDSA_MAX_LEN, sig_len);
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    return rc;
}

int el_crypto_sign(const el_crypto_key *key, const void *msg, size_t len,
                   uint8_t sig[EL_CRYPTO_SIG_MAX], size_t *sig_len, el_error *err)
{
    *sig_len = 0;
    if (!key->has_private)
        return el_error_set(err, EL_EUSAGE, "signing needs a private key");
    uint8_t hash[EL_SHA256_LEN];
    el_sha256(msg, len, hash);
    unsigned char buf[MBEDTLS_ECDSA_MAX_LEN];
    size_t n = 0;
    const mbedtls_ecp_keypair *kp = mbedtls_pk_ec(key->pk);
    pthread_once(&shared_p256_once, shared_p256_init);
    int rc;
    if (shared_p256_ok && kp->grp.id == MBEDTLS_ECP_DP_SECP256R1) {
        mbedtls_mpi r, s;
        mbedtls_mpi_init(&r);
        mbedtls_mpi_init(&s);
        rc = mbedtls_ecdsa_sign_det_ext(&shared_p256, &r, &s, &kp->d, hash, sizeof hash,
                                        MBEDTLS_MD_SHA256, blind_random, NULL);
        if (!rc)
            rc = signature_der(&r, &s, buf, sizeof buf, &n);
        mbedtls_mpi_free(&r);
        mbedtls_mpi_free(&s);
    } else {
        rng r;
        if ((rc = rng_init(&r, err)) != 0)
            return rc;
        rc = mbedtls_ecdsa_write_signature(mbedtls_pk_ec(key->pk), MBEDTLS_MD_SHA256, hash,
                                           sizeof hash, buf, &n, mbedtls_ctr_drbg_random,
                                           &r.drbg);
        rng_free(&r);
    }
    if (rc != 0 || n > EL_CRYPTO_SIG_MAX)
        return el_error_set(err, EL_EINTERNAL, "ECDSA signing failed (-0x%04x)",
                            (unsigned)-rc);
    memcpy(sig, buf, n);
    *sig_len = n;
    return 0;
}

/* Design note 8: a table of the public point per key, for keys verified
 * again and again (a device's status heads, release keys, the CA). The
 * group of a key is P-256 with G replaced by the key's point Q, so mbedTLS's
 * fixed-point comb (built once, kept in the group) serves u2 * Q: ~0.7 ms
 * instead of ~1.2 ms on this machine. Entries are reference counted (an
 * evicted one lives until its last user is done) and published only once
 * their table is built, after which mbedTLS only reads them. */
#define KEY_GROUPS 256

typedef struct key_group {
    uint8_t id[EL_SHA256_LEN];  /* SHA-256 of the uncompressed point */
    mbedtls_ecp_group grp;
    int refs;                   /* users, + 1 while in the table */
    uint64_t used;
} key_group;

static pthread_mutex_t kg_lock = PTHREAD_MUTEX_INITIALIZER;
static key_group *kg_table[KEY_GROUPS];
static uint64_t kg_tick;

static void kg_release(key_group *kg)
{
    pthread_mutex_lock(&kg_lock);
    int last = --kg->refs == 0;
    pthread_mutex_unlock(&kg_lock);
    if (last) {
        mbedtls_ecp_group_free(&kg->grp);
        el_free(kg);
    }
}

/* A new group for Q with its table built, or NULL. The curve is copied
 * into memory of its own (a loaded group points at static constants). */
static key_group *kg_build(const mbedtls_ecp_point *q, const uint8_t id[EL_SHA256_LEN])
{
    key_group *kg = el_calloc(1, sizeof *kg);
    if (!kg)
        return NULL;
    memcpy(kg->id, id, EL_SHA256_LEN);
    mbedtls_ecp_group *g = &kg->grp;
    const mbedtls_ecp_group *c = &shared_p256;
    mbedtls_ecp_group_init(g);
    int rc = mbedtls_mpi_copy(&g->P, &c->P);
    if (!rc && c->A.p)
        rc = mbedtls_mpi_copy(&g->A, &c->A);
    if (!rc)
        rc = mbedtls_mpi_copy(&g->B, &c->B);
    if (!rc)
        rc = mbedtls_mpi_copy(&g->N, &c->N);
    if (!rc)
        rc = mbedtls_ecp_copy(&g->G, q);
    g->id = c->id;
    g->pbits = c->pbits;
    g->nbits = c->nbits;
    g->h = 0;                   /* ours to free */
    g->modp = c->modp;
    if (!rc)
        rc = el_crypto_ecp_warm(g);
    if (rc) {
        mbedtls_ecp_group_free(g);
        el_free(kg);
        return NULL;
    }
    return kg;
}

/* The table entry for Q, referenced for the caller (kg_release), or NULL
 * when none can be made (the caller verifies without it). */
static key_group *kg_get(const mbedtls_ecp_point *q)
{
    unsigned char pt[65];
    size_t ptlen;
    if (mbedtls_ecp_point_write_binary(&shared_p256, q, MBEDTLS_ECP_PF_UNCOMPRESSED, &ptlen, pt,
                                       sizeof pt))
        return NULL;
    uint8_t id[EL_SHA256_LEN];
    el_sha256(pt, ptlen, id);
    key_group *found = NULL;
    pthread_mutex_lock(&kg_lock);
    for (size_t i = 0; i < KEY_GROUPS && !found; i++)
        if (kg_table[i] && !memcmp(kg_table[i]->id, id, sizeof id))
            found = kg_table[i];
    if (found) {
        found->refs++;
        found->used = ++kg_tick;
    }
    pthread_mutex_unlock(&kg_lock);
    if (found)
        return found;
    key_group *kg = kg_build(q, id);
    if (!kg)
        return NULL;
    key_group *evicted = NULL;
    pthread_mutex_lock(&kg_lock);
    size_t slot = 0;
    for (size_t i = 0; i < KEY_GROUPS; i++) {
        if (kg_table[i] && !memcmp(kg_table[i]->id, id, sizeof id)) {
            found = kg_table[i];        /* another thread was faster */
            break;
        }
        if (!kg_table[i] || (kg_table[slot] && kg_table[i]->used < kg_table[slot]->used))
            slot = i;
    }
    if (found) {
        found->refs++;
        found->used = ++kg_tick;
    } else {
        if (kg_table[slot] && --kg_table[slot]->refs == 0)
            evicted = kg_table[slot];
        kg->refs = 2;
        kg->used = ++kg_tick;
        kg_table[slot] = kg;
    }
    pthread_mutex_unlock(&kg_lock);
    if (evicted) {
        mbedtls_ecp_group_free(&evicted->grp);
        el_free(evicted);
    }
    if (found) {
        mbedtls_ecp_group_free(&kg->grp);
        el_free(kg);
        return found;
    }
    return kg;
}

/* ECDSA verification of (R, S) over HASH with the key's table:
 * u1 = e/s, u2 = r/s mod n, and (u1 G + u2 Q).x mod n must equal r.
 * Returns 0 when it holds, non-zero otherwise. */
static int verify_with_table(const key_group *kg, const uint8_t hash[EL_SHA256_LEN],
                             const mbedtls_mpi *r, const mbedtls_mpi *s)
{
    mbedtls_ecp_group *g = &shared_p256;
    mbedtls_mpi e, w, u1, u2, one, v;
    mbedtls_ecp_point p1, p2, sum;
    mbedtls_mpi_init(&e);
    mbedtls_mpi_init(&w);
    mbedtls_mpi_init(&u1);
    mbedtls_mpi_init(&u2);
    mbedtls_mpi_init(&one);
    mbedtls_mpi_init(&v);
    mbedtls_ecp_point_init(&p1);
    mbedtls_ecp_point_init(&p2);
    mbedtls_ecp_point_init(&sum);
    int rc = -1;
    if (mbedtls_mpi_cmp_int(r, 1) < 0 || mbedtls_mpi_cmp_mpi(r, &g->N) >= 0 ||
        mbedtls_mpi_cmp_int(s, 1) < 0 || mbedtls_mpi_cmp_mpi(s, &g->N) >= 0)
        goto out;
    /* e: the 256-bit hash as an integer, reduced once as mbedTLS does */
    if (mbedtls_mpi_read_binary(&e, hash, EL_SHA256_LEN))
        goto out;
    if (mbedtls_mpi_cmp_mpi(&e, &g->N) >= 0 && mbedtls_mpi_sub_mpi(&e, &e, &g->N))
        goto out;
    if (mbedtls_mpi_inv_mod(&w, s, &g->N) || mbedtls_mpi_mul_mpi(&u1, &e, &w) ||
        mbedtls_mpi_mod_mpi(&u1, &u1, &g->N) || mbedtls_mpi_mul_mpi(&u2, r, &w) ||
        mbedtls_mpi_mod_mpi(&u2, &u2, &g->N) || mbedtls_mpi_lset(&one, 1))
        goto out;
    /* u1 = 0 would need e = 0 mod n (a SHA-256 output): refused, not
     * special-cased */
    if (mbedtls_mpi_cmp_int(&u1, 0) == 0 || mbedtls_mpi_cmp_int(&u2, 0) == 0)
        goto out;
    if (mbedtls_ecp_mul(g, &p1, &u1, &g->G, NULL, NULL) ||
        mbedtls_ecp_mul((mbedtls_ecp_group *)&kg->grp, &p2, &u2, &kg->grp.G, NULL, NULL) ||
        mbedtls_ecp_muladd(g, &sum, &one, &p1, &one, &p2) || mbedtls_ecp_is_zero(&sum))
        goto out;
    if (mbedtls_mpi_mod_mpi(&v, &sum.X, &g->N))
        goto out;
    rc = mbedtls_mpi_cmp_mpi(&v, r) == 0 ? 0 : -1;
out:
    mbedtls_mpi_free(&e);
    mbedtls_mpi_free(&w);
    mbedtls_mpi_free(&u1);
    mbedtls_mpi_free(&u2);
    mbedtls_mpi_free(&one);
    mbedtls_mpi_free(&v);
    mbedtls_ecp_point_free(&p1);
    mbedtls_ecp_point_free(&p2);
    mbedtls_ecp_point_free(&sum);
    return rc;
}

static int verify_shared(const mbedtls_ecp_keypair *kp, const uint8_t hash[EL_SHA256_LEN],
                         const uint8_t *sig, size_t sig_len)
{
    unsigned char *p = (unsigned char *)sig;
    const unsigned char *end = sig + sig_len;
    size_t len;
    mbedtls_mpi r, s;
    mbedtls_mpi_init(&r);
    mbedtls_mpi_init(&s);
    int rc = mbedtls_asn1_get_tag(&p, end, &len, MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE);
    if (!rc && p + len != end)
        rc = -1;
    if (!rc)
        rc = mbedtls_asn1_get_mpi(&p, end, &r);
    if (!rc)
        rc = mbedtls_asn1_get_mpi(&p, end, &s);
    if (!rc && p != end)
        rc = -1;
    if (!rc) {
        key_group *kg = kg_get(&kp->Q);
        if (kg) {
            rc = verify_with_table(kg, hash, &r, &s);
            kg_release(kg);
        } else {
            rc = mbedtls_ecdsa_verify(&shared_p256, hash, EL_SHA256_LEN, &kp->Q, &r, &s);
        }
    }
    mbedtls_mpi_free(&r);
    mbedtls_mpi_free(&s);
    return rc;
}

int el_crypto_ecp_verify_hash(const void *keypair, const uint8_t *hash, size_t hash_len,
                              const uint8_t *sig, size_t sig_len)
{
    const mbedtls_ecp_keypair *kp = keypair;
    pthread_once(&shared_p256_once, shared_p256_init);
    if (!shared_p256_ok || kp->grp.id != MBEDTLS_ECP_DP_SECP256R1 || hash_len < EL_SHA256_LEN)
        return -1;
    return verify_shared(kp, hash, sig, sig_len) == 0 ? 0 : 1;
}

int el_crypto_verify(const el_crypto_key *key, const void *msg, size_t len,
                     const uint8_t *sig, size_t sig_len, el_error *err)
{
    uint8_t hash[EL_SHA256_LEN];
    el_sha256(msg, len, hash);
    const mbedtls_ecp_keypair *kp = mbedtls_pk_ec(key->pk);
    pthread_once(&shared_p256_once, shared_p256_init);
    int rc;
    if (shared_p256_ok && kp->grp.id == MBEDTLS_ECP_DP_SECP256R1)
        rc = verify_shared(kp, hash, sig, sig_len);
    else
        rc = mbedtls_ecdsa_read_signature(mbedtls_pk_ec(key->pk), hash, sizeof hash, sig,
                                          sig_len);
    if (rc != 0)
        return el_error_set_tag(err, EL_ETRUST, "bad_signature",
                                "ECDSA signature does not verify");
    return 0;
}

/* ---- encodings ----------------------------------------------------------- */

int el_crypto_base64_encode(const uint8_t *in, size_t len, char **out, el_error *err)
{
    size_t need = 0;
    mbedtls_base64_encode(NULL, 0, &need, in, len);
    *out = el_malloc(need + 1);
    if (!*out)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    size_t olen = 0;
    if (mbedtls_base64_encode((unsigned char *)*out, need + 1, &olen, in, len) != 0) {
        el_free(*out);
        *out = NULL;
        return el_error_set(err, EL_EINTERNAL, "base64 encoding failed");
    }
    (*out)[olen] = '\0';
    return 0;
}

int el_crypto_base64_decode(const char *text, size_t len, uint8_t **out,
                            size_t *out_len, el_error *err)
{
    *out = NULL;
    *out_len = 0;
    size_t need = 0;
    int rc = mbedtls_base64_decode(NULL, 0, &need, (const unsigned char *)text, len);
    if (rc == MBEDTLS_ERR_BASE64_INVALID_CHARACTER)
        return el_error_set(err, EL_EINPUT, "invalid base64");
    *out = el_malloc(need ? need : 1);
    if (!*out)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    if (mbedtls_base64_decode(*out, need ? need : 1, out_len,
                              (const unsigned char *)text, len) != 0) {
        el_free(*out);
        *out = NULL;
        return el_error_set(err, EL_EINPUT, "invalid base64");
    }
    return 0;
}

int el_crypto_pem(const char *label, const uint8_t *der, size_t der_len, char **pem,
                  el_error *err)
{
    char head[64], foot[64];
    snprintf(head, sizeof head, "-----BEGIN %s-----\n", label);
    snprintf(foot, sizeof foot, "-----END %s-----\n", label);
    size_t size = der_len * 4 / 3 + der_len / 48 + 256;
    *pem = el_malloc(size);
    if (!*pem)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    size_t olen = 0;
    if (mbedtls_pem_write_buffer(head, foot, der, der_len, (unsigned char *)*pem,
                                 size, &olen) != 0) {
        el_free(*pem);
        *pem = NULL;
        return el_error_set(err, EL_EINTERNAL, "PEM encoding failed");
    }
    return 0;
}

/* ---- X.509 --------------------------------------------------------------- */

void el_crypto_cert_destroy(el_crypto_cert *cert)
{
    if (!cert)
        return;
    mbedtls_x509_crt_free(&cert->crt);
    el_free(cert);
}

int el_crypto_cert_parse(const uint8_t *buf, size_t len, el_crypto_cert **out,
                         el_error *err)
{
    *out = NULL;
    el_crypto_cert *cert = el_calloc(1, sizeof *cert);
    if (!cert)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    mbedtls_x509_crt_init(&cert->crt);
    int rc;
    if (looks_pem(buf, len)) {
        char *copy = el_malloc(len + 1);
        if (!copy) {
            el_free(cert);
            return el_error_set(err, EL_ENOMEM, "out of memory");
        }
        memcpy(copy, buf, len);
        copy[len] = '\0';
        rc = mbedtls_x509_crt_parse(&cert->crt, (unsigned char *)copy, len + 1);
        el_free(copy);
    } else {
        rc = mbedtls_x509_crt_parse_der(&cert->crt, buf, len);
    }
    if (rc != 0 || cert->crt.next != NULL) {
        el_crypto_cert_destroy(cert);
        return el_error_set(err, EL_EINPUT, "not one X.509 certificate (-0x%04x)",
                            (unsigned)(rc < 0 ? -rc : rc));
    }
    if (!is_p256(&cert->crt.pk)) {
        el_crypto_cert_destroy(cert);
        return el_error_set(err, EL_EINPUT, "certificate key is not ECDSA P-256");
    }
    *out = cert;
    return 0;
}

int el_crypto_cert_share(el_crypto_cert *cert)
{
    if (!mbedtls_pk_can_do(&cert->crt.pk, MBEDTLS_PK_ECKEY))
        return EL_EINTERNAL;
    return el_crypto_ecp_warm(&mbedtls_pk_ec(cert->crt.pk)->grp);
}

int el_crypto_cert_load(const char *path, el_crypto_cert **out, el_error *err)
{
    *out = NULL;
    uint8_t *buf;
    size_t len;
    int rc = el_fs_read_file(path, CERT_FILE_MAX, &buf, &len, err);
    if (rc)
        return rc;
    rc = el_crypto_cert_parse(buf, len, out, err);
    el_free(buf);
    return rc ? el_error_prefix(err, "%s", path) : 0;
}

void el_crypto_cert_der(const el_crypto_cert *cert, const uint8_t **der, size_t *len)
{
    *der = cert->crt.raw.p;
    *len = cert->crt.raw.len;
}

static int64_t x509_time_unix(const mbedtls_x509_time *t)
{
    struct tm tm = {0};
    tm.tm_year = t->year - 1900;
    tm.tm_mon = t->mon - 1;
    tm.tm_mday = t->day;
    tm.tm_hour = t->hour;
    tm.tm_min = t->min;
    tm.tm_sec = t->sec;
    return (int64_t)timegm(&tm);
}

static void copy_name_val(char *dst, const mbedtls_x509_buf *val)
{
    size_t n = val->len > EL_CRYPTO_NAME_MAX ? EL_CRYPTO_NAME_MAX : val->len;
    memcpy(dst, val->p, n);
    dst[n] = '\0';
}

int el_crypto_cert_get_info(const el_crypto_cert *cert, el_crypto_cert_info *info,
                            el_error *err)
{
    memset(info, 0, sizeof *info);
    const mbedtls_x509_crt *crt = &cert->crt;
    /* Serial: lowercase hex of the integer bytes without leading zeros. */
    const unsigned char *s = crt->serial.p;
    size_t sl = crt->serial.len;
    while (sl > 1 && *s == 0) {
        s++;
        sl--;
    }
    if (sl * 2 + 1 > sizeof info->serial)
        return el_error_set(err, EL_EINPUT, "certificate serial is too long");
    el_hex(s, sl, info->serial);
    for (const mbedtls_x509_name *n = &crt->subject; n; n = n->next) {
        if (!n->oid.p)
            continue;
        if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            copy_name_val(info->cn, &n->val);
        else if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_ORG_UNIT, &n->oid) == 0)
            copy_name_val(info->role, &n->val);
        else if (MBEDTLS_OID_CMP(MBEDTLS_OID_AT_ORGANIZATION, &n->oid) == 0)
            copy_name_val(info->group, &n->val);
    }
    for (const mbedtls_x509_sequence *q = &crt->subject_alt_names; q && q->buf.p;
         q = q->next) {
        if (q->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2) &&
            info->n_dns < EL_CRYPTO_DNS_MAX)
            copy_name_val(info->dns[info->n_dns++], &q->buf);
    }
    info->not_before = x509_time_unix(&crt->valid_from);
    info->not_after = x509_time_unix(&crt->valid_to);
    info->is_ca = crt->ca_istrue;
    el_sha256_hex(crt->raw.p, crt->raw.len, info->fingerprint);
    return pk_key_id(&crt->pk, info->key_id, err);
}

static int pk_copy_public(const mbedtls_pk_context *pk, el_crypto_key **out,
                          el_error *err)
{
    unsigned char buf[256];
    int n = spki_der(pk, buf, sizeof buf);
    if (n <= 0)
        return el_error_set(err, EL_EINTERNAL, "encoding the public key failed");
    return el_crypto_key_parse(buf + sizeof buf - n, (size_t)n, 0, out, err);
}

int el_crypto_cert_public_key(const el_crypto_cert *cert, el_crypto_key **out,
                              el_error *err)
{
    return pk_copy_public(&cert->crt.pk, out, err);
}

#define CERT_MEMO_SIZE 2048
static el_digest_set cert_memo;
static pthread_once_t cert_memo_once = PTHREAD_ONCE_INIT;

static void cert_memo_init(void)
{
    /* on failure the set stays empty: every call verifies */
    el_digest_set_init(&cert_memo, CERT_MEMO_SIZE);
}

int el_crypto_cert_verify(const el_crypto_cert *leaf, const el_crypto_cert *ca,
                          int64_t trusted_time, el_error *err)
{
    if (!ca->crt.ca_istrue)
        return el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                                "the trust anchor is not a CA certificate");
    /* design note 9: the verdict without time is a function of the two
     * certificates; a success is remembered */
    uint8_t memo_key[EL_SHA256_LEN];
    el_sha256_ctx h;
    el_sha256_init(&h);
    el_sha256_update(&h, ca->crt.raw.p, ca->crt.raw.len);
    el_sha256_update(&h, leaf->crt.raw.p, leaf->crt.raw.len);
    el_sha256_final(&h, memo_key);
    pthread_once(&cert_memo_once, cert_memo_init);
    if (!el_digest_set_has(&cert_memo, memo_key)) {
        uint32_t flags = 0;
        /* The chain is leaf + trusted CA; copy-free: verify wants non-const. */
        mbedtls_x509_crt_verify((mbedtls_x509_crt *)&leaf->crt, (mbedtls_x509_crt *)&ca->crt,
                                NULL, NULL, &flags, NULL, NULL);
        flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
        if (flags != 0)
            return el_error_set_tag(err, EL_ETRUST, "untrusted_signer",
                                    "certificate is not issued by the fleet CA "
                                    "(flags 0x%x)", (unsigned)flags);
        el_digest_set_add(&cert_memo, memo_key);
    }
    const mbedtls_x509_crt *certs[2] = {&leaf->crt, &ca->crt};
    for (int i = 0; i < 2; i++) {
        int64_t from = x509_time_unix(&certs[i]->valid_from);
        int64_t to = x509_time_unix(&certs[i]->valid_to);
        if (trusted_time < from || trusted_time > to)
            return el_error_set_tag(err, EL_ETRUST, "expired",
                                    "%s certificate is not valid at the trusted "
                                    "time %lld", i ? "CA" : "signer",
                                    (long long)trusted_time);
    }
    return 0;
}

/* Names go into DN strings unescaped, so only a safe alphabet is allowed. */
static int name_ok(const char *s, int allow_space)
{
    size_t n = strlen(s);
    if (n == 0 || n > EL_CRYPTO_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_' ||
                 (allow_space && c == ' ');
        if (!ok)
            return 0;
    }
    return 1;
}

static int subject_string(const el_crypto_cert_params *p, char *out, size_t size,
                          el_error *err)
{
    if (!name_ok(p->cn, 1) || !name_ok(p->role, 0) ||
        (p->group && !name_ok(p->group, 0)))
        return el_error_set(err, EL_EUSAGE, "names must be 1-%d characters of "
                            "[A-Za-z0-9._-]", EL_CRYPTO_NAME_MAX);
    if (p->group)
        snprintf(out, size, "CN=%s,OU=%s,O=%s", p->cn, p->role, p->group);
    else
        snprintf(out, size, "CN=%s,OU=%s", p->cn, p->role);
    return 0;
}

static void x509_time_str(int64_t t, char out[16])
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    snprintf(out, 16, "%04d%02d%02d%02d%02d%02d", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

static size_t der_len_bytes(size_t len, uint8_t *out)
{
    if (len < 0x80) {
        out[0] = (uint8_t)len;
        return 1;
    }
    if (len < 0x100) {
        out[0] = 0x81;
        out[1] = (uint8_t)len;
        return 2;
    }
    out[0] = 0x82;
    out[1] = (uint8_t)(len >> 8);
    out[2] = (uint8_t)len;
    return 3;
}

/* The subjectAltName extension value: SEQUENCE OF GeneralName, each a
 * dNSName ([2] IMPLICIT IA5String). Returns the length written into OUT. */
static size_t san_der(const char *const *dns, size_t n, uint8_t *out)
{
    size_t content = 0;
    for (size_t i = 0; i < n; i++)
        content += 2 + strlen(dns[i]);   /* names are < 128 bytes */
    size_t pos = 0;
    out[pos++] = MBEDTLS_ASN1_SEQUENCE | MBEDTLS_ASN1_CONSTRUCTED;
    pos += der_len_bytes(content, out + pos);
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(dns[i]);
        out[pos++] = MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2;
        out[pos++] = (uint8_t)l;
        memcpy(out + pos, dns[i], l);
        pos += l;
    }
    return pos;
}

/* Writes a certificate for SUBJECT signed by ISSUER_KEY. ISSUER_NAME is the
 * issuer DN string. */
static int write_cert(const el_crypto_key *subject, const el_crypto_key *issuer_key,
                      const char *issuer_name, const el_crypto_cert_params *p,
                      int is_ca, uint8_t **der, size_t *der_len, el_error *err)
{
    *der = NULL;
    *der_len = 0;
    char subj[256];
    int rc = subject_string(p, subj, sizeof subj, err);
    if (rc)
        return rc;
    if (p->n_dns > EL_CRYPTO_DNS_MAX)
        return el_error_set(err, EL_EUSAGE, "at most %d DNS names", EL_CRYPTO_DNS_MAX);
    for (size_t i = 0; i < p->n_dns; i++)
        if (!name_ok(p->dns[i], 0))
            return el_error_set(err, EL_EUSAGE, "bad DNS name \"%s\"", p->dns[i]);
    if (p->not_after <= p->not_before)
        return el_error_set(err, EL_EUSAGE, "validity ends before it starts");

    rng r;
    rc = rng_init(&r, err);
    if (rc)
        return rc;
    mbedtls_x509write_cert w;
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi serial;
    mbedtls_mpi_init(&serial);
    unsigned char *buf = el_malloc(CERT_DER_MAX);
    uint8_t serial_bytes[16];
    char from[16], to[16];
    x509_time_str(p->not_before, from);
    x509_time_str(p->not_after, to);
    rc = EL_EINTERNAL;
    if (!buf) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    if (mbedtls_ctr_drbg_random(&r.drbg, serial_bytes, sizeof serial_bytes) != 0)
        goto fail_msg;
    serial_bytes[0] = (uint8_t)((serial_bytes[0] & 0x7f) | 0x10);   /* positive, 32 hex digits */
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, (mbedtls_pk_context *)&subject->pk);
    mbedtls_x509write_crt_set_issuer_key(&w, (mbedtls_pk_context *)&issuer_key->pk);
    if (mbedtls_mpi_read_binary(&serial, serial_bytes, sizeof serial_bytes) != 0 ||
        mbedtls_x509write_crt_set_serial(&w, &serial) != 0 ||
        mbedtls_x509write_crt_set_validity(&w, from, to) != 0 ||
        mbedtls_x509write_crt_set_subject_name(&w, subj) != 0 ||
        mbedtls_x509write_crt_set_issuer_name(&w, issuer_name) != 0 ||
        mbedtls_x509write_crt_set_basic_constraints(&w, is_ca, is_ca ? 0 : -1) != 0 ||
        mbedtls_x509write_crt_set_subject_key_identifier(&w) != 0 ||
        mbedtls_x509write_crt_set_authority_key_identifier(&w) != 0)
        goto fail_msg;
    unsigned int usage = is_ca ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                               : MBEDTLS_X509_KU_DIGITAL_SIGNATURE;
    if (mbedtls_x509write_crt_set_key_usage(&w, usage) != 0)
        goto fail_msg;
    if (p->n_dns > 0) {
        uint8_t san[4 + EL_CRYPTO_DNS_MAX * (EL_CRYPTO_NAME_MAX + 2)];
        size_t san_len = san_der(p->dns, p->n_dns, san);
        if (mbedtls_x509write_crt_set_extension(
                &w, MBEDTLS_OID_SUBJECT_ALT_NAME,
                MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, san, san_len) != 0)
            goto fail_msg;
    }
    int n = mbedtls_x509write_crt_der(&w, buf, CERT_DER_MAX, mbedtls_ctr_drbg_random,
                                      &r.drbg);
    if (n <= 0)
        goto fail_msg;
    *der = el_malloc((size_t)n);
    if (!*der) {
        rc = el_error_set(err, EL_ENOMEM, "out of memory");
        goto fail;
    }
    memcpy(*der, buf + CERT_DER_MAX - n, (size_t)n);
    *der_len = (size_t)n;
    rc = 0;
    goto fail;
fail_msg:
    rc = el_error_set(err, EL_EINTERNAL, "writing the certificate failed");
fail:
    el_free(buf);
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    rng_free(&r);
    return rc;
}

int el_crypto_ca_create(const el_crypto_key *key, const el_crypto_cert_params *params,
                        uint8_t **der, size_t *der_len, el_error *err)
{
    char subj[256];
    el_crypto_cert_params p = *params;
    p.role = "ca";
    p.group = NULL;
    int rc = subject_string(&p, subj, sizeof subj, err);
    if (rc)
        return rc;
    return write_cert(key, key, subj, &p, 1, der, der_len, err);
}

int el_crypto_cert_issue(const el_crypto_cert *ca, const el_crypto_key *ca_key,
                         const el_crypto_key *subject,
                         const el_crypto_cert_params *params, uint8_t **der,
                         size_t *der_len, el_error *err)
{
    *der = NULL;
    *der_len = 0;
    char ca_id[EL_CRYPTO_KEY_ID_LEN + 1], key_id[EL_CRYPTO_KEY_ID_LEN + 1];
    int rc = pk_key_id(&ca->crt.pk, ca_id, err);
    if (rc || (rc = pk_key_id(&ca_key->pk, key_id, err)))
        return rc;
    if (strcmp(ca_id, key_id) != 0)
        return el_error_set(err, EL_EUSAGE, "the CA key does not match the CA certificate");
    /* Our DN strings never contain ',' or '=' in values, so mbedTLS's printed
     * form ("CN=x, OU=ca") turns back into the same DN once ", " -> ",". */
    char printed[256], issuer[256];
    if (mbedtls_x509_dn_gets(printed, sizeof printed, &ca->crt.subject) < 0)
        return el_error_set(err, EL_EINPUT, "cannot read the CA subject");
    size_t j = 0;
    for (size_t i = 0; printed[i] && j + 1 < sizeof issuer; i++) {
        if (printed[i] == ' ' && i > 0 && printed[i - 1] == ',')
            continue;
        issuer[j++] = printed[i];
    }
    issuer[j] = '\0';
    return write_cert(subject, ca_key, issuer, params, 0, der, der_len, err);
}

int el_crypto_csr_create(const el_crypto_key *key, const char *cn, uint8_t **der,
                         size_t *der_len, el_error *err)
{
    *der = NULL;
    *der_len = 0;
    if (!key->has_private)
        return el_error_set(err, EL_EUSAGE, "a CSR needs the private key");
    if (!name_ok(cn, 1))
        return el_error_set(err, EL_EUSAGE, "bad common name \"%s\"", cn);
    char subj[128];
    snprintf(subj, sizeof subj, "CN=%s", cn);
    rng r;
    int rc = rng_init(&r, err);
    if (rc)
        return rc;
    mbedtls_x509write_csr w;
    mbedtls_x509write_csr_init(&w);
    mbedtls_x509write_csr_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_csr_set_key(&w, (mbedtls_pk_context *)&key->pk);
    unsigned char buf[1024];
    int n = -1;
    if (mbedtls_x509write_csr_set_subject_name(&w, subj) == 0)
        n = mbedtls_x509write_csr_der(&w, buf, sizeof buf, mbedtls_ctr_drbg_random,
                                      &r.drbg);
    mbedtls_x509write_csr_free(&w);
    rng_free(&r);
    if (n <= 0)
        return el_error_set(err, EL_EINTERNAL, "writing the CSR failed");
    *der = el_malloc((size_t)n);
    if (!*der)
        return el_error_set(err, EL_ENOMEM, "out of memory");
    memcpy(*der, buf + sizeof buf - n, (size_t)n);
    *der_len = (size_t)n;
    return 0;
}

int el_crypto_csr_verify(const uint8_t *buf, size_t len, el_crypto_key **pub,
                         char *cn, el_error *err)
{
    *pub = NULL;
    cn[0] = '\0';
    mbedtls_x509_csr csr;
    mbedtls_x509_csr_init(&csr);
    int rc;
    if (looks_pem(buf, len)) {
        char *copy = el_malloc(len + 1);
        if (!copy)
            return el_error_set(err, EL_ENOMEM, "out of memory");
        memcpy(copy, buf, len);
        copy[len] = '\0';
        rc = mbedtls_x509_csr_parse(&csr, (unsigned char *)copy, len + 1);
        el_free(copy);
    } else {
        rc = mbedtls_x509_csr_parse_der(&csr, buf, len);
    }
    if (rc != 0) {
        rc = el_error_set(err, EL_EINPUT, "not a PKCS#10 CSR (-0x%04x)",
                          (unsigned)(rc < 0 ? -rc : rc));
        goto out;
    }
    if (!is_p256(&csr.pk)) {
        rc = el_error_set(err, EL_EINPUT, "CSR key is not ECDSA P-256");
        goto out;
    }
    if (csr.sig_md != MBEDTLS_MD_SHA256 || csr.sig_pk != MBEDTLS_PK_ECDSA) {
        rc = el_error_set(err, EL_EINPUT, "CSR is not signed with ECDSA-SHA256");
        goto out;
    }
    uint8_t hash[EL_SHA256_LEN];
    el_sha256(csr.cri.p, csr.cri.len, hash);
    if (mbedtls_pk_verify(&csr.pk, MBEDTLS_MD_SHA256, hash, sizeof hash, csr.sig.p,
                          csr.sig.len) != 0) {
        rc = el_error_set_tag(err, EL_ETRUST, "bad_signature",
                              "the CSR's signature does not match its content");
        goto out;
    }
    for (const mbedtls_x509_name *n = &csr.subject; n; n = n->next)
        if (n->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &n->oid) == 0)
            copy_name_val(cn, &n->val);
    rc = pk_copy_public(&csr.pk, pub, err);
out:
    mbedtls_x509_csr_free(&csr);
    return rc;
}
