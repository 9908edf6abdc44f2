/* SPDX-License-Identifier: MIT */
#include "secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "macro.h"

int secret_read_file(const char *path, size_t max, uint8_t *ret_buf, size_t *ret_size) {
    _cleanup_close_ int fd = -1;
    uint8_t buf[512];
    struct stat st;
    ssize_t n;
    size_t size = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (S_ISDIR(st.st_mode))
        return -EISDIR;
    if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
        return -EINVAL;
    if (S_ISREG(st.st_mode) && (st.st_mode & 0077))
        log_warning("Secret file %s can be read by other users (mode %04o); make it 0600 or 0400.",
                    path, (unsigned)(st.st_mode & 07777));

    while ((n = read(fd, buf + size, sizeof(buf) - size)) > 0) {
        size += (size_t)n;
        if (size == sizeof(buf))
            break;
    }
    if (n < 0) {
        int r = -errno;
        secure_zero(buf, sizeof(buf));
        return r;
    }

    if (size > 0 && buf[size - 1] == '\n')
        size--;
    if (size > max) {
        secure_zero(buf, sizeof(buf));
        return -E2BIG;
    }

    memcpy(ret_buf, buf, size);
    *ret_size = size;
    secure_zero(buf, sizeof(buf));
    return 0;
}

int secret_credential_path(const char *name, char **ret_path) {
    const char *dir = getenv("CREDENTIALS_DIRECTORY");
    char *path;

    if (!dir || !*dir)
        return -ENOENT;
    if (asprintf(&path, "%s/%s", dir, name) < 0)
        return -ENOMEM;
    if (access(path, F_OK) < 0) {
        free(path);
        return -ENOENT;
    }
    *ret_path = path;
    return 0;
}

bool secret_looks_like_credential(const char *s) {
    return s && (strcasestr(s, "SharedAccessKey=") || strcasestr(s, "SharedAccessSignature") ||
                 strcasestr(s, "&sig=") || strncasecmp(s, "sig=", 4) == 0);
}

const char *secret_shown(const char *s) {
    return secret_looks_like_credential(s) ? "(a connection string or token, not shown)" : s;
}
