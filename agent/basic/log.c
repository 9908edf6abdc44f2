/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int max_level = LOG_INFO;

void log_set_max_level(int level) {
    max_level = level;
}

int log_get_max_level(void) {
    return max_level;
}

int log_internal(int level, int error, const char *func, const char *fmt, ...) {
    int saved_errno = errno;
    error = abs(error);

    if (level <= max_level) {
        char line[2048];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        if (max_level >= LOG_DEBUG)
            fprintf(stderr, "<%d>%s: %s\n", level, func, line);
        else
            fprintf(stderr, "<%d>%s\n", level, line);
    }

    errno = saved_errno;
    return -error;
}
