/* SPDX-License-Identifier: MIT */
/*
 * The manufacturing list formats (agent/mfg/ekrows.h) and the checks enroll makes on every
 * row: field cases B04 (a structure dump instead of the marshaled EK), B05 (a registration ID
 * from the wrong bytes or encoding) and B06 (one EK or ID recorded twice). The EK is the
 * protocol document's test vector (section 4).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "mfg/ekrows.h"

#define EK_B64                                                                                     \
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAopqgkUBwtpr1" \
    "sCgVJcEZxsJtpmtOAt9K7SjGFe4hsp6DJ/dd2E5UFzBC+Jp8Fzqf5ukRBkqrAgIuAvHRsruIedk1uarJSLhbDpFLHxFd" \
    "7iDNcYfrvdgVNT2T9zrvkh2y04WuRQg2D5qf0tZF82jeTjR/YJK7uWhaRwWOwZ3b1XD9l6wFOrwK/Ic0PEsjneFXQzL0" \
    "n9uKyuHmHNz+wHppmOiMAabvnXXEin9ou7/iowY/+YhFm3j7atsVvxMI5HEM3Mq+W4imUuzPxVX7fZH+oWPKP5ofpWBT" \
    "f+MdttGby1AjGnv8JE69JriOYoZG2/4qbsfv9M7a7NFrBlaW7Rt36w=="
#define EK_ID "6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa"
/* The same key as a little-endian padded C structure (field case B04): 3a 01 00 00 01 00 0b 00 */
#define EK_DUMP_B64                                                                           \
    "OgEAAAEACwAAAwCyACCDcZdnRISz+BqQzI1Gpdck/VLXbgZSC2TyodobMxRpqgAGAIAAQwAQCAAAAAAAAQCimqCRQHC2" \
    "mvWwKBUlwRnGwm2ma04C30rtKMYV7iGynoMn913YTlQXMEL4mnwXOp/m6REGSqsCAi4C8dGyu4h52TW5qslIuFsOkUsf" \
    "EV3uIM1xh+u92BU1PZP3Ou+SHbLTha5FCDYPmp/S1kXzaN5ONH9gkru5aFpHBY7BndvVcP2XrAU6vAr8hzQ8SyOd4VdD" \
    "MvSf24rK4eYc3P7AemmY6IwBpu+ddcSKf2i7v+KjBj/5iEWbePtq2xW/EwjkcQzcyr5biKZS7M/FVft9kf6hY8o/mh+l" \
    "YFN/4x220ZvLUCMae/wkTr0muI5ihkbb/ipux+/0ztrs0WsGVpbtG3fr"
/* The ID of the bytes without their size prefix (a B05 mistake): right shape, wrong value. */
#define EK_ID_NO_PREFIX "u47axo"

#define HEADER "registrationId,endorsementKey,ekCertSerial,ekCertSha256,deviceSerial,time\n"
#define SHA "206fb64cbe47e27ad4171e49d917d5b2eab07c7c13d46bffbaad991234c1678f"

static struct ekrows parse_ok(const char *text) {
    struct ekrows l;
    const char *why = NULL;

    assert_int_equal(ekrows_parse(text, strlen(text), &l, &why), 0);
    for (size_t i = 0; i < l.n_rows; i++)
        ekrows_check_row(&l.rows[i]);
    return l;
}

static void test_csv_row_checks_and_derives_the_id(void **state) {
    struct ekrows l = parse_ok(HEADER EK_ID "," EK_B64 ",02," SHA ",SN-1,2026-01-01T00:00:00Z\n"
                                            "\n," EK_B64 ",,,SN-2,\r\n");
    (void)state;

    assert_int_equal(l.format, EKROWS_FORMAT_CSV);
    assert_int_equal(l.n_rows, 2);
    assert_false(l.torn);
    assert_null(l.rows[0].error);
    assert_int_equal(l.rows[0].line, 2);
    assert_string_equal(l.rows[0].effective_id, EK_ID);
    assert_string_equal(l.rows[0].ek_cert_sha256, SHA);
    assert_int_equal(l.rows[0].ek_len, 316);
    assert_false(l.rows[0].custom_id);
    /* Empty fields are absent; no registrationId means the derived one. */
    assert_null(l.rows[1].error);
    assert_int_equal(l.rows[1].line, 4);
    assert_null(l.rows[1].registration_id);
    assert_string_equal(l.rows[1].effective_id, EK_ID);
    assert_null(l.rows[1].time);
    ekrows_done(&l);
}

