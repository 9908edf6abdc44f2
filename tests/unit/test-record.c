/* SPDX-License-Identifier: MIT */
/* The NV state record: encoding, decoding of damaged and truncated input, slot choice. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>

#include "state/record.h"

static struct record sample(uint32_t seq) {
    struct record r = {
        .sequence = seq,
        .state = RECORD_ASSIGNED,
        .identity_handle = 0x81000100,
        .changed_at = 1796300000,
        .dps_error = -5,
        .identity_name_size = 34,
    };
    strcpy(r.id_scope, "0ne00000001");
    strcpy(r.registration_id, "6rek5qncnygnkzflohxz4u6zlfly6ktm4klsc7xrbgvesqyllnfa");
    strcpy(r.hub, "emulated-hub.azure-devices.net");
    strcpy(r.device_id, "device-x");
    for (int i = 0; i < 34; i++)
        r.identity_name[i] = (uint8_t)i;
    return r;
}

static void test_roundtrip(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(7), out;
    (void)state;

    assert_int_equal(record_encode(&in, slot), 0);
    assert_int_equal(record_decode(slot, &out), 0);
    assert_memory_equal(&in, &out, sizeof(in));
}

/* The documented layout (docs/state-record.md), byte for byte where it is fixed. */
static void test_layout(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(0x01020304);
    (void)state;

    assert_int_equal(record_encode(&in, slot), 0);
    assert_memory_equal(slot, "TPPS\x01\x00", 6);
    assert_memory_equal(slot + 8, "\x01\x02\x03\x04", 4);
    assert_int_equal(slot[12], RECORD_ASSIGNED);
    assert_memory_equal(slot + 14, "\x81\x00\x01\x00", 4);
    assert_memory_equal(slot + 26, "\xff\xff\xff\xfb", 4); /* dps_error -5 */
    assert_int_equal(slot[30], 11);
    assert_memory_equal(slot + 31, "0ne00000001", 11);
    size_t payload = (size_t)slot[6] << 8 | slot[7];
    /* Everything after payload and digest is zero. */
    for (size_t i = 12 + payload + 32; i < RECORD_SLOT_SIZE; i++)
        assert_int_equal(slot[i], 0);
}

static void test_every_single_byte_flip_is_detected(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE], bad[RECORD_SLOT_SIZE];
    struct record in = sample(3), out;
    (void)state;

    assert_int_equal(record_encode(&in, slot), 0);
    size_t used = 12 + ((size_t)slot[6] << 8 | slot[7]) + 32;
    for (size_t i = 0; i < used; i++) {
        memcpy(bad, slot, sizeof(bad));
        bad[i] ^= 0x01;
        int r = record_decode(bad, &out);
        assert_true(r == -EBADMSG || r == -ENODATA);
    }
}

/* A torn write: the first part of the slot new, the rest still the old bytes or zeros. */
static void test_truncated_write_is_detected(void **state) {
    uint8_t old[RECORD_SLOT_SIZE], new[RECORD_SLOT_SIZE], torn[RECORD_SLOT_SIZE];
    struct record a = sample(1), b = sample(2), out;
    (void)state;

    strcpy(b.hub, "another-hub.azure-devices.net");
    assert_int_equal(record_encode(&a, old), 0);
    assert_int_equal(record_encode(&b, new), 0);
    for (size_t cut = 1; cut < RECORD_SLOT_SIZE; cut += 7) {
        memcpy(torn, new, cut);
        memcpy(torn + cut, old + cut, RECORD_SLOT_SIZE - cut);
        int r = record_decode(torn, &out);
        /* Exactly the new record, exactly the old one (the torn part changed no byte that
         * differs), or refused: never a mixture. */
        if (r == 0)
            assert_true(memcmp(&out, &b, sizeof(b)) == 0 || memcmp(&out, &a, sizeof(a)) == 0);
        else
            assert_int_equal(r, -EBADMSG);
        memset(torn + cut, 0, RECORD_SLOT_SIZE - cut);
        r = record_decode(torn, &out);
        assert_true(r == 0 || r == -EBADMSG);
    }
}

static void test_empty_slots(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record out;
    (void)state;

    memset(slot, 0, sizeof(slot));
    assert_int_equal(record_decode(slot, &out), -ENODATA);
    memset(slot, 0xff, sizeof(slot));
    assert_int_equal(record_decode(slot, &out), -ENODATA);
}

