/* SPDX-License-Identifier: MIT */
/* Logging: priority prefixes, errno returns, and the structured journal events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "basic/log.h"

static char sent[16][256];
static int sent_count = -1;

/* Linked in place of libsystemd's function (-Wl,--wrap, test-log.ldflags). */
int __wrap_sd_journal_sendv(const struct iovec *iov, int n) {
    sent_count = n;
    for (int i = 0; i < n && i < 16; i++)
        snprintf(sent[i], sizeof(sent[i]), "%.*s", (int)iov[i].iov_len,
                 (const char *)iov[i].iov_base);
    return 0;
}

static void point_journal_stream_at_stderr(bool match) {
    struct stat st;
    char buf[64];

    assert_int_equal(fstat(STDERR_FILENO, &st), 0);
    snprintf(buf, sizeof(buf), "%llu:%llu", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino + (match ? 0 : 1));
    setenv("JOURNAL_STREAM", buf, 1);
}

static void test_event_sent_with_message_id_and_fields_when_stderr_is_the_journal(void **state) {
    (void)state;
    point_journal_stream_at_stderr(true);
    sent_count = -1;

    log_event(LOG_EVENT_PROVISIONED, LOG_NOTICE, "Provisioned: hub h, device d.",
              (const char *const[]){"TPM_PROVISION_HUB=h", "TPM_PROVISION_DEVICE_ID=d", NULL});

    assert_int_equal(sent_count, 6);
    assert_string_equal(sent[0], "MESSAGE_ID=" LOG_EVENT_PROVISIONED);
    assert_string_equal(sent[1], "PRIORITY=5");
    assert_string_equal(sent[2], "MESSAGE=Provisioned: hub h, device d.");
    assert_string_equal(sent[3], "SYSLOG_IDENTIFIER=tpm-provision");
    assert_string_equal(sent[4], "TPM_PROVISION_HUB=h");
    assert_string_equal(sent[5], "TPM_PROVISION_DEVICE_ID=d");
}

static void test_no_event_when_stderr_is_not_the_journal(void **state) {
    (void)state;
    sent_count = -1;
    point_journal_stream_at_stderr(false);
    log_event(LOG_EVENT_DPS_REFUSED, LOG_ERR, "x", NULL);
    assert_int_equal(sent_count, -1);
    unsetenv("JOURNAL_STREAM");
    log_event(LOG_EVENT_DPS_REFUSED, LOG_ERR, "x", NULL);
    assert_int_equal(sent_count, -1);
}

static void test_message_ids_are_distinct_128_bit_hex(void **state) {
    const char *ids[] = {LOG_EVENT_PROVISIONED, LOG_EVENT_DPS_REFUSED, LOG_EVENT_TPM_UNUSABLE,
                         LOG_EVENT_EK_PERSISTED};
    (void)state;

    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(strlen(ids[i]), 32);
        assert_int_equal(strspn(ids[i], "0123456789abcdef"), 32);
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
}

static void test_errno_return_and_level_filter(void **state) {
    (void)state;
    log_set_max_level(LOG_ERR);
    assert_int_equal(log_error_errno(EACCES, "refused"), -EACCES);
    assert_int_equal(log_error_errno(-EIO, "negative in, negative out"), -EIO);
    assert_int_equal(log_info("filtered"), 0);
    log_set_max_level(LOG_INFO);
}

/* What log_error_errno writes to stderr, read back through a temporary file. */
static void capture_line(void (*emit)(void), char *out, size_t size) {
    char path[] = "/tmp/test-log-XXXXXX";
    int fd = mkstemp(path), saved = dup(STDERR_FILENO);
    FILE *f;

    assert_true(fd >= 0 && saved >= 0);
    fflush(stderr);
    dup2(fd, STDERR_FILENO);
    emit();
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
    close(saved);
    f = fdopen(fd, "r");
    rewind(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
    unlink(path);
}

static void emit_percent_m(void) {
    errno = ENOENT; /* left behind by an earlier call */
    assert_int_equal(log_error_errno(EISDIR, "Cannot read x: %m"), -EISDIR);
    assert_int_equal(errno, ENOENT);
}

static void emit_forged_line(void) {
    log_error("DPS said: nope\n<5>Provisioned: hub evil\r\x1b[2J.");
}

static void test_percent_m_is_the_error_given_and_control_characters_cannot_start_a_line(
    void **state) {
    char out[512];
    (void)state;
    log_set_max_level(LOG_INFO);

    capture_line(emit_percent_m, out, sizeof(out));
    assert_string_equal(out, "<3>Cannot read x: Is a directory\n");
    /* A newline from outside must not become a message of its own (field case: log forging
     * by a DPS impostor's errorMessage). */
    capture_line(emit_forged_line, out, sizeof(out));
    assert_string_equal(out, "<3>DPS said: nope?<5>Provisioned: hub evil??[2J.\n");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_sent_with_message_id_and_fields_when_stderr_is_the_journal),
        cmocka_unit_test(test_no_event_when_stderr_is_not_the_journal),
        cmocka_unit_test(test_message_ids_are_distinct_128_bit_hex),
        cmocka_unit_test(test_errno_return_and_level_filter),
        cmocka_unit_test(test_percent_m_is_the_error_given_and_control_characters_cannot_start_a_line),
    };
    return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
