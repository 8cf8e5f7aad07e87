/* agent/store: the registry, blob store, versions state machine, sample
 * lists, probation, boot counting, retention, audit chain and migrations,
 * through the API the CLI and the trainer use. Every transition and every
 * refusal of DESIGN.md "Versions" is exercised here; the kill -9 tests are
 * in tests/e2e/test_crash_*.sh. */
#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/error.h"
#include "base/fs.h"
#include "base/sha256.h"
#include "check.h"
#include "store/store.h"
#include "train/gate.h"

static char root[256];
static int n_states;
static const int64_t T0 = 1800000000;   /* a fixed clock: 2027-01-15 */

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fwrite(data, 1, len, f);
    fclose(f);
}

/* A base model directory (content only needs to be stable). */
static void make_model(char *dir, size_t n)
{
    snprintf(dir, n, "%s/model", root);
    mkdir(dir, 0755);
    write_file(dir, "config.json", "{\"vocab_size\": 259}", 19);
    write_file(dir, "model.safetensors", "not-really-weights", 18);
}

/* A hand-made PEFT directory: a valid safetensors header plus BYTES of
 * payload filled from TAG, so each tag gives a distinct adapter. */
static void make_adapter(char *dir, size_t n, int tag, size_t bytes)
{
    snprintf(dir, n, "%s/adapter%d", root, tag);
    mkdir(dir, 0755);
    char cfg[128];
    int len = snprintf(cfg, sizeof cfg, "{\"peft_type\": \"LORA\", \"r\": %d}", tag);
    write_file(dir, "adapter_config.json", cfg, (size_t)len);
    const char *header = "{\"__metadata__\": {\"format\": \"pt\"}}";
    size_t hl = strlen(header);
    uint8_t *buf = malloc(8 + hl + bytes);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i < bytes; i++)
        buf[8 + hl + i] = (uint8_t)(tag * 31 + i * 7);
    write_file(dir, "adapter_model.safetensors", buf, 8 + hl + bytes);
    free(buf);
}

/* A fresh state directory with the base registered and CONF as its
 * edgeloop.conf (NULL: the default file). */
static el_store *fresh(char *dir, size_t n, const char *conf)
{
    snprintf(dir, n, "%s/state%d", root, ++n_states);
    el_error err;
    el_store *s = NULL;
    el_store_open_opts o = {.create = 1, .now = T0};
    if (conf) {
        mkdir(dir, 0755);
        write_file(dir, "edgeloop.conf", conf, strlen(conf));
    }
    int rc = el_store_open(dir, &o, &s, &err);
    CHECK_OK(rc, &err);
    if (rc)
        exit(1);
    char model[256];
    make_model(model, sizeof model);
    int64_t id;
    rc = el_store_base_register(s, model, &id, &err);
    CHECK_OK(rc, &err);
    return s;
}

static el_store *reopen(el_store *s, const char *dir, int64_t now)
{
    el_store_close(s);
    el_error err;
    el_store_open_opts o = {.now = now};
    el_store *t = NULL;
    int rc = el_store_open(dir, &o, &t, &err);
    CHECK_OK(rc, &err);
    if (rc)
        exit(1);
    return t;
}

static void state_of(el_store *s, int64_t id, char *out)
{
    el_store_version v;
    el_error err;
    int rc = el_store_version_get(s, id, &v, &err);
    CHECK_OK(rc, &err);
    snprintf(out, 16, "%s", rc ? "?" : v.state);
    el_store_version_finish(&v);
}

#define CHECK_STATE(s, id, want) \
    do { \
        char st_[16]; \
        state_of((s), (id), st_); \
        CHECK_STR(st_, (want)); \
    } while (0)

static int64_t active_of(el_store *s)
{
    int64_t id = -1;
    el_store_active(s, &id, NULL);
    return id;
}

/* Registers an adapter (tag) as a local candidate and judges it with the
 * real gate on crafted losses. */
static int64_t candidate(el_store *s, int tag, int64_t parent, double holdout_new)
{
    char dir[256];
    make_adapter(dir, sizeof dir, tag, 256);
    el_store_candidate c = {
        .parent_id = parent, .origin = "local",
        .recipe_json = "{\"lr\": 0.001, \"rank\": 8, \"steps\": 200}",
        .seed = 42, .backend = "cpu",
        .plasticity_json = "{\"update_norm\": 0.5, \"effective_rank\": 6.5}",
    };
    el_error err;
    int64_t id = 0;
    int rc = el_store_candidate_create(s, &c, dir, &id, &err);
    CHECK_OK(rc, &err);
    const el_store_config *cfg = el_store_get_config(s);
    el_gate_thresholds t = {cfg->gate.min_gain, cfg->gate.max_forget};
    el_gate_input in = {2.0, holdout_new, 1.0, 1.005, NULL, 0};
    el_gate_result g;
    el_gate_decide(&t, &in, &g);
    char metrics[256], figures[128];
    snprintf(metrics, sizeof metrics,
             "{\"holdout_before\": 2.0, \"holdout_after\": %g, "
             "\"anchor_before\": 1.0, \"anchor_after\": 1.005}", holdout_new);
    snprintf(figures, sizeof figures, "{\"gain\": %g, \"forget\": %g}", g.gain, g.forget);
    rc = el_store_candidate_judge(s, id, g.pass, g.reason, metrics, figures, &err);
    CHECK_OK(rc, &err);
    return id;
}

static void feedback_n(el_store *s, int n, int accept)
{
    for (int i = 0; i < n; i++) {
        el_error err;
        int rc = el_store_feedback(s, 0, accept, NULL, &err);
        CHECK_OK(rc, &err);
    }
}