static void test_json_lines_and_ek_list(void **state) {
    struct ekrows l = parse_ok("{\"endorsementKey\": \"" EK_B64 "\", \"deviceSerial\": \"A-1\", "
                               "\"ekCertSerial\": null, \"extra\": 5}\n{\"endorsementKey\": 7}\n"
                               "[1]\n");
    (void)state;

    assert_int_equal(l.format, EKROWS_FORMAT_JSON);
    assert_int_equal(l.n_rows, 3);
    assert_null(l.rows[0].error);
    assert_string_equal(l.rows[0].device_serial, "A-1");
    assert_string_equal(l.rows[0].effective_id, EK_ID);
    assert_string_equal(l.rows[1].error, "endorsementKey is not a string");
    assert_non_null(l.rows[2].error);
    ekrows_done(&l);

    l = parse_ok("# maker's list, lot 7\n\n" EK_B64 "\n  # another comment\n" EK_B64 " x\n");
    assert_int_equal(l.format, EKROWS_FORMAT_EKLIST);
    assert_int_equal(l.n_rows, 2);
    assert_null(l.rows[0].error);
    assert_int_equal(l.rows[0].line, 3);
    assert_string_equal(l.rows[0].effective_id, EK_ID);
    assert_non_null(l.rows[1].error);
    ekrows_done(&l);
}

static void test_half_row_at_the_end_is_left_out(void **state) {
    const char text[] = HEADER EK_ID "," EK_B64 ",,,SN-1,2026-01-01T00:00:00Z\n" EK_ID ",AToA";
    struct ekrows l = parse_ok(text);
    (void)state;

    assert_int_equal(l.n_rows, 1);
    assert_true(l.torn);
    assert_int_equal(l.torn_line, 3);
    assert_int_equal(l.torn_offset, strlen(text) - strlen(EK_ID ",AToA"));
    ekrows_done(&l);
}

static void test_list_level_refusals(void **state) {
    static const char *const bad[] = {
        "registrationId,deviceSerial\nx,y\n",                 /* no endorsementKey column */
        "endorsementKey,endorsementKey\nx,y\n",               /* a repeated column */
        "endorsementKey\n\0\n",                               /* NUL bytes */
    };
    static const size_t lens[] = {33, 30, 17};
    (void)state;

    for (size_t i = 0; i < 3; i++) {
        struct ekrows l;
        const char *why = NULL;
        assert_int_equal(ekrows_parse(bad[i], lens[i], &l, &why), -EBADMSG);
        assert_non_null(why);
    }
}

/* A misspelt column would be ignored like a column of the line's own, its values dropped:
 * within two edits of one this program reads (case aside), it is refused and named. */
static void test_misspelt_csv_columns_are_named(void **state) {
    static const struct {
        const char *text, *why;
    } cases[] = {
        {"registratonId,endorsementKey\n", "'registratonId' is not one this program reads; did "
                                           "you mean 'registrationId'?"},
        {"endorsementkey,deviceSerial\n", "did you mean 'endorsementKey'?"},
        {"endorsementKey,devcieSerial\n", "did you mean 'deviceSerial'?"},
        {"endorsementKey,Time\n", "did you mean 'time'?"},
        {"id,key\n", "the columns 'tpm-provision ek' writes are registrationId,endorsementKey,"},
    };
    (void)state;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct ekrows l;
        const char *why = NULL;
        assert_int_equal(ekrows_parse(cases[i].text, strlen(cases[i].text), &l, &why), -EBADMSG);
        assert_non_null(strstr(why, cases[i].why));
    }
    /* The line's own columns, far from any of these, stay allowed and ignored. */
    struct ekrows l;
    const char *why = NULL;
    assert_int_equal(ekrows_parse("endorsementKey,stationId,operator\n", 34, &l, &why), 0);
    ekrows_done(&l);
}

