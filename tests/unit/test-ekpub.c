/* SPDX-License-Identifier: MIT */
/*
 * EK public export and registration ID, against the test vector of the protocol document
 * (section 4): the endorsementKey posted in azure-iot-sdk-c#271. Field cases B04 and B05.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <openssl/evp.h>

#include "tpm/ekpub.h"

static const char vector_b64[] =
    "AToAAQALAAMAsgAgg3GXZ0SEs/gakMyNRqXXJP1S124GUgtk8qHaGzMUaaoABgCAAEMAEAgAAAAAAAEAopqgkUBwtpr1"
    "sCgVJcEZxsJtpmtOAt9K7SjGFe4hsp6DJ/dd2E5UFzBC+Jp8Fzqf5ukRBkqrAgIuAvHRsruIedk1uarJSLhbDpFLHxFd"
    "7iDNcYfrvdgVNT2T9zrvkh2y04WuRQg2D5qf0tZF82jeTjR/YJK7uWhaRwWOwZ3b1XD9l6wFOrwK/Ic0PEsjneFXQzL0"
    "n9uKyuHmHNz+wHppmOiMAabvnXXEin9ou7/iowY/+YhFm3j7atsVvxMI5HEM3Mq+W4imUuzPxVX7fZH+oWPKP5ofpWBT"
    "f+MdttGby1AjGnv8JE69JriOYoZG2/4qbsfv9M7a7NFrBlaW7Rt36w==";
static const char vector_regid[] = "6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa";

static uint8_t ek[512];
static size_t ek_len;

static int setup(void **state) {
    (void)state;
    int n = EVP_DecodeBlock(ek, (const unsigned char *)vector_b64, (int)strlen(vector_b64));
    assert_true(n > 0);
    ek_len = (size_t)n - 2; /* EVP_DecodeBlock counts the two '=' pad bytes */
    return 0;
}

static void test_vector_is_a_316_byte_tpm2b_public(void **state) {
    TPM2B_PUBLIC pub;
    (void)state;

    assert_int_equal(ek_len, 316);
    assert_int_equal(ekpub_validate(ek, ek_len, &pub, NULL), 0);
    assert_int_equal(pub.publicArea.type, TPM2_ALG_RSA);
    assert_int_equal(pub.publicArea.objectAttributes, 0x000300b2);
}

static void test_registration_id_matches_vector(void **state) {
    char id[EKPUB_REGISTRATION_ID_LEN + 1];
    (void)state;

    ekpub_registration_id(ek, ek_len, id);
    assert_string_equal(id, vector_regid);
    assert_int_equal(ekpub_registration_id_valid(id, NULL), 0);
}

static void test_marshal_roundtrip_is_byte_exact(void **state) {
    TPM2B_PUBLIC pub;
    uint8_t again[EKPUB_MAX_SIZE];
    size_t len;
    (void)state;

    assert_int_equal(ekpub_validate(ek, ek_len, &pub, NULL), 0);
    assert_int_equal(ekpub_marshal(&pub, again, sizeof(again), &len), 0);
    assert_int_equal(len, ek_len);
    assert_memory_equal(again, ek, ek_len);
}

/* B05: the ID comes from the marshaled bytes with their size prefix, nothing else. */
static void test_b05_wrong_inputs_give_other_ids(void **state) {
    char id[EKPUB_REGISTRATION_ID_LEN + 1];
    (void)state;

    ekpub_registration_id(ek + 2, ek_len - 2, id); /* without the size prefix */
    assert_string_not_equal(id, vector_regid);
    assert_memory_equal(id, "u47axo", 6); /* the wrong ID the protocol document names */

    ekpub_registration_id((const uint8_t *)vector_b64, strlen(vector_b64), id); /* base64 text */
    assert_string_not_equal(id, vector_regid);
}

static void test_b05_registration_id_rules(void **state) {
    char long_id[130];
    const char *why = NULL;
    (void)state;

    assert_int_equal(ekpub_registration_id_valid("device-01.a_b:c", NULL), 0);
    assert_int_equal(ekpub_registration_id_valid("Device_01", &why), -EINVAL);
    assert_non_null(why);
    assert_int_equal(ekpub_registration_id_valid("6REK5QNCNYGNKZFLOHXZ4U6ZLFLY6KTM4KLSC7XRBGVESQYLLNFA", NULL), -EINVAL);
    assert_int_equal(ekpub_registration_id_valid("6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa====", NULL), -EINVAL);
    assert_int_equal(ekpub_registration_id_valid("", NULL), -EINVAL);
    memset(long_id, 'a', 129);
    long_id[129] = '\0';
    assert_int_equal(ekpub_registration_id_valid(long_id, NULL), -EINVAL);
    long_id[128] = '\0';
    assert_int_equal(ekpub_registration_id_valid(long_id, NULL), 0);
}

/* B04: a little-endian, padded C-structure dump (as old tpm2_getpubek -f wrote) is refused. */
static void test_b04_struct_dump_rejected(void **state) {
    uint8_t dump[sizeof(TPM2B_PUBLIC)];
    const char *why = NULL;
    (void)state;

    memset(dump, 0, sizeof(dump));
    memcpy(dump, "\x3a\x01\x00\x00\x01\x00\x0b\x00\xb2\x00\x03\x00", 12);
    assert_int_equal(ekpub_validate(dump, sizeof(dump), NULL, &why), -EBADMSG);
    assert_non_null(why);
    assert_non_null(strstr(why, "size prefix"));
}

static void test_b04_damaged_inputs_rejected(void **state) {
    uint8_t buf[600];
    (void)state;

    assert_int_equal(ekpub_validate(ek, 1, NULL, NULL), -EBADMSG);
    assert_int_equal(ekpub_validate(ek, ek_len - 1, NULL, NULL), -EBADMSG); /* truncated */
    memcpy(buf, ek, ek_len);
    buf[ek_len] = 0;
    assert_int_equal(ekpub_validate(buf, ek_len + 1, NULL, NULL), -EBADMSG); /* trailing byte */
    memcpy(buf, ek, ek_len);
    buf[4] = 0x04; /* nameAlg SHA-1 */
    assert_int_equal(ekpub_validate(buf, ek_len, NULL, NULL), -EBADMSG);
    memcpy(buf, ek, ek_len);
    buf[3] = 0x08; /* type KEYEDHASH */
    assert_int_equal(ekpub_validate(buf, ek_len, NULL, NULL), -EBADMSG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_is_a_316_byte_tpm2b_public),
        cmocka_unit_test(test_registration_id_matches_vector),
        cmocka_unit_test(test_marshal_roundtrip_is_byte_exact),
        cmocka_unit_test(test_b05_wrong_inputs_give_other_ids),
        cmocka_unit_test(test_b05_registration_id_rules),
        cmocka_unit_test(test_b04_struct_dump_rejected),
        cmocka_unit_test(test_b04_damaged_inputs_rejected),
    };
    return cmocka_run_group_tests_name("ekpub", tests, setup, NULL);
}
