/* SPDX-License-Identifier: MIT */
/* Small language helpers shared by every module. No dependency beyond libc. */
#pragma once

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))

static inline void freep(void *p) {
    free(*(void **)p);
}
#define _cleanup_free_ _cleanup_(freep)

static inline void closep(int *fd) {
    if (*fd >= 0)
        close(*fd);
}
#define _cleanup_close_ _cleanup_(closep)

/* Hands ownership of a pointer to the caller: the local variable no longer frees it. */
#define TAKE_PTR(p)                                                                                \
    ({                                                                                             \
        __typeof__(p) _p = (p);                                                                    \
        (p) = NULL;                                                                                \
        _p;                                                                                        \
    })

/* Defines freep-style helpers for a library's own free function. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)                                                    \
    static inline void func##p(type *p) {                                                          \
        if (*p)                                                                                    \
            func(*p);                                                                              \
    }

/* A file the user named that cannot be opened for a reason its name explains (missing, a
 * directory, no permission) is input to fix: -EINVAL, exit 2. Other errors stay what they are.
 * Call with the positive errno, after logging it. */
static inline int path_error(int error) {
    switch (error) {
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case EACCES:
    case ELOOP:
    case ENAMETOOLONG:
        return -EINVAL;
    default:
        return -error;
    }
}

static inline void secure_zero(void *p, size_t n) {
    if (p && n)
        explicit_bzero(p, n);
}
