#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"

int el_fs_join(char *out, size_t n, const char *a, const char *b)
{
    size_t la = strlen(a);
    int slash = la > 0 && a[la - 1] != '/';
    int w = snprintf(out, n, "%s%s%s", a, slash ? "/" : "", b);
    if (w < 0 || (size_t)w >= n)
        return EL_EINPUT;
    return 0;
}

int el_fs_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int el_fs_fsync_dir(const char *path, int is_dir, el_error *err)
{
    char dir[PATH_MAX];
    if (is_dir) {
        snprintf(dir, sizeof dir, "%s", path);
    } else {
        snprintf(dir, sizeof dir, "%s", path);
        char *slash = strrchr(dir, '/');
        if (!slash)
            snprintf(dir, sizeof dir, ".");
        else if (slash == dir)
            dir[1] = '\0';
        else
            *slash = '\0';
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return el_error_set(err, EL_EIO, "%s: cannot open directory: %s", dir,
                            strerror(errno));
    int rc = 0;
    if (fsync(fd) != 0)
        rc = el_error_set(err, EL_EIO, "%s: fsync of directory failed: %s", dir,
                          strerror(errno));
    close(fd);
    return rc;
}

int el_fs_mkdirs(const char *path, mode_t mode, el_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return el_error_set(err, EL_EINPUT, "path too long: %s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, mode) != 0 && errno != EEXIST)
            return el_error_set(err, EL_EIO, "%s: cannot create directory: %s",
                                buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST)
        return el_error_set(err, EL_EIO, "%s: cannot create directory: %s", buf,
                            strerror(errno));
    return 0;
}

static int io_error(el_error *err, const char *path, const char *what, int e)
{
    int code = (e == ENOSPC || e == EDQUOT) ? EL_ENOSPC : EL_EIO;
    return el_error_set(err, code, "%s: %s failed: %s", path, what, strerror(e));
}

int el_fs_write_atomic(const char *path, const void *data, size_t len,
                       mode_t mode, el_error *err)
{
    /* one temporary file per call: threads of one process may write the
     * same path at once (identical content-addressed blobs) */
    static atomic_ulong serial;
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld.%lu", path, (long)getpid(),
                 atomic_fetch_add(&serial, 1)) >= (int)sizeof tmp)
        return el_error_set(err, EL_EINPUT, "path too long: %s", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return io_error(err, tmp, "open", errno);
    int rc = 0;
    const uint8_t *p = data;
    size_t left = len;
    while (left > 0) {
        if (el_fault_armed("fs.enospc")) {
            rc = io_error(err, tmp, "write", ENOSPC);
            goto fail;
        }
        ssize_t w = write(fd, p, left);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            rc = io_error(err, tmp, "write", errno);
            goto fail;
        }
        p += w;
        left -= (size_t)w;
    }
    el_crash_point("fs.before_fsync");
    if (fsync(fd) != 0) {
        rc = io_error(err, tmp, "fsync", errno);
        goto fail;
    }
    if (close(fd) != 0) {
        fd = -1;
        rc = io_error(err, tmp, "close", errno);
        goto fail;
    }
    fd = -1;
    el_crash_point("fs.before_rename");
    if (rename(tmp, path) != 0) {
        rc = io_error(err, path, "rename", errno);
        goto fail;
    }
    el_crash_point("fs.before_dirsync");
    return el_fs_fsync_dir(path, 0, err);
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return rc;
}

int el_fs_read_file(const char *path, size_t max, uint8_t **out, size_t *len,
                    el_error *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return el_error_set(err, EL_ENOTFOUND, "%s: no such file", path);
        return el_error_set(err, EL_EIO, "%s: cannot open: %s", path,
                            strerror(errno));
    }
    struct stat st;
    int rc = 0;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = el_error_set(err, EL_EIO, "%s: stat failed: %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = el_error_set(err, EL_EINPUT, "%s: not a regular file", path);
        goto done;
    }
    if ((uint64_t)st.st_size > max) {
        rc = el_error_set(err, EL_EINPUT, "%s: %lld bytes is over the limit of %zu",
                          path, (long long)st.st_size, max);
        goto done;
    }
    size_t size = (size_t)st.st_size;
    buf = el_malloc(size + 1);
    if (!buf) {
        rc = el_error_set(err, EL_ENOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = el_error_set(err, EL_EIO, "%s: read failed: %s", path,
                              strerror(errno));
            goto done;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    buf[got] = '\0';
    *out = buf;
    *len = got;
    buf = NULL;
done:
    el_free(buf);
    close(fd);
    return rc;
}

int el_fault_armed(const char *name)
{
    const char *env = getenv("EDGELOOP_FAULT");
    if (!env || !*env)
        return 0;
    size_t n = strlen(name);
    for (const char *p = env; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !strncmp(p, name, n))
            return 1;
        if (!end)
            break;
        p = end + 1;
    }
    return 0;
}

int64_t el_wall_now(void)
{
    const char *v = getenv("EDGELOOP_NOW");
    char *end;
    long long t = v && *v ? strtoll(v, &end, 10) : 0;
    if (v && *v && !*end && t > 0)
        return (int64_t)t;
    return (int64_t)time(NULL);
}

void el_crash_point(const char *name)
{
    static int parsed;
    static unsigned long long rng;
    static long per_mille = -1;
    /* a test holds the process here to run another one in between */
    const char *pause = getenv("EDGELOOP_PAUSE_AT");
    if (pause && !strcmp(pause, name))
        raise(SIGSTOP);
    const char *env = getenv("EDGELOOP_CRASH_AT");
    if (!env || !*env)
        return;
    if (!strncmp(env, "random:", 7)) {
        if (!parsed) {
            parsed = 1;
            char *end;
            rng = strtoull(env + 7, &end, 10) * 6364136223846793005ULL + 1442695040888963407ULL;
            per_mille = (*end == ':') ? strtol(end + 1, NULL, 10) : 50;
        }
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        if ((long)((rng >> 33) % 1000) < per_mille)
            raise(SIGKILL);
        return;
    }
    if (!strcmp(env, name))
        raise(SIGKILL);
}
