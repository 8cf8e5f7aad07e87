/* Attack tests at the sync level: one case per attack, each asserting its
 * stable refusal tag and that the trust state comes back unchanged. */
#include "check.h"
#include "fixture.h"

static fx_fleet fleet;
static el_manifest_root root;
static const char *BASE = "1111111111111111111111111111111111111111111111111111111111111111";
static const char *OTHER = "2222222222222222222222222222222222222222222222222222222222222222";
static const uint8_t PAYLOAD[] = "adapter delta bytes";

static const el_trust_device DEVICE = {.device_id = "dev-1", .group = "line-a",
                                       .base = "1111111111111111111111111111111111111111111111111111111111111111"};

static el_trust_state base_state(void)
{
    el_trust_state s = {.last_time = FX_T0};
    s.counters[EL_KIND_ADAPTER] = 5;
    return s;
}

typedef struct rel_opts {
    int64_t counter;
    int64_t expires;
    const char *target;
    const char *base;
    int rollout;
} rel_opts;

static rel_opts defaults(void)
{
    return (rel_opts){.counter = 6, .expires = FX_T0 + 30 * FX_DAY, .target = "line-a",
                      .base = BASE, .rollout = 100};
}

static json_t *release_json(rel_opts o)
{
    char c[32], e[32];
    fx_time(FX_T0, c);
    fx_time(o.expires, e);
    json_t *m = json_pack("{s:s, s:i, s:s, s:s, s:I, s:s, s:s, s:s, s:o}", "type",
                          "release", "version", 1, "created", c, "expires", e,
                          "counter", (json_int_t)o.counter, "kind", "adapter", "target",
                          o.target, "base", o.base, "payload",
                          fx_payload_json(PAYLOAD, sizeof PAYLOAD, "lora-delta-exact"));
    if (o.rollout < 100)
        json_object_set_new(m, "rollout", json_integer(o.rollout));
    return m;
}

/* Builds a release signed by KEYS and runs the decision. */
static int decide_keys(rel_opts o, el_crypto_key *const *keys, size_t n,
                       const el_trust_state *in, int64_t clock, el_trust_state *out,
                       el_error *err)
{
    json_t *m = release_json(o);
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, PAYLOAD, sizeof PAYLOAD, keys, n, &bytes, &len);
    json_decref(m);
    el_bundle b;
    el_manifest man;
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc == 0) {
        rc = el_trust_release(&root, &b, &DEVICE, clock, FX_PAYLOAD_MAX, in, &man, out, err);
        if (rc == 0)
            el_manifest_finish(&man);
    }
    el_free(bytes);
    return rc;
}

static int decide(rel_opts o, const el_trust_state *in, int64_t clock, el_trust_state *out,
                  el_error *err)
{
    return decide_keys(o, fleet.release_keys, 2, in, clock, out, err);
}

#define EXPECT_REFUSED(rc, err, want, in, out) \
    do { \
        CHECK_MSG((rc) == EL_ETRUST, "rc=%d (%s)", (rc), (err).msg); \
        CHECK_STR((err).tag, (want)); \
        CHECK(memcmp(&(in), &(out), sizeof(in)) == 0); \
    } while (0)

/* Runs a decision over raw BYTES (tampered variants). */
static int decide_bytes(const uint8_t *bytes, size_t len, const el_trust_state *in,
                        el_trust_state *out, el_error *err)
{
    el_bundle b;
    el_manifest man;
    *out = *in;
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc)
        return rc;
    rc = el_trust_release(&root, &b, &DEVICE, FX_T0, FX_PAYLOAD_MAX, in, &man, out, err);
    if (rc == 0)
        el_manifest_finish(&man);
    return rc;
}

static void test_accept(void)
{
    el_trust_state in = base_state(), out;
    el_error err;
    int rc = decide(defaults(), &in, FX_T0 + 60, &out, &err);
    CHECK_OK(rc, &err);
    CHECK(out.counters[EL_KIND_ADAPTER] == 6);
    CHECK(out.last_time == FX_T0 + 60);
    /* A device whose clock says 1970 keeps working: trusted time is the last
     * trusted time. */
    rc = decide(defaults(), &in, 0, &out, &err);
    CHECK_OK(rc, &err);
    CHECK(out.last_time == FX_T0);
}