static void test_transitions(void)
{
    char dir[256];
    el_store *s = fresh(dir, sizeof dir,
                        "[probation]\nevents = 5\nmin_events = 3\nwindow = 4\n");
    el_error err;

    /* candidate -> rejected, and a rejected version cannot be activated */
    int64_t bad = candidate(s, 1, 0, 1.99);
    CHECK_STATE(s, bad, "rejected");
    CHECK(el_store_activate(s, bad, &err) == EL_EPOLICY);
    /* judging twice is refused */
    CHECK(el_store_candidate_judge(s, bad, 1, "ok", NULL, NULL, &err) == EL_EPOLICY);

    /* a local candidate without a gate verdict cannot be activated */
    char adir[256];
    make_adapter(adir, sizeof adir, 2, 64);
    el_store_candidate raw = {.origin = "local"};
    int64_t unjudged;
    CHECK_OK(el_store_candidate_create(s, &raw, adir, &unjudged, &err), &err);
    CHECK(el_store_activate(s, unjudged, &err) == EL_EPOLICY);
    CHECK(strstr(err.msg, "gate") != NULL);

    /* candidate -> probation; double activation refused */
    int64_t v1 = candidate(s, 3, 0, 1.5);
    CHECK_STATE(s, v1, "candidate");
    CHECK_OK(el_store_activate(s, v1, &err), &err);
    CHECK_STATE(s, v1, "probation");
    CHECK(active_of(s) == v1);
    CHECK(el_store_activate(s, v1, &err) == EL_EPOLICY);
    /* nothing else while v1 is on probation */
    int64_t v2 = candidate(s, 4, v1, 1.4);
    CHECK(el_store_activate(s, v2, &err) == EL_EPOLICY);

    /* probation -> good after [probation] events = 5 accepts */
    const char *outcome = NULL;
    feedback_n(s, 4, 1);
    CHECK_STATE(s, v1, "probation");
    CHECK_OK(el_store_feedback(s, 0, 1, &outcome, &err), &err);
    CHECK_STR(outcome, "good");
    CHECK(active_of(s) == v1);

    /* v2 replaces v1; v1 stays good; operator rollback: v2 -> rolled_back,
     * v1 active again */
    CHECK_OK(el_store_activate(s, v2, &err), &err);
    CHECK_STATE(s, v2, "probation");
    CHECK_STATE(s, v1, "good");
    CHECK_OK(el_store_rollback(s, 0, "operator", &err), &err);
    CHECK_STATE(s, v2, "rolled_back");
    CHECK(active_of(s) == v1);
    CHECK_STATE(s, v1, "good");
    /* a rolled-back version can be neither activated nor rolled back to */
    CHECK(el_store_activate(s, v2, &err) == EL_EPOLICY);
    CHECK(el_store_rollback(s, v2, "operator", &err) == EL_EPOLICY);
    /* rollback with no other good version is refused */
    CHECK(el_store_rollback(s, 0, "operator", &err) == EL_EPOLICY);
    CHECK(strstr(err.msg, "no good version") != NULL);

    /* automatic rollback on the reject rate (window 4, min 3, max 0.3) */
    int64_t v3 = candidate(s, 5, v1, 1.3);
    CHECK_OK(el_store_activate(s, v3, &err), &err);
    feedback_n(s, 1, 1);
    feedback_n(s, 1, 0);
    CHECK_STATE(s, v3, "probation");   /* 2 events < min_events */
    CHECK_OK(el_store_feedback(s, 0, 0, &outcome, &err), &err);
    CHECK_STR(outcome, "rolled_back");  /* 2/3 rejects > 0.3 */
    CHECK(active_of(s) == v1);
    el_store_version v;
    CHECK_OK(el_store_version_get(s, v3, &v, &err), &err);
    CHECK(v.reason && !strcmp(v.reason, "reject_rate"));
    CHECK(v.parent_id == v1);
    CHECK(strstr(v.recipe, "\"rank\":8") != NULL);
    CHECK(strstr(v.metrics, "holdout_after") != NULL);
    CHECK(strstr(v.gate, "\"pass\":true") != NULL);
    el_store_version_finish(&v);

    /* good -> good (activated again) with rollback --to after another good */
    int64_t v4 = candidate(s, 6, v1, 1.2);
    CHECK_OK(el_store_activate(s, v4, &err), &err);
    feedback_n(s, 5, 1);
    CHECK_STATE(s, v4, "good");
    CHECK_OK(el_store_rollback(s, v1, "operator", &err), &err);
    CHECK(active_of(s) == v1);
    CHECK_STATE(s, v4, "good");
    CHECK_OK(el_store_activate(s, v4, &err), &err);   /* re-activate a good one */
    CHECK_STATE(s, v4, "good");

    /* pin: no activation or rollback while pinned; pin only the active one */
    CHECK(el_store_pin(s, v1, &err) == EL_EPOLICY);
    CHECK_OK(el_store_pin(s, v4, &err), &err);
    CHECK(el_store_rollback(s, v1, "operator", &err) == EL_EPOLICY);
    CHECK(el_store_activate(s, v1, &err) == EL_EPOLICY);
    CHECK_OK(el_store_pin(s, 0, &err), &err);
    CHECK(el_store_pin(s, 0, &err) == EL_EPOLICY);

    /* back to the base alone, then nothing left to roll back */
    CHECK_OK(el_store_rollback(s, -1, "operator", &err), &err);
    CHECK(active_of(s) == 0);
    CHECK_STATE(s, v4, "good");
    CHECK(el_store_rollback(s, -1, "operator", &err) == EL_EPOLICY);
    /* feedback needs a version */
    CHECK(el_store_feedback(s, 0, 1, NULL, &err) == EL_EPOLICY);

    el_store_fsck r;
    CHECK_OK(el_store_check(s, &r, &err), &err);
    CHECK(r.audit_rows > 20);
    el_store_close(s);
}

