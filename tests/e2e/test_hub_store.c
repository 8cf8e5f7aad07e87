/* The hub's embedded store (store_sqlite.c) through its operations table:
 * device_seen coalescing (note 4: a repeat within EL_HUB_SEEN_GRANULARITY
 * seconds with the same group and serial is not written; a changed group or
 * serial, or an older record, is), and a bundle or release recording its
 * rebuilt adapter in the same transaction (note 5), idempotently. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "store.h"

static int64_t last_seen(el_hub_store *st, const char *device, const char **group)
{
    el_error err = {0};
    json_t *row = NULL;
    CHECK_OK(st->ops->device_get(st, device, &row, &err), &err);
    int64_t seen = row ? json_integer_value(json_object_get(row, "last_seen")) : -1;
    static char grp[64];
    snprintf(grp, sizeof grp, "%s", row ? json_string_value(json_object_get(row, "group")) : "");
    *group = grp;
    json_decref(row);
    return seen;
}

static void test_device_seen(el_hub_store *st)
{
    el_error err = {0};
    const char *group;
    const int64_t g = EL_HUB_SEEN_GRANULARITY;
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-a", "01", 1000, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1000);
    /* within the granularity: not written again */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-a", "01", 1000 + g - 1, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1000);
    /* a new group or serial is written at once */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "01", 1001, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1001 && !strcmp(group, "line-b"));
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "02", 1002, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002);
    /* after the granularity it is written again */
    CHECK_OK(st->ops->device_seen(st, "dev-a", "line-b", "02", 1002 + g, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g);
    /* another device is its own record */
    CHECK_OK(st->ops->device_seen(st, "dev-b", "line-a", "03", 1003, &err), &err);
    CHECK(last_seen(st, "dev-b", &group) == 1003);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g);
    /* a status report sets last_seen exactly, whatever device_seen skipped */
    CHECK_OK(st->ops->status_put(st, "dev-a", 1, "aa", "{}", 1002 + g + 5, &err), &err);
    CHECK(last_seen(st, "dev-a", &group) == 1002 + g + 5);
}

static void fill(char *out, char c)
{
    memset(out, c, 64);
    out[64] = '\0';
}

static void test_adapter_with_row(el_hub_store *st)
{
    el_error err = {0};
    char blob[EL_HUB_ID_MAX], sha[EL_HUB_ID_MAX];
    const char adapter_bytes[] = "rebuilt adapter bytes";
    CHECK_OK(st->ops->blob_put(st, adapter_bytes, sizeof adapter_bytes, sha, &err), &err);
    el_hub_bundle_rec rec;
    memset(&rec, 0, sizeof rec);
    fill(rec.id, '1');
    snprintf(rec.device, sizeof rec.device, "dev-a");
    fill(rec.blob, '2');
    fill(rec.parent, '3');
    fill(rec.result, '4');
    fill(rec.base, '5');
    snprintf(rec.encoding, sizeof rec.encoding, "lora-delta-q8");
    snprintf(rec.adapter_blob, sizeof rec.adapter_blob, "%s", sha);
    CHECK(st->ops->adapter_get(st, rec.result, blob, &err) == EL_ENOTFOUND);
    int created = 0;
    CHECK_OK(st->ops->bundle_put(st, &rec, &created, &err), &err);
    CHECK(created == 1 && rec.seq > 0);
    CHECK_OK(st->ops->adapter_get(st, rec.result, blob, &err), &err);
    CHECK(!strcmp(blob, sha));
    /* the same id again: nothing changes */
    CHECK_OK(st->ops->bundle_put(st, &rec, &created, &err), &err);
    CHECK(created == 0);
    /* a bundle without a rebuilt adapter records none */
    fill(rec.id, '6');
    fill(rec.result, '7');
    rec.adapter_blob[0] = '\0';
    CHECK_OK(st->ops->bundle_put(st, &rec, &created, &err), &err);
    CHECK(created == 1);
    CHECK(st->ops->adapter_get(st, rec.result, blob, &err) == EL_ENOTFOUND);

    el_hub_release_rec rel;
    memset(&rel, 0, sizeof rel);
    fill(rel.id, '8');
    snprintf(rel.kind, sizeof rel.kind, "adapter");
    rel.counter = 1;
    snprintf(rel.target, sizeof rel.target, "*");
    fill(rel.blob, '9');
    rel.expires = 4000000000;
    fill(rel.adapter, 'a');
    snprintf(rel.adapter_blob, sizeof rel.adapter_blob, "%s", sha);
    CHECK_OK(st->ops->release_put(st, &rel, &created, &err), &err);
    CHECK(created == 1);
    CHECK_OK(st->ops->adapter_get(st, rel.adapter, blob, &err), &err);
    CHECK(!strcmp(blob, sha));
}

int main(void)
{
    char dir[] = "/tmp/el-test-hub-store-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    el_error err = {0};
    el_hub_store *st = NULL;
    CHECK_OK(el_hub_store_sqlite_open(dir, &st, &err), &err);
    if (st) {
        test_device_seen(st);
        test_adapter_with_row(st);
        st->ops->destroy(st);
    }
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0);
    return el_test_done("test_hub_store");
}
