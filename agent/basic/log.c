/* SPDX-License-Identifier: MIT */
#include "log.h"

#include <stdbool.h>
#include <unistd.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
/* No CODE_FILE/CODE_LINE fields: the MESSAGE_ID says what happened. */
#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

static int max_level = LOG_INFO;

/* The <N> prefix is for journald (and syslog-style readers of a pipe). A person at a terminal
 * reads the words instead, and only where the level matters. */
static const char *level_prefix(int level, char buf[static 8]) {
    static int terminal = -1;

    if (terminal < 0)
        terminal = isatty(STDERR_FILENO);
    if (!terminal) {
        snprintf(buf, 8, "<%d>", level);
        return buf;
    }
    return level <= LOG_ERR ? "error: " : level == LOG_WARNING ? "warning: " : "";
}

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

        /* %m says the error being reported, not whatever errno was left behind. */
        if (error)
            errno = error;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        /* Messages carry text from outside (DPS's answers, file names): a newline in it would
         * start a line of its own, which the journal takes for a message of the agent's. */
        for (char *p = line; *p; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f)
                *p = '?';
        char buf[8];
        const char *prefix = level_prefix(level, buf);
        if (max_level >= LOG_DEBUG)
            fprintf(stderr, "%s%s: %s\n", prefix, func, line);
        else
            fprintf(stderr, "%s%s\n", prefix, line);
    }

    errno = saved_errno;
    return -error;
}

/* stderr is the journal when $JOURNAL_STREAM names its device and inode (systemd.exec(5)). */
static bool stderr_is_journal(void) {
    const char *e = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;

    if (!e || sscanf(e, "%llu:%llu", &dev, &ino) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return false;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void log_event(const char *message_id, int priority, const char *message, const char *const *fields) {
    struct iovec iov[16];
    char id[64], prio[16], *msg = NULL;
    size_t n = 0;

    if (!stderr_is_journal())
        return;
    snprintf(id, sizeof(id), "MESSAGE_ID=%s", message_id);
    snprintf(prio, sizeof(prio), "PRIORITY=%d", priority);
    if (asprintf(&msg, "MESSAGE=%s", message) < 0)
        return;
    iov[n++] = (struct iovec){id, strlen(id)};
    iov[n++] = (struct iovec){prio, strlen(prio)};
    iov[n++] = (struct iovec){msg, strlen(msg)};
    iov[n++] = (struct iovec){"SYSLOG_IDENTIFIER=tpm-provision", 31};
    for (size_t i = 0; fields && fields[i] && n < sizeof(iov) / sizeof(iov[0]); i++)
        iov[n++] = (struct iovec){(void *)fields[i], strlen(fields[i])};
    sd_journal_sendv(iov, (int)n);
    free(msg);
}