static void test_probation_time_health(void)
{
    char dir[256];
    el_store *s = fresh(dir, sizeof dir, "[probation]\nhours = 2\n");
    el_error err;
    int64_t v1 = candidate(s, 11, 0, 1.5);
    CHECK_OK(el_store_activate(s, v1, &err), &err);
    /* one hour later: still on probation; three hours: good, at open */
    s = reopen(s, dir, T0 + 3600);
    CHECK_STATE(s, v1, "probation");
    s = reopen(s, dir, T0 + 3 * 3600);
    CHECK_STATE(s, v1, "good");

    /* the health check: 4% worse passes (health_ok), 10% worse rolls back to
     * the last good version */
    int64_t v2 = candidate(s, 12, v1, 1.4);
    CHECK_OK(el_store_activate(s, v2, &err), &err);
    const char *outcome;
    CHECK_OK(el_store_health_report(s, 1.04, 1.0, &outcome, &err), &err);
    CHECK_STR(outcome, "probation");
    CHECK_OK(el_store_health_report(s, 1.10, 1.0, &outcome, &err), &err);
    CHECK_STR(outcome, "rolled_back");
    CHECK(active_of(s) == v1);
    CHECK(el_store_health_report(s, 1.0, 1.0, &outcome, &err) == EL_EPOLICY);

    /* a set-back clock does not undo expiry or break anything */
    int64_t v3 = candidate(s, 13, v1, 1.3);
    CHECK_OK(el_store_activate(s, v3, &err), &err);
    CHECK_OK(el_store_tick(s, T0 - 86400, &err), &err);
    CHECK_STATE(s, v3, "probation");
    CHECK_OK(el_store_tick(s, T0 + 3 * 3600 + 2 * 3600 + 1, &err), &err);
    CHECK_STATE(s, v3, "good");
    el_store_close(s);
}

