/* SPDX-License-Identifier: MIT */
#include "listfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/secret.h"
#include "basic/macro.h"

#define LIST_SIZE_MAX (512u << 20) /* about a million rows */
#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

/* Reads the whole file from offset 0 into a NUL-terminated buffer. */
static int read_all(int fd, char **ret, size_t *ret_len) {
    _cleanup_free_ char *buf = NULL;
    struct stat st;
    size_t len = 0;
    ssize_t n;

    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    if ((uint64_t)st.st_size > LIST_SIZE_MAX)
        return -EFBIG;
    buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return -ENOMEM;
    while (len < (size_t)st.st_size &&
           (n = pread(fd, buf + len, (size_t)st.st_size - len, (off_t)len)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        len += (size_t)n;
    }
    buf[len] = '\0';
    *ret = TAKE_PTR(buf);
    *ret_len = len;
    return 0;
}

/* A list that cannot be opened for a reason its path explains (missing, a directory, no
 * permission) is a command line to fix: exit 2, the cause in the message. */
static int open_failed(const char *path) {
    int error = errno;

    log_error_errno(error, "Cannot open the list %s: %m", secret_shown(path));
    return path_error(error);
}

static int read_failed(const char *path, int r) {
    if (r == -EINVAL) /* read_all takes regular files only */
        return log_error_errno(EINVAL, "The list %s is not a regular file.", secret_shown(path));
    return log_error_errno(r, "Cannot read the list %s: %m", secret_shown(path));
}

/* A list whose text does not parse is input to fix, like a bad option: exit 2. */
static int parse_logged(const char *path, const char *data, size_t len, struct ekrows *ret) {
    const char *why = NULL;
    int r = ekrows_parse(data, len, ret, &why);

    if (r == -EBADMSG) {
        log_error_errno(r, "%s: %s.", path, why);
        return -EINVAL;
    }
    if (r < 0)
        return log_error_errno(r, "Cannot parse %s: %m", path);
    return 0;
}

int listfile_load(const char *path, struct ekrows *ret) {
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *data = NULL;
    size_t len;
    int r;

    /* O_NONBLOCK: a FIFO given as a list must not hang the line; read_all takes files only. */
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0)
        return open_failed(path);
    /* A station may be appending right now: its row is whole once the lock is ours. */
    if (flock(fd, LOCK_SH) < 0)
        return log_error_errno(errno, "Cannot lock the list %s: %m", secret_shown(path));
    r = read_all(fd, &data, &len);
    if (r < 0)
        return read_failed(path, r);
    r = parse_logged(path, data, len, ret);
    if (r < 0)
        return r;
    for (size_t i = 0; i < ret->n_rows; i++)
        if (ekrows_check_row(&ret->rows[i]) == -ENOMEM) {
            ekrows_done(ret);
            return log_oom();
        }
    return 0;
}

int listfile_require_whole(const char *path, const struct ekrows *l) {
    if (!l->torn)
        return 0;
    return log_error_errno(EINVAL, "%s:%u: a half row without a newline (an interrupted write?); "
                           "the device on it would not be compared against. Check it, then "
                           "delete the line or end it with a newline.", path, l->torn_line);
}

static enum ekrows_format format_from_name(const char *path) {
    const char *dot = strrchr(path, '.');

    if (dot && strcmp(dot, ".csv") == 0)
        return EKROWS_FORMAT_CSV;
    if (dot && (strcmp(dot, ".jsonl") == 0 || strcmp(dot, ".json") == 0 ||
                strcmp(dot, ".ndjson") == 0))
        return EKROWS_FORMAT_JSON;
    return EKROWS_FORMAT_UNKNOWN;
}

/* A crash between the write and its end leaves a line without a newline: every writer of
 * these files ends each row with one in a single write(), so that line is never a whole row. */
static int repair_torn(const char *path, int fd, const struct ekrows *l) {
    if (!l->torn)
        return 0;
    log_warning("%s: line %u is a half row without a newline (an interrupted write); cutting it "
                "off. Check that device: it was not recorded.", path, l->torn_line);
    if (ftruncate(fd, (off_t)l->torn_offset) < 0)
        return log_error_errno(errno, "Cannot cut the half row off %s: %m", path);
    return 0;
}

static bool same(const char *a, const char *b) {
    return a && b && strcmp(a, b) == 0;
}

/* The first row of l that shares the EK, the registration ID or the device serial with row. */
static const struct ekrow *clash(const struct ekrows *l, const struct ekrow *row) {
    const struct ekrow *hit = ekrows_find(l, row->derived_id, row->effective_id);

    if (hit || !row->device_serial)
        return hit;
    for (size_t i = 0; i < l->n_rows; i++)
        if (!l->rows[i].error && same(l->rows[i].device_serial, row->device_serial))
            return &l->rows[i];
    return NULL;
}