static void test_newer_version_refused(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(1), out;
    (void)state;

    assert_int_equal(record_encode(&in, slot), 0);
    slot[4] = RECORD_VERSION + 1;
    /* The checksum covers the version byte, so recompute it as a newer writer would. */
    size_t len = 12 + ((size_t)slot[6] << 8 | slot[7]);
    extern unsigned char *SHA256(const unsigned char *, size_t, unsigned char *);
    SHA256(slot, len, slot + len);
    assert_int_equal(record_decode(slot, &out), -EPROTONOSUPPORT);
}

static void test_too_long_fields_refused(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(1);
    (void)state;

    memset(in.id_scope, 'x', RECORD_ID_SCOPE_MAX + 1);
    in.id_scope[RECORD_ID_SCOPE_MAX + 1 - 1] = '\0';
    assert_int_equal(record_encode(&in, slot), 0);
    /* identity_name_size beyond the maximum */
    in = sample(1);
    in.identity_name_size = RECORD_NAME_MAX + 1;
    assert_int_equal(record_encode(&in, slot), -E2BIG);
}

static void test_largest_record_fits(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(9), out;
    (void)state;

    memset(in.id_scope, 's', RECORD_ID_SCOPE_MAX);
    in.id_scope[RECORD_ID_SCOPE_MAX] = '\0';
    memset(in.registration_id, 'r', RECORD_REGISTRATION_ID_MAX);
    in.registration_id[RECORD_REGISTRATION_ID_MAX] = '\0';
    memset(in.hub, 'h', RECORD_HUB_MAX);
    in.hub[RECORD_HUB_MAX] = '\0';
    memset(in.device_id, 'd', RECORD_DEVICE_ID_MAX);
    in.device_id[RECORD_DEVICE_ID_MAX] = '\0';
    assert_int_equal(record_encode(&in, slot), 0);
    assert_int_equal(record_decode(slot, &out), 0);
    assert_memory_equal(&in, &out, sizeof(in));
}

static void test_pick_newest_and_survive_a_torn_slot(void **state) {
    uint8_t image[RECORD_INDEX_SIZE];
    struct record a = sample(5), b = sample(6), out;
    unsigned slot;
    (void)state;

    memset(image, 0, sizeof(image));
    assert_int_equal(record_pick(image, &out, &slot), -ENODATA);

    assert_int_equal(record_encode(&a, image), 0);
    assert_int_equal(record_pick(image, &out, &slot), 0);
    assert_int_equal(slot, 0);
    assert_int_equal(record_next_slot((int)slot), 1);

    assert_int_equal(record_encode(&b, image + RECORD_SLOT_SIZE), 0);
    assert_int_equal(record_pick(image, &out, &slot), 0);
    assert_int_equal(slot, 1);
    assert_int_equal(out.sequence, 6);

    /* The write of sequence 7 into slot 0 is torn: sequence 6 is still there. */
    image[40] ^= 0x55;
    assert_int_equal(record_pick(image, &out, &slot), 0);
    assert_int_equal(out.sequence, 6);

    /* Both damaged: reported as damage, not as "no record". */
    image[RECORD_SLOT_SIZE + 40] ^= 0x55;
    assert_int_equal(record_pick(image, &out, &slot), -EBADMSG);
}

static void test_sequence_wraps(void **state) {
    uint8_t image[RECORD_INDEX_SIZE];
    struct record a = sample(0xffffffff), b = sample(0), out;
    unsigned slot;
    (void)state;

    assert_int_equal(record_encode(&a, image), 0);
    assert_int_equal(record_encode(&b, image + RECORD_SLOT_SIZE), 0);
    assert_int_equal(record_pick(image, &out, &slot), 0);
    assert_int_equal(slot, 1);
}

static void test_invalid_state_refused(void **state) {
    uint8_t slot[RECORD_SLOT_SIZE];
    struct record in = sample(1), out;
    (void)state;

    in.state = 99;
    assert_int_equal(record_encode(&in, slot), 0);
    assert_int_equal(record_decode(slot, &out), -EBADMSG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_every_single_byte_flip_is_detected),
        cmocka_unit_test(test_truncated_write_is_detected),
        cmocka_unit_test(test_empty_slots),
        cmocka_unit_test(test_newer_version_refused),
        cmocka_unit_test(test_too_long_fields_refused),
        cmocka_unit_test(test_largest_record_fits),
        cmocka_unit_test(test_pick_newest_and_survive_a_torn_slot),
        cmocka_unit_test(test_sequence_wraps),
        cmocka_unit_test(test_invalid_state_refused),
    };
    return cmocka_run_group_tests_name("record", tests, NULL, NULL);
}
