/* The agent's inbox: JSONL files dropped into STATE/inbox by other programs.
 *
 * Invariants:
 *  1. Only names ending in ".jsonl" are read. Writers create another name
 *     (NAME.jsonl.tmp), write, close, then rename to NAME.jsonl, so a file
 *     the agent sees is complete.
 *  2. A file is ingested in one registry transaction (el_store_ingest) and
 *     moved only after that commit. A crash between the two leaves it in
 *     the inbox; the next scan ingests it again and the registry's content
 *     hashes make every line a duplicate: ingestion is idempotent.
 *  3. A refused file gets its NAME.why (written atomically) before it is
 *     moved to rejected/, so a rejected file always has its reason; a crash
 *     in between leaves it in the inbox to be judged again.
 *  4. A failure that is not the file's fault (disk full, I/O) leaves the file
 *     in place for the next scan.
 */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/fs.h"
#include "daemon/agent.h"

/* Names longer than this are left alone (and the paths below stay bounded). */
#define NAME_MAX_LEN 200

static int is_inbox_name(const struct dirent *d)
{
    size_t n = strlen(d->d_name);
    return d->d_name[0] != '.' && n > 6 && n <= NAME_MAX_LEN &&
           !strcmp(d->d_name + n - 6, ".jsonl");
}

static enum el_store_split split_of(const char *name)
{
    if (!strncmp(name, "holdout-", 8))
        return EL_SPLIT_HOLDOUT;
    if (!strncmp(name, "anchor-", 7))
        return EL_SPLIT_ANCHOR;
    return EL_SPLIT_TRAIN;
}

/* Moves DIR/NAME to DIR/SUB/NAME durably. */
static int move_to(const char *dir, const char *sub, const char *name,
                   el_error *err)
{
    char from[1024], to_dir[1024], to[1280];
    snprintf(from, sizeof from, "%s/%s", dir, name);
    snprintf(to_dir, sizeof to_dir, "%s/%s", dir, sub);
    snprintf(to, sizeof to, "%s/%s", to_dir, name);
    int rc = el_fs_mkdirs(to_dir, 0750, err);
    if (rc)
        return rc;
    if (rename(from, to) != 0)
        return el_error_set(err, EL_EIO, "moving %s to %s/: %s", from, sub,
                            strerror(errno));
    if ((rc = el_fs_fsync_dir(to_dir, 1, err)))
        return rc;
    return el_fs_fsync_dir(dir, 1, err);
}

/* Writes DIR/rejected/NAME.why holding WHY. */
static int write_why(const char *dir, const char *name, const char *why,
                     el_error *err)
{
    char rej[1024], path[1280], text[EL_ERROR_MSG_MAX + 64];
    snprintf(rej, sizeof rej, "%s/rejected", dir);
    int rc = el_fs_mkdirs(rej, 0750, err);
    if (rc)
        return rc;
    snprintf(path, sizeof path, "%s/%s.why", rej, name);
    int n = snprintf(text, sizeof text, "%s\n", why);
    return el_fs_write_atomic(path, text, (size_t)n, 0640, err);
}

int el_agent_inbox_scan(el_store *s, el_agent_inbox_stats *stats, el_error *err)
{
    char dir[1024];
    if (snprintf(dir, sizeof dir, "%s/inbox", el_store_dir(s)) >= (int)sizeof dir)
        return el_error_set(err, EL_EUSAGE, "state directory path too long");
    int rc = el_fs_mkdirs(dir, 0750, err);
    if (rc)
        return rc;
    struct dirent **names = NULL;
    int n = scandir(dir, &names, is_inbox_name, alphasort);
    if (n < 0)
        return el_error_set(err, EL_EIO, "reading %s: %s", dir, strerror(errno));
    int first_rc = 0;
    for (int i = 0; i < n; i++) {
        const char *name = names[i]->d_name;
        char path[1280];
        snprintf(path, sizeof path, "%s/%s", dir, name);
        el_store_ingest_stats st = {0};
        el_error ierr = {0};
        rc = el_store_ingest(s, path, split_of(name), &st, &ierr);
        if (rc == 0) {
            el_agent_log(EL_LOG_INFO, "inbox.ingested", "file=%s lines=%lld added=%lld "
                   "duplicates=%lld", name, (long long)st.lines,
                   (long long)st.added, (long long)st.duplicates);
            if (stats) {
                stats->samples_added += st.added;
                stats->duplicates += st.duplicates;
            }
            rc = move_to(dir, "done", name, &ierr);
            if (rc == 0 && stats)
                stats->files_done++;
        } else if (rc == EL_EINPUT) {
            el_agent_log(EL_LOG_WARN, "inbox.rejected", "file=%s why=\"%s\"", name,
                   ierr.msg);
            char why[EL_ERROR_MSG_MAX];
            snprintf(why, sizeof why, "%s", ierr.msg);
            el_error_clear(&ierr);
            rc = write_why(dir, name, why, &ierr);
            if (rc == 0)
                rc = move_to(dir, "rejected", name, &ierr);
            if (rc == 0 && stats)
                stats->files_rejected++;
        }
        if (rc) {
            el_agent_log(EL_LOG_ERROR, "inbox.error", "file=%s error=\"%s\"", name,
                   ierr.msg);
            if (!first_rc) {
                first_rc = rc;
                if (err)
                    *err = ierr;
            }
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return first_rc;
}