static void test_csv_row_refusals(void **state) {
    struct ekrows l = parse_ok(HEADER EK_ID "," EK_B64 ",,,SN-1\n"
                               "\"" EK_ID "\"," EK_B64 ",,,SN-1,\n"
                               EK_ID "," EK_B64 ",,,SN 1,\n"
                               EK_ID "," EK_B64 ",,ABC,SN-1,\n"
                               EK_ID "," EK_B64 ",,,SN-1,yesterday\n"
                               EK_ID "," EK_B64 "x,,,SN-1,\n");
    (void)state;

    assert_int_equal(l.n_rows, 6);
    assert_string_equal(l.rows[0].error, "5 fields where the header has 6");
    assert_non_null(strstr(l.rows[1].error, "quoted"));
    assert_non_null(strstr(l.rows[2].error, "deviceSerial 'SN 1' is invalid"));
    assert_non_null(strstr(l.rows[3].error, "ekCertSha256"));
    assert_non_null(strstr(l.rows[4].error, "time"));
    assert_non_null(strstr(l.rows[5].error, "not strict base64"));
    ekrows_done(&l);
}

static void test_b04_structure_dump_refused_with_the_reason(void **state) {
    struct ekrows l = parse_ok(EK_DUMP_B64 "\n");
    (void)state;

    assert_int_equal(l.n_rows, 1);
    assert_non_null(l.rows[0].error);
    assert_non_null(strstr(l.rows[0].error, "not the marshaled TPM2B_PUBLIC"));
    assert_non_null(strstr(l.rows[0].error, "little-endian C structure dump (field case B04)"));
    ekrows_done(&l);
}

static void test_b05_registration_id_rules(void **state) {
    char upper[] = EK_ID, wrong[] = EK_ID, long_id[131];
    char text[4096];
    struct ekrows l;
    (void)state;

    for (char *p = upper; *p; p++)
        *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    memcpy(wrong, EK_ID_NO_PREFIX, 6); /* same shape, other bytes hashed */
    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    snprintf(text, sizeof(text), HEADER "%s,%s,,,S1,\n%s,%s,,,S2,\n%s=,%s,,,S3,\nDevice_01,%s,,,S4,\n"
             "%s,%s,,,S5,\nline7-device-0001,%s,,,S6,\n",
             wrong, EK_B64, upper, EK_B64, EK_ID, EK_B64, EK_B64, long_id, EK_B64, EK_B64);
    l = parse_ok(text);

    assert_int_equal(l.n_rows, 6);
    assert_non_null(strstr(l.rows[0].error, "is not the one derived from this EK (" EK_ID ")"));
    assert_non_null(strstr(l.rows[0].error, "B05"));
    assert_non_null(strstr(l.rows[1].error, "DPS allows only lowercase"));
    assert_non_null(strstr(l.rows[2].error, "DPS allows only lowercase"));
    assert_non_null(strstr(l.rows[3].error, "'Device_01' is invalid"));
    assert_non_null(strstr(l.rows[4].error, "longer than 128"));
    assert_null(l.rows[5].error); /* a deliberate override that follows DPS's rules */
    assert_true(l.rows[5].custom_id);
    assert_string_equal(l.rows[5].effective_id, "line7-device-0001");
    assert_string_equal(l.rows[5].derived_id, EK_ID);
    ekrows_done(&l);
}