static void test_tampered(void)
{
    json_t *m = release_json(defaults());
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, PAYLOAD, sizeof PAYLOAD, fleet.release_keys, 2, &bytes, &len);
    json_decref(m);
    el_trust_state in = base_state(), out;
    el_error err;
    bytes[len - 3] ^= 0x01;                 /* payload byte */
    int rc = decide_bytes(bytes, len, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_signature", in, out);
    bytes[len - 3] ^= 0x01;
    CHECK_OK(decide_bytes(bytes, len, &in, &out, &err), &err);
    bytes[8 + 20] ^= 0x01;                  /* header byte */
    rc = decide_bytes(bytes, len, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_signature", in, out);
    el_free(bytes);
}

static void test_signers(void)
{
    el_trust_state in = base_state(), out;
    el_error err;
    el_crypto_key *stranger[2] = {fx_key(), fx_key()};
    int rc = decide_keys(defaults(), stranger, 2, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "unknown_key", in, out);

    rc = decide_keys(defaults(), fleet.release_keys, 1, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "threshold_not_met", in, out);

    el_crypto_key *mixed[2] = {fleet.release_keys[0], stranger[0]};
    rc = decide_keys(defaults(), mixed, 2, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "threshold_not_met", in, out);

    el_crypto_key *twice[2] = {fleet.release_keys[0], fleet.release_keys[0]};
    rc = decide_keys(defaults(), twice, 2, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "duplicate_signer", in, out);

    /* Root keys are not release keys. */
    rc = decide_keys(defaults(), fleet.root_keys, 2, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "unknown_key", in, out);
    /* The library's sealer refuses a second signature by the same key. */
    uint8_t *bytes;
    size_t len;
    json_t *m = release_json(defaults());
    CHECK(el_manifest_seal(m, PAYLOAD, sizeof PAYLOAD,
                           (const el_crypto_key *const *)twice, 2, &bytes, &len,
                           &err) == EL_ETRUST);
    CHECK_STR(err.tag, "duplicate_signer");
    json_decref(m);
    el_crypto_key_destroy(stranger[0]);
    el_crypto_key_destroy(stranger[1]);
}

/* The streaming path: framing from a file descriptor, the decision without
 * the payload in memory, then the payload hashed as it streams. */
static void test_streamed(void)
{
    json_t *m = release_json(defaults());
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, PAYLOAD, sizeof PAYLOAD, fleet.release_keys, 2, &bytes, &len);
    json_decref(m);
    FILE *f = tmpfile();
    CHECK(f && fwrite(bytes, 1, len, f) == len && fflush(f) == 0);
    rewind(f);
    el_bundle b;
    el_manifest man;
    el_error err;
    el_trust_state in = base_state(), out;
    CHECK_OK(el_bundle_read_head_fd(fileno(f), &b, &err), &err);
    CHECK(b.payload == NULL);
    int rc = el_trust_release(&root, &b, &DEVICE, FX_T0, FX_PAYLOAD_MAX, &in, &man, &out, &err);
    CHECK_OK(rc, &err);
    if (rc == 0) {
        CHECK_OK(el_bundle_stream_payload(fileno(f), man.payload_sha256, man.payload_size,
                                          NULL, NULL, &err), &err);
        el_manifest_finish(&man);
    }
    el_bundle_finish(&b);
    fclose(f);
    el_free(bytes);
}

static void test_counters_and_time(void)
{
    el_trust_state in = base_state(), out;
    el_error err;
    rel_opts o = defaults();
    o.counter = 5;
    int rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "replay", in, out);
    o.counter = 4;
    rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "rollback", in, out);

    o = defaults();
    o.expires = FX_T0 - FX_DAY;
    rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", in, out);

    /* Freeze: the release is expired against the last trusted time although
     * the wall clock was set back to before its expiry. */
    o = defaults();
    o.expires = FX_T0 + 10 * FX_DAY;
    el_trust_state later = base_state();
    later.last_time = FX_T0 + 20 * FX_DAY;
    rc = decide(o, &later, FX_T0 + FX_DAY, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", later, out);
}