static int find_conflict(const struct ekrows *list, const char *path,
                         struct ekrows *const *previous, const char *const *previous_names,
                         size_t n_previous, const struct ekrow *row,
                         struct listfile_conflict *ret) {
    const struct ekrow *hit = clash(list, row);
    const char *where = path;

    for (size_t i = 0; !hit && i < n_previous; i++) {
        hit = clash(previous[i], row);
        where = previous_names[i];
    }
    if (!hit)
        return 0;
    *ret = (struct listfile_conflict){
        .row = hit,
        .where = where,
        .same_device = strcmp(hit->derived_id, row->derived_id) == 0 &&
                       strcmp(hit->effective_id, row->effective_id) == 0 &&
                       same(hit->device_serial, row->device_serial),
    };
    return -EEXIST;
}

static int write_row(const char *path, int fd, enum ekrows_format f, bool header,
                     const struct ekrow *row) {
    _cleanup_free_ char *line = ekrows_format_row(row, f), *text = NULL;
    ssize_t n;

    if (!line || asprintf(&text, "%s%s", header ? ekrows_csv_header : "", line) < 0)
        return log_oom();
    /* One write() on an O_APPEND descriptor: the row lands whole at the end or not at all
     * (a crash inside it can leave a prefix, which the next append cuts off). */
    n = write(fd, text, strlen(text));
    if (n < 0)
        return log_error_errno(errno, "Cannot append to %s: %m", path);
    if ((size_t)n != strlen(text))
        return log_error_errno(EIO, "Short write to %s (%zd of %zu bytes); the half row is cut "
                               "off at the next append.", path, n, strlen(text));
    if (fsync(fd) < 0)
        return log_error_errno(errno, "Cannot flush %s to disk: %m", path);
    return 0;
}

int listfile_append(const char *path, enum ekrows_format format, const struct ekrow *row,
                    struct ekrows *const *previous, const char *const *previous_names,
                    size_t n_previous, struct ekrows *ret_list,
                    struct listfile_conflict *ret_conflict) {
    _cleanup_close_ int fd = -1;
    _cleanup_free_ char *data = NULL;
    size_t len;
    int r;

    fd = open(path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0644);
    if (fd < 0)
        return open_failed(path);
    if (flock(fd, LOCK_EX) < 0)
        return log_error_errno(errno, "Cannot lock the list %s: %m", secret_shown(path));
    r = read_all(fd, &data, &len);
    if (r < 0)
        return read_failed(path, r);
    r = parse_logged(path, data, len, ret_list);
    if (r < 0)
        return r;

    if (ret_list->format == EKROWS_FORMAT_EKLIST)
        return log_error_errno(EINVAL, "%s is a plain EK list, not a list 'ek' writes (CSV or "
                               "JSON lines).", path);
    if (ret_list->format != EKROWS_FORMAT_UNKNOWN && format != EKROWS_FORMAT_UNKNOWN &&
        ret_list->format != format)
        return log_error_errno(EINVAL, "%s is in %s, not %s.", path,
                               ekrows_format_to_string(ret_list->format),
                               ekrows_format_to_string(format));
    if (ret_list->format != EKROWS_FORMAT_UNKNOWN)
        format = ret_list->format;
    if (format == EKROWS_FORMAT_UNKNOWN)
        format = format_from_name(path);
    if (format == EKROWS_FORMAT_UNKNOWN)
        return log_error_errno(EINVAL, "Say --csv or --json for the new list %s.", path);

    for (size_t i = 0; i < ret_list->n_rows; i++)
        if (ekrows_check_row(&ret_list->rows[i]) == -ENOMEM)
            return log_oom();
    /* The new row is compared against every row already there; one that cannot be read could
     * be this very device, and a second row for it would enroll it twice. */
    for (size_t i = 0; i < ret_list->n_rows; i++)
        if (ret_list->rows[i].error)
            return log_error_errno(EINVAL, "%s, line %u: %s. A row that cannot be read may be "
                                   "this device's: fix or remove it first. Nothing was "
                                   "appended.", path, ret_list->rows[i].line,
                                   ret_list->rows[i].error);
    r = find_conflict(ret_list, path, previous, previous_names, n_previous, row, ret_conflict);
    if (r < 0)
        return r;
    /* Only a list that will take the row loses its half row: a refused one stays as it is. */
    r = repair_torn(path, fd, ret_list);
    if (r < 0)
        return r;
    return write_row(path, fd, format, ret_list->n_rows == 0 && format == EKROWS_FORMAT_CSV &&
                                           ret_list->format == EKROWS_FORMAT_UNKNOWN, row);
}