static void test_b06_duplicates_within_and_across_lists(void **state) {
    struct ekrows prev = parse_ok(EK_B64 "\n");
    struct ekrows cur = parse_ok(HEADER "custom-1," EK_B64 ",,,S1,\n");
    struct ekrows self = parse_ok(HEADER "," EK_B64 ",,,S1,\n," EK_B64 ",,,S2,\n");
    struct ekrows *lists[] = {&prev, &cur};
    const char *names[] = {"maker.txt", "line.csv"};
    struct ekrows *one[] = {&self};
    (void)state;

    assert_int_equal(ekrows_mark_duplicates(lists, names, 2, 1), 1);
    assert_null(prev.rows[0].error); /* earlier batches are only compared against */
    assert_string_equal(cur.rows[0].error, "EK already in the earlier batch maker.txt:1 (field "
                                           "case B06: a stale capture or a duplicated TPM?)");

    assert_int_equal(ekrows_mark_duplicates(one, names + 1, 1, 0), 1);
    assert_null(self.rows[0].error);
    assert_non_null(strstr(self.rows[1].error, "EK already in line.csv:2"));
    assert_ptr_equal(ekrows_find(&self, EK_ID, NULL), &self.rows[0]);
    assert_null(ekrows_find(&self, "x", "y"));
    ekrows_done(&prev);
    ekrows_done(&cur);
    ekrows_done(&self);
}

static void test_written_rows_read_back(void **state) {
    struct ekrow row = {.registration_id = (char *)EK_ID, .endorsement_key = (char *)EK_B64,
                        .ek_cert_serial = (char *)"02", .ek_cert_sha256 = (char *)SHA,
                        .device_serial = (char *)"SN-9", .time = (char *)"2026-01-02T03:04:05Z"};
    (void)state;

    for (int f = EKROWS_FORMAT_CSV; f <= EKROWS_FORMAT_JSON; f++) {
        char *line = ekrows_format_row(&row, (enum ekrows_format)f), *text;
        struct ekrows l;
        assert_non_null(line);
        assert_int_equal(line[strlen(line) - 1], '\n');
        assert_true(asprintf(&text, "%s%s", f == EKROWS_FORMAT_CSV ? HEADER : "", line) > 0);
        l = parse_ok(text);
        assert_int_equal(l.format, f);
        assert_int_equal(l.n_rows, 1);
        assert_null(l.rows[0].error);
        assert_string_equal(l.rows[0].ek_cert_serial, "02");
        assert_string_equal(l.rows[0].device_serial, "SN-9");
        assert_string_equal(l.rows[0].time, "2026-01-02T03:04:05Z");
        ekrows_done(&l);
        free(text);
        free(line);
    }
}

static void test_serials(void **state) {
    (void)state;

    assert_int_equal(ekrows_serial_valid("SN-0001/A_b.c", NULL), 0);
    assert_int_equal(ekrows_serial_valid("", NULL), -EINVAL);
    assert_int_equal(ekrows_serial_valid("a,b", NULL), -EINVAL);
    assert_int_equal(ekrows_serial_valid("a\"b", NULL), -EINVAL);
    assert_int_equal(ekrows_serial_valid("caf\xc3\xa9", NULL), -EINVAL);
    assert_true(ekrows_serial_is_placeholder("To Be Filled By O.E.M."));
    assert_true(ekrows_serial_is_placeholder("default string"));
    assert_true(ekrows_serial_is_placeholder("0000000"));
    assert_false(ekrows_serial_is_placeholder("PF3X9K2L"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_row_checks_and_derives_the_id),
        cmocka_unit_test(test_json_lines_and_ek_list),
        cmocka_unit_test(test_half_row_at_the_end_is_left_out),
        cmocka_unit_test(test_list_level_refusals),
        cmocka_unit_test(test_misspelt_csv_columns_are_named),
        cmocka_unit_test(test_csv_row_refusals),
        cmocka_unit_test(test_b04_structure_dump_refused_with_the_reason),
        cmocka_unit_test(test_b05_registration_id_rules),
        cmocka_unit_test(test_b06_duplicates_within_and_across_lists),
        cmocka_unit_test(test_written_rows_read_back),
        cmocka_unit_test(test_serials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