static void test_target_and_base(void)
{
    el_trust_state in = base_state(), out;
    el_error err;
    rel_opts o = defaults();
    o.target = "line-b";
    int rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "wrong_target", in, out);
    o.target = "dev-1";
    CHECK_OK(decide(o, &in, FX_T0, &out, &err), &err);
    o.target = "*";
    CHECK_OK(decide(o, &in, FX_T0, &out, &err), &err);

    /* Rollout: the bucket decides; just above and at the bucket. */
    int bucket = el_trust_bucket("dev-1");
    o.rollout = bucket + 1;
    if (o.rollout <= 100)
        CHECK_OK(decide(o, &in, FX_T0, &out, &err), &err);
    o.rollout = bucket;
    rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "wrong_target", in, out);

    o = defaults();
    o.base = OTHER;
    rc = decide(o, &in, FX_T0, &out, &err);
    EXPECT_REFUSED(rc, err, "wrong_base", in, out);
}

static void test_bucket_vector(void)
{
    /* SHA-256("dev-1") starts with bytes b0..b3; the bucket is their
     * big-endian value mod 100, computed here independently. */
    uint8_t h[32];
    el_sha256("dev-1", 5, h);
    unsigned long v = ((unsigned long)h[0] << 24) | ((unsigned long)h[1] << 16) |
                      ((unsigned long)h[2] << 8) | h[3];
    CHECK(el_trust_bucket("dev-1") == (int)(v % 100));
}

static void test_framing(void)
{
    json_t *m = release_json(defaults());
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, PAYLOAD, sizeof PAYLOAD, fleet.release_keys, 2, &bytes, &len);
    json_decref(m);
    el_trust_state in = base_state(), out;
    el_error err;

    /* Payload longer than the manifest says. */
    uint8_t *longer = el_malloc(len + 1);
    memcpy(longer, bytes, len);
    longer[len] = 'x';
    int rc = decide_bytes(longer, len + 1, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "oversize", in, out);
    el_free(longer);

    /* Truncated at every byte offset: inside the framing "truncated" from the
     * parser, inside the payload "truncated" from the payload check. */
    el_bundle b;
    CHECK_OK(el_bundle_parse(bytes, len, &b, &err), &err);
    int all = 1;
    for (size_t cut = 0; cut < len; cut++) {
        rc = decide_bytes(bytes, cut, &in, &out, &err);
        if (rc != EL_ETRUST || strcmp(err.tag, "truncated") != 0 ||
            memcmp(&in, &out, sizeof in) != 0) {
            fprintf(stderr, "cut at %zu of %zu (head %zu): rc=%d tag=%s\n", cut, len,
                    b.head_len, rc, err.tag);
            all = 0;
        }
    }
    CHECK(all);

    /* Another magic or format version is refused, never misread. */
    bytes[3] = '2';
    rc = el_bundle_parse(bytes, len, &b, &err);
    CHECK(rc == EL_EINPUT);
    el_free(bytes);
}

static void test_revoked_key(void)
{
    /* Root 2 revokes release key 0; a release signed by keys 0 and 1 is then
     * refused even though 0 verifies. */
    json_t *m = fx_root_manifest(&fleet, fleet.root_keys, 3, 2, 2, FX_T0 + 365 * FX_DAY);
    char id[65];
    el_error err;
    el_crypto_key_id(fleet.release_keys[0], id, &err);
    json_array_append_new(json_object_get(json_object_get(m, "root"), "revoked_keys"),
                          json_string(id));
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, NULL, 0, fleet.root_keys, 2, &bytes, &len);
    json_decref(m);
    el_bundle b;
    el_manifest_root next;
    el_trust_state in = base_state(), out;
    CHECK_OK(el_bundle_parse(bytes, len, &b, &err), &err);
    CHECK_OK(el_trust_root_update(&root, &b, FX_T0, &in, &next, &out, &err), &err);
    el_free(bytes);

    json_t *rel = release_json(defaults());
    fx_bundle(rel, PAYLOAD, sizeof PAYLOAD, fleet.release_keys, 2, &bytes, &len);
    json_decref(rel);
    el_manifest man;
    CHECK_OK(el_bundle_parse(bytes, len, &b, &err), &err);
    int rc = el_trust_release(&next, &b, &DEVICE, FX_T0, FX_PAYLOAD_MAX, &in, &man, &out,
                              &err);
    EXPECT_REFUSED(rc, err, "revoked", in, out);
    el_free(bytes);
    el_manifest_root_finish(&next);
}