static void test_boot_counting(void)
{
    char dir[256];
    el_store *s = fresh(dir, sizeof dir, "[probation]\nmax_crashes = 2\n");
    el_error err;
    int64_t v1 = candidate(s, 21, 0, 1.5);
    CHECK_OK(el_store_activate(s, v1, &err), &err);
    el_store_close(s);
    /* each child opens the state and dies without closing it: a crash */
    for (int i = 0; i < 3; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            el_store *c = NULL;
            el_store_open_opts o = {.now = T0};
            if (el_store_open(dir, &o, &c, NULL) != 0)
                _exit(3);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    /* the third crash is counted at this open: 3 > max_crashes 2 */
    el_store_open_opts o = {.now = T0};
    CHECK_OK(el_store_open(dir, &o, &s, &err), &err);
    el_store_version v;
    CHECK_OK(el_store_version_get(s, v1, &v, &err), &err);
    CHECK_STR(v.state, "rolled_back");
    CHECK(v.reason && !strcmp(v.reason, "boot_crashes"));
    CHECK(v.crashes == 3);
    el_store_version_finish(&v);
    CHECK(active_of(s) == 0);   /* no good version: the base alone */
    /* clean closes are not crashes */
    int64_t v2 = candidate(s, 22, 0, 1.4);
    CHECK_OK(el_store_activate(s, v2, &err), &err);
    for (int i = 0; i < 4; i++)
        s = reopen(s, dir, T0);
    CHECK_STATE(s, v2, "probation");
    el_store_close(s);
}

static int in_list(el_store *s, enum el_store_list which, int64_t id)
{
    el_store_sample *v;
    size_t n;
    if (el_store_samples(s, which, &v, &n, NULL))
        return -1;
    int found = 0;
    for (size_t i = 0; i < n; i++)
        found += v[i].id == id;
    el_store_sample_list_free(v, n);
    return found;
}

static void test_samples(void)
{
    char dir[256], file[512];
    el_store *s = fresh(dir, sizeof dir, NULL);
    el_error err;
    el_store_ingest_stats st;
    /* 200 train lines, some duplicated, both formats */
    snprintf(file, sizeof file, "%s/train.jsonl", root);
    FILE *f = fopen(file, "w");
    for (int i = 0; i < 200; i++) {
        if (i % 2)
            fprintf(f, "{\"text\": \"sample %d\"}\n", i);
        else
            fprintf(f, "{\"prompt\": \"q%d\", \"completion\": \"a%d\"}\r\n", i, i);
    }
    fprintf(f, "\n{\"text\": \"sample 1\"}\n");
    fclose(f);
    CHECK_OK(el_store_ingest(s, file, EL_SPLIT_TRAIN, &st, &err), &err);
    CHECK(st.added == 200 && st.duplicates == 1);
    CHECK(st.probe > 5 && st.probe < 40);   /* ~10% by hash */
    snprintf(file, sizeof file, "%s/holdout.jsonl", root);
    f = fopen(file, "w");
    for (int i = 0; i < 20; i++)
        fprintf(f, "{\"text\": \"holdout %d\"}\n", i);
    fclose(f);
    CHECK_OK(el_store_ingest(s, file, EL_SPLIT_HOLDOUT, &st, &err), &err);
    snprintf(file, sizeof file, "%s/anchor.jsonl", root);
    f = fopen(file, "w");
    for (int i = 0; i < 100; i++)
        fprintf(f, "{\"text\": \"anchor %d\"}\n", i);
    fclose(f);
    CHECK_OK(el_store_ingest(s, file, EL_SPLIT_ANCHOR, &st, &err), &err);
    CHECK(st.anchor_check > 25 && st.anchor_replay > 25);
    CHECK(st.anchor_check + st.anchor_replay == 100);

    /* a bad line refuses the whole file and names FILE:LINE */
    snprintf(file, sizeof file, "%s/bad.jsonl", root);
    f = fopen(file, "w");
    fprintf(f, "{\"text\": \"fine new line\"}\n{\"prompt\": \"no completion\"}\n"
               "[1, 2]\n{\"text\": 5}\n");
    fclose(f);
    el_store_sample_counts before, after;
    CHECK_OK(el_store_sample_count(s, &before, &err), &err);
    CHECK(el_store_ingest(s, file, EL_SPLIT_TRAIN, &st, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "bad.jsonl:2:") && strstr(err.msg, "bad.jsonl:3:") &&
          strstr(err.msg, "bad.jsonl:4:"));
    CHECK_OK(el_store_sample_count(s, &after, &err), &err);
    CHECK(after.total == before.total);

    /* the lists are disjoint where they must be */
    el_store_sample *tr, *rp, *ho, *ac, *pr;
    size_t ntr, nrp, nho, nac, npr;
    CHECK_OK(el_store_samples(s, EL_LIST_NEW_TRAIN, &tr, &ntr, &err), &err);
    CHECK_OK(el_store_samples(s, EL_LIST_REPLAY, &rp, &nrp, &err), &err);
    CHECK_OK(el_store_samples(s, EL_LIST_HOLDOUT, &ho, &nho, &err), &err);
    CHECK_OK(el_store_samples(s, EL_LIST_ANCHOR_CHECK, &ac, &nac, &err), &err);
    CHECK_OK(el_store_samples(s, EL_LIST_PROBE, &pr, &npr, &err), &err);
    CHECK(ntr + npr == 200 && nho == 20 && nrp + nac == 100);
    CHECK((int64_t)nrp == after.anchor_replay);
    int leaks = 0;
    for (size_t i = 0; i < ntr + nrp; i++) {
        int64_t id = i < ntr ? tr[i].id : rp[i - ntr].id;
        for (size_t j = 0; j < nho; j++) leaks += ho[j].id == id;
        for (size_t j = 0; j < nac; j++) leaks += ac[j].id == id;
        for (size_t j = 0; j < npr; j++) leaks += pr[j].id == id;
    }
    CHECK(leaks == 0);
    CHECK(strstr(tr[0].body, "\"completion\":\"a0\"") != NULL);

    /* training on holdout, anchor-check or probe is refused */
    char adir[256];
    make_adapter(adir, sizeof adir, 31, 64);
    int64_t id;
    el_store_candidate c = {.origin = "local", .sample_ids = &ho[0].id, .n_samples = 1};
    CHECK(el_store_candidate_create(s, &c, adir, &id, &err) == EL_EPOLICY);
    c.sample_ids = &ac[0].id;
    CHECK(el_store_candidate_create(s, &c, adir, &id, &err) == EL_EPOLICY);
    c.sample_ids = &pr[0].id;
    CHECK(el_store_candidate_create(s, &c, adir, &id, &err) == EL_EPOLICY);

    /* a candidate trained on 10 new samples + 1 anchor-replay: digest is
     * order-independent; once accepted its samples move to the replay list */
    int64_t used[11];
    for (int i = 0; i < 10; i++)
        used[i] = tr[i].id;
    used[10] = rp[0].id;
    c.sample_ids = used;
    c.n_samples = 11;
    CHECK_OK(el_store_candidate_create(s, &c, adir, &id, &err), &err);
    int64_t rev[11];
    for (int i = 0; i < 11; i++)
        rev[i] = used[10 - i];
    c.sample_ids = rev;
    int64_t id2;
    CHECK_OK(el_store_candidate_create(s, &c, adir, &id2, &err), &err);
    el_store_version v, w;
    CHECK_OK(el_store_version_get(s, id, &v, &err), &err);
    CHECK_OK(el_store_version_get(s, id2, &w, &err), &err);
    CHECK_STR(v.data_digest, w.data_digest);
    CHECK(strcmp(v.data_digest,
                 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
    el_store_version_finish(&v);
    el_store_version_finish(&w);
    CHECK(in_list(s, EL_LIST_NEW_TRAIN, tr[0].id) == 0);
    CHECK(in_list(s, EL_LIST_REPLAY, tr[0].id) == 0);   /* not accepted yet */
    CHECK_OK(el_store_candidate_judge(s, id, 1, "ok", NULL, NULL, &err), &err);
    CHECK_OK(el_store_activate(s, id, &err), &err);
    CHECK(in_list(s, EL_LIST_REPLAY, tr[0].id) == 1);
    CHECK(in_list(s, EL_LIST_REPLAY, ho[0].id) == 0);

    el_store_sample_list_free(tr, ntr);
    el_store_sample_list_free(rp, nrp);
    el_store_sample_list_free(ho, nho);
    el_store_sample_list_free(ac, nac);
    el_store_sample_list_free(pr, npr);
    el_store_close(s);
}

static int count_files(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "find '%s' -type f | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static void test_blobs(void)
{
    char dir[256], adir[256], out[512];
    el_store *s = fresh(dir, sizeof dir, NULL);
    el_error err;
    make_adapter(adir, sizeof adir, 41, 5000);
    el_store_candidate c = {.origin = "imported"};
    int64_t id;
    CHECK_OK(el_store_candidate_create(s, &c, adir, &id, &err), &err);
    /* export writes the PEFT directory back byte for byte */
    snprintf(out, sizeof out, "%s/export41", root);
    CHECK_OK(el_store_export(s, id, out, &err), &err);
    const char *names[] = {"adapter_config.json", "adapter_model.safetensors"};
    for (int i = 0; i < 2; i++) {
        char a[600], b[600];
        snprintf(a, sizeof a, "%s/%s", adir, names[i]);
        snprintf(b, sizeof b, "%s/%s", out, names[i]);
        uint8_t *da, *db;
        size_t la, lb;
        CHECK(el_fs_read_file(a, 1 << 20, &da, &la, NULL) == 0);
        CHECK(el_fs_read_file(b, 1 << 20, &db, &lb, NULL) == 0);
        CHECK(la == lb && !memcmp(da, db, la));
        el_free(da);
        el_free(db);
    }
    /* not a PEFT directory */
    int64_t none;
    CHECK(el_store_candidate_create(s, &c, root, &none, &err) == EL_EINPUT);

    /* corrupt one byte of the safetensors blob: export, activate and check
     * all detect it; nothing is written or activated */
    el_store_version v;
    CHECK_OK(el_store_version_get(s, id, &v, &err), &err);
    el_store_version_finish(&v);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/blobs", dir);
    char cmd[900];
    /* the largest blob is the safetensors file */
    snprintf(cmd, sizeof cmd, "f=$(find '%s' -type f -size +4k); chmod u+w \"$f\" && "
             "printf X | dd of=\"$f\" bs=1 seek=100 conv=notrunc 2>/dev/null", sub);
    CHECK(system(cmd) == 0);
    snprintf(out, sizeof out, "%s/export41b", root);
    CHECK(el_store_export(s, id, out, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "corrupted") != NULL);
    CHECK(!el_fs_exists(out) || count_files(out) == 0);
    CHECK(el_store_activate(s, id, &err) == EL_EINPUT);
    CHECK(active_of(s) == 0);
    el_store_fsck r;
    CHECK(el_store_check(s, &r, &err) == EL_EINPUT);
    CHECK(r.blobs_corrupt == 1 && r.integrity_ok && r.audit_ok);
    /* a missing blob: the version points at it, check says so */
    snprintf(cmd, sizeof cmd, "rm -f $(find '%s' -type f -size +4k)", sub);
    CHECK(system(cmd) == 0);
    CHECK(el_store_check(s, &r, &err) == EL_EINPUT);
    CHECK(r.blobs_missing == 1 && r.versions_missing_blob == 1);
    el_store_close(s);
}

static void test_retention_budget(void)
{
    char dir[256], adir[256];
    el_store *s = fresh(dir, sizeof dir,
                        "[retention]\nkeep_good = 1\nmax_blob_mb = 1\n"
                        "[probation]\nevents = 1\n");
    el_error err;
    int64_t ids[3];
    for (int i = 0; i < 3; i++) {
        ids[i] = candidate(s, 51 + i, i ? ids[i - 1] : 0, 1.5 - 0.1 * i);
        CHECK_OK(el_store_activate(s, ids[i], &err), &err);
        feedback_n(s, 1, 1);
        CHECK_STATE(s, ids[i], "good");
    }
    el_store_gc_stats st;
    CHECK_OK(el_store_gc(s, 0, &st, &err), &err);
    /* keep_good = 1 counts the active one: both older ones retire */
    CHECK(st.retired == 2 && st.blobs_freed >= 2);
    CHECK_STATE(s, ids[0], "retired");
    CHECK_STATE(s, ids[2], "good");
    char out[512];
    snprintf(out, sizeof out, "%s/export-retired", root);
    CHECK(el_store_export(s, ids[0], out, &err) == EL_ENOTFOUND);
    el_store_fsck r;
    CHECK_OK(el_store_check(s, &r, &err), &err);

    /* an adapter larger than the whole 1 MiB budget: a clear ENOSPC and
     * nothing recorded or left on disk */
    make_adapter(adir, sizeof adir, 60, (size_t)1500 * 1024);
    char blobs[512];
    snprintf(blobs, sizeof blobs, "%s/blobs", dir);
    int files_before = count_files(blobs);
    el_store_version *list;
    size_t n_before, n_after;
    CHECK_OK(el_store_version_list(s, &list, &n_before, &err), &err);
    el_store_version_list_free(list, n_before);
    el_store_candidate c = {.origin = "imported"};
    int64_t id;
    CHECK(el_store_candidate_create(s, &c, adir, &id, &err) == EL_ENOSPC);
    CHECK(strstr(err.msg, "budget") != NULL);
    CHECK_OK(el_store_version_list(s, &list, &n_after, &err), &err);
    el_store_version_list_free(list, n_after);
    CHECK(n_after == n_before);
    CHECK(count_files(blobs) == files_before);

    /* a full disk (fault point fs.enospc): same guarantees */
    make_adapter(adir, sizeof adir, 61, 1000);
    setenv("EDGELOOP_FAULT", "fs.enospc", 1);
    CHECK(el_store_candidate_create(s, &c, adir, &id, &err) == EL_ENOSPC);
    unsetenv("EDGELOOP_FAULT");
    CHECK_OK(el_store_version_list(s, &list, &n_after, &err), &err);
    el_store_version_list_free(list, n_after);
    CHECK(n_after == n_before);
    CHECK(count_files(blobs) == files_before);
    CHECK_OK(el_store_check(s, &r, &err), &err);
    /* and after the disk frees up it works */
    CHECK_OK(el_store_candidate_create(s, &c, adir, &id, &err), &err);
    el_store_close(s);

    /* budget pressure without the keep_good rule: versions of ~300 KiB in a
     * 1 MiB budget; the oldest good versions are retired to make room, the
     * new candidate's own files survive, and the state verifies */
    s = fresh(dir, sizeof dir, "[retention]\nkeep_good = 100\nmax_blob_mb = 1\n"
              "[probation]\nevents = 1\n");
    int64_t prev = 0;
    for (int i = 0; i < 6; i++) {
        make_adapter(adir, sizeof adir, 80 + i, (size_t)300 * 1024);
        el_store_candidate big = {.origin = "imported", .parent_id = prev};
        CHECK_OK(el_store_candidate_create(s, &big, adir, &prev, &err), &err);
        CHECK_OK(el_store_activate(s, prev, &err), &err);
        feedback_n(s, 1, 1);
        CHECK_STATE(s, prev, "good");
        CHECK_OK(el_store_check(s, &r, &err), &err);
    }
    int64_t used;
    CHECK_OK(el_store_blob_usage(s, &used, &err), &err);
    CHECK(used <= 1024 * 1024);
    CHECK_STATE(s, prev - 5, "retired");
    snprintf(out, sizeof out, "%s/export-big", root);
    CHECK_OK(el_store_export(s, prev, out, &err), &err);
    /* storing the same content again heals a damaged blob */
    char model_file[600], blob[600], hash[65];
    snprintf(model_file, sizeof model_file, "%s/adapter_model.safetensors", adir);
    uint8_t *bytes;
    size_t nbytes;
    CHECK(el_fs_read_file(model_file, 1 << 22, &bytes, &nbytes, NULL) == 0);
    el_sha256_hex(bytes, nbytes, hash);
    el_free(bytes);
    CHECK(el_store_blob_path(s, hash, blob, sizeof blob) == 0);
    chmod(blob, 0644);
    FILE *bf = fopen(blob, "r+b");
    CHECK(bf != NULL);
    if (bf) {
        fseek(bf, 99, SEEK_SET);
        fputc('Q', bf);
        fclose(bf);
    }
    CHECK(el_store_check(s, &r, &err) == EL_EINPUT);
    CHECK(r.blobs_corrupt == 1 && !r.active_ok);
    el_store_candidate again = {.origin = "imported"};
    CHECK_OK(el_store_candidate_create(s, &again, adir, &id, &err), &err);
    CHECK_OK(el_store_check(s, &r, &err), &err);
    el_store_close(s);
}

/* Runs SQL against DIR's registry.db behind the store's back. */
static void tamper(const char *dir, const char *sql)
{
    char path[512];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    sqlite3 *db;
    CHECK(sqlite3_open(path, &db) == SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    CHECK_MSG(rc == SQLITE_OK, "%s: %s", sql, msg ? msg : "");
    sqlite3_free(msg);
    sqlite3_close(db);
}

static void audited_state(char *dir, size_t n)
{
    el_store *s = fresh(dir, n, NULL);
    el_error err;
    int64_t v = candidate(s, 71, 0, 1.5);
    CHECK_OK(el_store_activate(s, v, &err), &err);
    feedback_n(s, 2, 1);
    int64_t rows, bad;
    CHECK_OK(el_store_audit_verify(s, &rows, &bad, &err), &err);
    CHECK(rows >= 6);
    el_store_close(s);
}

static int64_t verify_bad(const char *dir)
{
    el_store *s = reopen(NULL, dir, T0);
    el_error err;
    int64_t rows, bad = 0;
    int rc = el_store_audit_verify(s, &rows, &bad, &err);
    el_store_close(s);
    return rc ? bad : 0;
}

static void test_audit_tamper(void)
{
    char dir[256];
    audited_state(dir, sizeof dir);
    CHECK(verify_bad(dir) == 0);
    tamper(dir, "UPDATE audit SET figures = '{\"accept\":false}' WHERE seq = 5");
    CHECK(verify_bad(dir) == 5);

    audited_state(dir, sizeof dir);
    tamper(dir, "UPDATE audit SET actor = 'mallory' WHERE seq = 3");
    CHECK(verify_bad(dir) == 3);

    audited_state(dir, sizeof dir);
    tamper(dir, "DELETE FROM audit WHERE seq = 2");
    CHECK(verify_bad(dir) == 3);

    /* reorder: rows 3 and 4 swap places (each keeps its own hash) */
    audited_state(dir, sizeof dir);
    tamper(dir, "UPDATE audit SET seq = -3 WHERE seq = 3;"
                "UPDATE audit SET seq = 3 WHERE seq = 4;"
                "UPDATE audit SET seq = 4 WHERE seq = -3;");
    CHECK(verify_bad(dir) == 3);

    /* a rewritten row with a recomputed hash still breaks the next prev */
    audited_state(dir, sizeof dir);
    tamper(dir, "UPDATE audit SET hash = '00' || substr(hash, 3) WHERE seq = 2");
    int64_t b = verify_bad(dir);
    CHECK(b == 2);
}

static const char schema_v1_fixture[] =
    /* registry.db as schema version 1 wrote it (agent/store/db.c schema_v1),
     * with one base, one good active version and a sample */
    "CREATE TABLE bases(id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, config TEXT NOT NULL,"
    " path TEXT NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE blobs(hash TEXT PRIMARY KEY, size INTEGER NOT NULL, created_at INTEGER NOT NULL);"
    "CREATE TABLE versions(id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES versions(id),"
    " base_id INTEGER NOT NULL REFERENCES bases(id), state TEXT NOT NULL CHECK(state IN"
    " ('candidate','probation','good','rejected','rolled_back','retired')),"
    " origin TEXT NOT NULL CHECK(origin IN ('local','fleet','imported')),"
    " data_digest TEXT NOT NULL, adapter_hash TEXT NOT NULL, recipe TEXT NOT NULL,"
    " seed INTEGER NOT NULL, backend TEXT NOT NULL, metrics TEXT NOT NULL,"
    " plasticity TEXT NOT NULL, gate_pass INTEGER, gate TEXT, reason TEXT, signer TEXT,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, activated_at INTEGER,"
    " probation_since INTEGER);"
    "CREATE TABLE adapter_files(version_id INTEGER NOT NULL REFERENCES versions(id),"
    " name TEXT NOT NULL, blob TEXT NOT NULL REFERENCES blobs(hash), PRIMARY KEY(version_id, name));"
    "CREATE TABLE active(id INTEGER PRIMARY KEY CHECK(id = 1),"
    " version_id INTEGER REFERENCES versions(id), since INTEGER NOT NULL);"
    "CREATE TABLE samples(id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE,"
    " split TEXT NOT NULL CHECK(split IN ('train','holdout','anchor')),"
    " part TEXT NOT NULL CHECK(part IN ('train','probe','holdout','anchor-replay','anchor-check')),"
    " body TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL,"
    " trained_by INTEGER REFERENCES versions(id), created_at INTEGER NOT NULL);"
    "CREATE TABLE feedback(id INTEGER PRIMARY KEY, version_id INTEGER NOT NULL REFERENCES"
    " versions(id), accept INTEGER NOT NULL, at INTEGER NOT NULL);"
    "CREATE TABLE audit(seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, actor TEXT NOT NULL,"
    " event TEXT NOT NULL, version_id INTEGER, figures TEXT NOT NULL, prev TEXT NOT NULL,"
    " hash TEXT NOT NULL);"
    "CREATE TABLE policy(section TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " release TEXT NOT NULL, PRIMARY KEY(section, key));"
    "INSERT INTO bases VALUES(1, 'aa', '{}', '/nowhere', 1);"
    "INSERT INTO versions(id, base_id, state, origin, data_digest, adapter_hash, recipe,"
    " seed, backend, metrics, plasticity, created_at, updated_at) VALUES"
    " (1, 1, 'good', 'local', 'dd', 'ah', '{}', 7, 'cpu', '{}', '{}', 1, 1);"
    "INSERT INTO active VALUES(1, 1, 1);"
    "INSERT INTO samples VALUES(1, 'h1', 'train', 'train', '{\"text\":\"x\"}', 'f', 1, NULL, 1);"
    "INSERT INTO policy VALUES('gate', 'min_gain', '0.2', 'release-7');"
    "PRAGMA user_version = 1;";

static int64_t user_version(const char *dir)
{
    char path[512];
    snprintf(path, sizeof path, "%s/registry.db", dir);
    sqlite3 *db;
    int64_t ver = -1;
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            ver = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    return ver;
}

static void test_migration(void)
{
    char dir[256], model[256], sql[600];
    snprintf(dir, sizeof dir, "%s/v1state", root);
    mkdir(dir, 0755);
    tamper(dir, schema_v1_fixture);
    el_error err;
    el_store *s = NULL;
    el_store_open_opts o = {.now = T0};
    /* schema 4 rehashes bases from their path: a base whose files are gone
     * cannot be, and the database is refused at schema 3, not half-done */
    CHECK(el_store_open(dir, &o, &s, &err) == EL_ENOTFOUND);
    CHECK(s == NULL);
    CHECK_MSG(strstr(err.msg, "schema 4") && strstr(err.msg, "/nowhere"), "%s", err.msg);
    CHECK(user_version(dir) == 3);
    make_model(model, sizeof model);
    snprintf(sql, sizeof sql, "UPDATE bases SET hash = 'old-style', path = '%s'", model);
    tamper(dir, sql);
    CHECK_OK(el_store_open(dir, &o, &s, &err), &err);
    if (!s)
        return;
    /* the recomputed hash is SHA-256 of model.safetensors alone */
    char hash[65], want[65];
    int64_t base_id = 0;
    el_sha256_hex("not-really-weights", 18, want);
    CHECK_OK(el_store_base_current(s, &base_id, hash, &err), &err);
    CHECK(base_id == 1);
    CHECK_STR(hash, want);
    el_store_version v;
    CHECK_OK(el_store_version_get(s, 1, &v, &err), &err);
    CHECK_STR(v.state, "good");
    CHECK(v.seed == 7 && v.crashes == 0 && v.active && !v.pinned);
    el_store_version_finish(&v);
    el_store_sample_counts c;
    CHECK_OK(el_store_sample_count(s, &c, &err), &err);
    CHECK(c.train == 1);
    /* the policy table overrides the file and the default */
    const el_store_config *cfg = el_store_get_config(s);
    CHECK_NEAR(cfg->gate.min_gain, 0.2, 0);
    el_store_close(s);
    CHECK(user_version(dir) == EL_STORE_SCHEMA_VERSION);

    /* a database from a newer edgeloop is refused, untouched */
    tamper(dir, "PRAGMA user_version = 99");
    CHECK(el_store_open(dir, &o, &s, &err) == EL_EINPUT);
    CHECK(strstr(err.msg, "newer") != NULL);
    CHECK(s == NULL);
}

/* One base hash everywhere: what init records is what the fleet tool and
 * every manifest call "base", SHA-256 of model.safetensors alone. */
static void test_base_hash(void)
{
    char dir[256], model[256], hash[65], got[65], want[65];
    el_store *s = fresh(dir, sizeof dir, NULL);
    el_error err;
    int64_t id = 0;
    make_model(model, sizeof model);
    el_sha256_hex("not-really-weights", 18, want);
    CHECK_OK(el_store_base_hash_file(model, got, &err), &err);
    CHECK_STR(got, want);
    CHECK_OK(el_store_base_current(s, &id, hash, &err), &err);
    CHECK_STR(hash, want);
    CHECK_OK(el_store_base_hash(s, id, hash, &err), &err);
    CHECK_STR(hash, want);
    /* config.json does not enter the hash: the same weights with another
     * config are the same base */
    write_file(model, "config.json", "{\"vocab_size\": 260}", 19);
    int64_t again = 0;
    CHECK_OK(el_store_base_register(s, model, &again, &err), &err);
    CHECK(again == id);
    CHECK(el_store_base_hash(s, id + 100, hash, &err) == EL_ENOTFOUND);
    el_store_close(s);
}

/* Scratch folders of dead processes go at open; live ones stay. */
static void test_work_dirs(void)
{
    char dir[256], path[512];
    el_store *s = fresh(dir, sizeof dir, NULL);
    el_error err;
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    waitpid(child, NULL, 0);
    long dead = (long)child, live = (long)getppid(), self = (long)getpid();
    snprintf(path, sizeof path, "%s/train-work.%ld/adapter", dir, dead);
    CHECK_OK(el_fs_mkdirs(path, 0700, &err), &err);
    write_file(path, "adapter_model.safetensors", "x", 1);
    snprintf(path, sizeof path, "%s/train-work.%ld", dir, dead);
    write_file(path, "stray", "y", 1);
    snprintf(path, sizeof path, "%s/bundle-work.%ld/adapter", dir, dead);
    CHECK_OK(el_fs_mkdirs(path, 0700, &err), &err);
    snprintf(path, sizeof path, "%s/train-work.%ld/adapter", dir, live);
    CHECK_OK(el_fs_mkdirs(path, 0700, &err), &err);
    snprintf(path, sizeof path, "%s/train-work.%ld", dir, self);
    CHECK_OK(el_fs_mkdirs(path, 0700, &err), &err);
    snprintf(path, sizeof path, "%s/train-work.notapid", dir);
    CHECK_OK(el_fs_mkdirs(path, 0700, &err), &err);
    snprintf(path, sizeof path, "outbox-work.%ld.elb", dead);
    write_file(dir, path, "z", 1);
    snprintf(path, sizeof path, "outbox-work.%ld.elbx", dead);
    write_file(dir, path, "z", 1);
    s = reopen(s, dir, T0);
    snprintf(path, sizeof path, "%s/outbox-work.%ld.elb", dir, dead);
    CHECK(!el_fs_exists(path));
    snprintf(path, sizeof path, "%s/outbox-work.%ld.elbx", dir, dead);
    CHECK(el_fs_exists(path));
    snprintf(path, sizeof path, "%s/train-work.%ld", dir, dead);
    CHECK(!el_fs_exists(path));
    snprintf(path, sizeof path, "%s/bundle-work.%ld", dir, dead);
    CHECK(!el_fs_exists(path));
    snprintf(path, sizeof path, "%s/train-work.%ld/adapter", dir, live);
    CHECK(el_fs_exists(path));
    snprintf(path, sizeof path, "%s/train-work.%ld", dir, self);
    CHECK(el_fs_exists(path));
    snprintf(path, sizeof path, "%s/train-work.notapid", dir);
    CHECK(el_fs_exists(path));
    el_store_close(s);
}

static void test_config(void)
{
    el_store_config c;
    el_config_defaults(&c);
    CHECK_NEAR(c.gate.min_gain, 0.01, 0);
    CHECK(c.probation.events == 50 && c.retention.keep_good == 5);
    char path[512];
    snprintf(path, sizeof path, "%s/test.conf", root);
    /* the file init writes parses and changes nothing (all commented) */
    const char *def = el_config_default_text();
    write_file(root, "test.conf", def, strlen(def));
    el_error err;
    CHECK_OK(el_config_load_file(&c, path, &err), &err);
    for (size_t i = 0; i < el_config_key_count(); i++)
        CHECK(c.source[i] == EL_CONFIG_DEFAULT);
    CHECK(strstr(def, "[probation]") && strstr(def, "# max_reject_rate = 0.3"));

    const char *conf = "# comment\n\n[gate]\n  min_gain = 0.05 \n[hub]\nurl = https://h:8443\n";
    write_file(root, "test.conf", conf, strlen(conf));
    CHECK_OK(el_config_load_file(&c, path, &err), &err);
    CHECK_NEAR(c.gate.min_gain, 0.05, 0);
    CHECK_STR(c.hub.url, "https://h:8443");
    char value[64];
    for (size_t i = 0; i < el_config_key_count(); i++) {
        const char *sec, *key;
        el_config_key_at(i, &sec, &key);
        if (!strcmp(sec, "gate") && !strcmp(key, "min_gain")) {
            CHECK(c.source[i] == EL_CONFIG_FILE);
            el_config_value_text(&c, i, value, sizeof value);
            CHECK_STR(value, "0.05");
        }
        if (!strcmp(sec, "gate") && !strcmp(key, "max_forget"))
            CHECK(c.source[i] == EL_CONFIG_DEFAULT);
    }
    const char *bad[] = {
        "[gate]\nmin_gain = 1.5\n",        /* a fraction above 1 */
        "[gate]\nmin_gian = 0.1\n",        /* unknown key */
        "[nope]\n",                        /* unknown section */
        "min_gain = 0.1\n",                /* outside a section */
        "[probation]\n\n\nevents = ten\n", /* not an integer, line 4 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(root, "test.conf", bad[i], strlen(bad[i]));
        el_config_defaults(&c);
        CHECK(el_config_load_file(&c, path, &err) == EL_EINPUT);
    }
    CHECK(strstr(err.msg, "test.conf:4") != NULL);
    /* a policy value beats the file */
    CHECK_OK(el_config_set(&c, "gate", "max_forget", "0.1", EL_CONFIG_POLICY, "policy", &err),
             &err);
    CHECK(el_config_set(&c, "gate", "bogus", "1", EL_CONFIG_POLICY, "policy", &err) ==
          EL_ENOTFOUND);

    /* a state opened without init is refused with a pointer to init */
    el_store *s = NULL;
    char none[512];
    snprintf(none, sizeof none, "%s/not-a-state", root);
    CHECK(el_store_open(none, NULL, &s, &err) == EL_ENOTFOUND);
    CHECK(strstr(err.msg, "edgeloop init") != NULL);
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(root, sizeof root, "%s/el-test-store-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(root)) {
        perror("mkdtemp");
        return 1;
    }
    test_config();
    test_transitions();
    test_probation_time_health();
    test_boot_counting();
    test_samples();
    test_blobs();
    test_retention_budget();
    test_audit_tamper();
    test_migration();
    test_base_hash();
    test_work_dirs();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    if (!el_test_failures && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", root);
    return el_test_done("test_store");
}
