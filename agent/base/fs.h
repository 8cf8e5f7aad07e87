/* Crash-safe file operations and fault injection.
 *
 * Invariants of el_fs_write_atomic:
 *  1. The target path holds either its old content or the complete new
 *     content, never a mix, whatever instant the process dies at.
 *  2. Order on disk: data written to PATH.tmp.PID.N (N unique per call, so
 *     threads writing the same path do not share one), fsync(tmp),
 *     rename(tmp, path), fsync(directory). Only after the directory fsync returns is the
 *     new content durable; callers commit their database after that.
 *  3. On any error the temporary file is removed and the target untouched.
 */
#ifndef EL_BASE_FS_H
#define EL_BASE_FS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

/* Writes LEN bytes of DATA to PATH atomically with permissions MODE.
 * Returns 0, EL_ENOSPC when the disk is full (or the fault point
 * "fs.enospc" is armed), EL_EIO otherwise, with ERR naming PATH. */
int el_fs_write_atomic(const char *path, const void *data, size_t len,
                       mode_t mode, el_error *err);

/* Reads the whole of PATH into a new buffer (caller el_free's *OUT) if it is
 * at most MAX bytes; a NUL is appended after the data (not counted in LEN).
 * Returns 0, EL_ENOTFOUND, EL_EINPUT (too large) or EL_EIO. */
int el_fs_read_file(const char *path, size_t max, uint8_t **out, size_t *len,
                    el_error *err);

/* fsync()s the directory containing PATH (or PATH itself when IS_DIR). */
int el_fs_fsync_dir(const char *path, int is_dir, el_error *err);

/* mkdir -p with MODE. Returns 0 or EL_EIO. */
int el_fs_mkdirs(const char *path, mode_t mode, el_error *err);

/* 1 when PATH exists. */
int el_fs_exists(const char *path);

/* Joins A and B with one '/' into OUT (size N). Returns 0 or EL_EINPUT when
 * the result does not fit. */
int el_fs_join(char *out, size_t n, const char *a, const char *b);

/* Fault injection for crash tests. When $EDGELOOP_CRASH_AT equals NAME the
 * process is killed with SIGKILL at this point (as kill -9 would), so no
 * cleanup runs. $EDGELOOP_CRASH_AT=random:SEED:P kills at each point with
 * probability P/1000 (seeded), for random crash loops. When
 * $EDGELOOP_PAUSE_AT equals NAME the process stops itself (SIGSTOP) there
 * until continued, so a test can run another process in between. */
void el_crash_point(const char *name);

/* The wall clock in Unix seconds: time(NULL), or $EDGELOOP_NOW when set to
 * a positive integer, so tests can run a device or a hub whose clock is
 * set back or forward. */
int64_t el_wall_now(void);

/* 1 when $EDGELOOP_FAULT lists NAME (comma separated), e.g. "fs.enospc". */
int el_fault_armed(const char *name);

#endif