static int root_update(json_t *m, el_crypto_key *const *signers, size_t n,
                       el_trust_state *in, el_trust_state *out, el_error *err)
{
    uint8_t *bytes;
    size_t len;
    fx_bundle(m, NULL, 0, signers, n, &bytes, &len);
    json_decref(m);
    el_bundle b;
    el_manifest_root next;
    int rc = el_bundle_parse(bytes, len, &b, err);
    if (rc == 0) {
        rc = el_trust_root_update(&root, &b, FX_T0, in, &next, out, err);
        if (rc == 0)
            el_manifest_root_finish(&next);
    }
    el_free(bytes);
    return rc;
}

static void test_root_rotation(void)
{
    el_crypto_key *fresh[3] = {fx_key(), fx_key(), fx_key()};
    el_crypto_key *both[4] = {fleet.root_keys[0], fleet.root_keys[1], fresh[0], fresh[1]};
    el_trust_state in = base_state(), out;
    el_error err;

    /* Good rotation: old threshold and new threshold, version 2. */
    int rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 2, FX_T0 + 365 * FX_DAY),
                         both, 4, &in, &out, &err);
    CHECK_OK(rc, &err);

    /* Signed only by the new keys. */
    rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 2, FX_T0 + 365 * FX_DAY),
                     fresh, 3, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_root_chain", in, out);

    /* Only one old key (below the old threshold). */
    el_crypto_key *one_old[3] = {fleet.root_keys[0], fresh[0], fresh[1]};
    rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 2, FX_T0 + 365 * FX_DAY),
                     one_old, 3, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_root_chain", in, out);

    /* Old keys only: the new root's own threshold is not met. */
    rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 2, FX_T0 + 365 * FX_DAY),
                     fleet.root_keys, 2, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "threshold_not_met", in, out);

    /* Skips a version. */
    rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 3, FX_T0 + 365 * FX_DAY),
                     both, 4, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_root_chain", in, out);

    /* The current version again, and an older one. */
    rc = root_update(fx_root_manifest(&fleet, fleet.root_keys, 3, 2, 1,
                                      FX_T0 + 365 * FX_DAY),
                     fleet.root_keys, 2, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "replay", in, out);

    /* An expired next root. */
    rc = root_update(fx_root_manifest(&fleet, fresh, 3, 2, 2, FX_T0 - FX_DAY), both, 4,
                     &in, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", in, out);
    for (int i = 0; i < 3; i++)
        el_crypto_key_destroy(fresh[i]);
}

static json_t *delta_json(const el_crypto_cert *cert)
{
    el_error err;
    json_t *m = el_manifest_device_delta_json(cert, "hub", BASE, NULL, OTHER, FX_T0,
                                              FX_T0 + 30 * FX_DAY, PAYLOAD, sizeof PAYLOAD,
                                              "lora-delta-q8", &err);
    CHECK_OK(m ? 0 : err.code, &err);
    return m;
}

static int delta_decide(const el_crypto_cert *cert, el_crypto_key *signer, int64_t clock,
                        const el_trust_state *in, el_trust_state *out, el_error *err)
{
    json_t *m = delta_json(cert);
    uint8_t *bytes;
    size_t len;
    int rc = el_manifest_seal(m, PAYLOAD, sizeof PAYLOAD,
                              (const el_crypto_key *const *)&signer, 1, &bytes, &len, err);
    json_decref(m);
    if (rc)
        return rc;
    el_bundle b;
    el_manifest man;
    el_crypto_cert_info info;
    rc = el_bundle_parse(bytes, len, &b, err);
    if (rc == 0) {
        rc = el_trust_device_delta(&root, fleet.ca, &b, clock, FX_PAYLOAD_MAX, in, &man,
                                   &info, out, err);
        if (rc == 0)
            el_manifest_finish(&man);
    }
    el_free(bytes);
    return rc;
}

static void test_device_delta(void)
{
    el_trust_state in = base_state(), out;
    el_error err;
    el_crypto_key *dev = fx_key();
    el_crypto_cert *good = fx_device_cert(fleet.ca, fleet.ca_key, dev, FX_T0 - FX_DAY,
                                          FX_T0 + 365 * FX_DAY);
    CHECK_OK(delta_decide(good, dev, FX_T0, &in, &out, &err), &err);

    /* A certificate from another CA. */
    el_crypto_key *rogue_key = fx_key();
    el_crypto_cert_params p = {.cn = "rogue CA", .role = "ca",
                               .not_before = FX_T0 - FX_DAY,
                               .not_after = FX_T0 + 365 * FX_DAY};
    uint8_t *der;
    size_t der_len;
    el_crypto_cert *rogue_ca;
    CHECK_OK(el_crypto_ca_create(rogue_key, &p, &der, &der_len, &err), &err);
    CHECK_OK(el_crypto_cert_parse(der, der_len, &rogue_ca, &err), &err);
    el_free(der);
    el_crypto_cert *foreign = fx_device_cert(rogue_ca, rogue_key, dev, FX_T0 - FX_DAY,
                                             FX_T0 + 365 * FX_DAY);
    int rc = delta_decide(foreign, dev, FX_T0, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "untrusted_signer", in, out);

    /* An expired certificate, also when the device clock is set back. */
    el_crypto_cert *old = fx_device_cert(fleet.ca, fleet.ca_key, dev, FX_T0 - 30 * FX_DAY,
                                         FX_T0 - FX_DAY);
    rc = delta_decide(old, dev, FX_T0, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", in, out);
    rc = delta_decide(old, dev, FX_T0 - 10 * FX_DAY, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", in, out);

    /* A revoked device certificate (root 2 lists its serial). */
    el_crypto_cert_info gi;
    CHECK_OK(el_crypto_cert_get_info(good, &gi, &err), &err);
    json_t *rm = fx_root_manifest(&fleet, fleet.root_keys, 3, 2, 2, FX_T0 + 365 * FX_DAY);
    json_array_append_new(json_object_get(json_object_get(rm, "root"), "revoked_serials"),
                          json_string(gi.serial));
    char *rh = el_json_dump_sorted(rm);
    json_decref(rm);
    el_manifest man;
    el_manifest_root revoking, saved = root;
    CHECK_OK(el_manifest_parse((const uint8_t *)rh, strlen(rh), 0, &man, &err), &err);
    CHECK_OK(el_manifest_root_parse(&man, &revoking, &err), &err);
    root = revoking;
    rc = delta_decide(good, dev, FX_T0, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "revoked", in, out);
    root = saved;
    el_manifest_root_finish(&revoking);
    el_manifest_finish(&man);
    free(rh);

    /* Signed by another key than the certificate's. */
    el_crypto_key *other = fx_key();
    rc = delta_decide(good, other, FX_T0, &in, &out, &err);
    EXPECT_REFUSED(rc, err, "untrusted_signer", in, out);

    el_crypto_key_destroy(other);
    el_crypto_cert_destroy(old);
    el_crypto_cert_destroy(foreign);
    el_crypto_cert_destroy(rogue_ca);
    el_crypto_key_destroy(rogue_key);
    el_crypto_cert_destroy(good);
    el_crypto_key_destroy(dev);
}

static void test_bootstrap(void)
{
    el_bundle b;
    el_error err;
    el_trust_state in = {0}, out;
    el_manifest_root r;
    CHECK_OK(el_bundle_parse(fleet.root_bytes, fleet.root_len, &b, &err), &err);
    int rc = el_trust_root_bootstrap(&b, "0000000000000000000000000000000000000000000000000000000000000000",
                                     FX_T0, &in, &r, &out, &err);
    EXPECT_REFUSED(rc, err, "bad_root_chain", in, out);
    rc = el_trust_root_bootstrap(&b, NULL, FX_T0 + 400 * FX_DAY, &in, &r, &out, &err);
    EXPECT_REFUSED(rc, err, "expired", in, out);
}

int main(void)
{
    fx_fleet_init(&fleet);
    el_bundle b;
    el_error err;
    el_trust_state s0 = {0}, s1;
    CHECK_OK(el_bundle_parse(fleet.root_bytes, fleet.root_len, &b, &err), &err);
    int rc = el_trust_root_bootstrap(&b, NULL, FX_T0, &s0, &root, &s1, &err);
    CHECK_OK(rc, &err);
    if (rc)
        return el_test_done("test_trust");
    CHECK(root.version == 1 && root.n_release_keys == 3 && root.release_threshold == 2);

    test_accept();
    test_tampered();
    test_signers();
    test_counters_and_time();
    test_target_and_base();
    test_bucket_vector();
    test_streamed();
    test_framing();
    test_revoked_key();
    test_root_rotation();
    test_device_delta();
    test_bootstrap();

    el_manifest_root_finish(&root);
    fx_fleet_finish(&fleet);
    return el_test_done("test_trust");
}
