/* SPDX-License-Identifier: MIT */
/*
 * What an assignment from DPS may name (agent/dps/messages.h): a hub that is a DNS host name,
 * a device ID IoT Hub accepts. Anything else would end up in the state record, the SAS
 * resource sr= and the hand-off file, where a '/' or '&' changes what they mean.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "dps/messages.h"

static void test_hub_names(void **state) {
    char longest[129], too_long[130], label63[80], label64[80];
    (void)state;

    assert_true(dps_hub_name_valid("contoso-hub.azure-devices.net"));
    assert_true(dps_hub_name_valid("HUB-B.Azure-Devices.NET"));
    assert_true(dps_hub_name_valid("h"));
    assert_true(dps_hub_name_valid("a1.b2"));

    const char *bad[] = {"", ".", "hub.", ".hub", "hub..net", "-hub.net", "hub-.net",
                         "hub/devices/x", "hub&sig=x", "hub net", "hub:443", "hub\n.net",
                         "h\xc3\xbc" "b.net", "hub_1.net", "hub.net-"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(dps_hub_name_valid(bad[i]));

    /* 128 bytes in labels of 63 at most: accepted; one more byte: refused. */
    memset(longest, 'a', 128);
    longest[63] = longest[126] = '.'; /* labels of 63, 62 and 1 */
    longest[128] = '\0';
    assert_true(dps_hub_name_valid(longest));
    memcpy(too_long, longest, 128);
    too_long[128] = 'a';
    too_long[129] = '\0';
    assert_false(dps_hub_name_valid(too_long));

    memset(label63, 'x', 63);
    strcpy(label63 + 63, ".net");
    assert_true(dps_hub_name_valid(label63));
    memset(label64, 'x', 64);
    strcpy(label64 + 64, ".net");
    assert_false(dps_hub_name_valid(label64));
}

static void test_device_ids(void **state) {
    char max[129], over[130];
    (void)state;

    assert_true(dps_device_id_valid("tpm-0123abcd"));
    assert_true(dps_device_id_valid("-:.+%_#*?!(),=@;$'"));
    assert_true(dps_device_id_valid("Device.7"));

    const char *bad[] = {"", "dev/ice", "dev ice", "dev&ice", "dev\"ice", "dev\\ice",
                         "dev\nice", "d\xc3\xa9vice", "dev<ice>", "dev[0]", "dev{}", "dev|x",
                         "dev~x", "dev^x", "dev`x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(dps_device_id_valid(bad[i]));

    memset(max, 'd', 128);
    max[128] = '\0';
    assert_true(dps_device_id_valid(max));
    memset(over, 'd', 129);
    over[129] = '\0';
    assert_false(dps_device_id_valid(over));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hub_names),
        cmocka_unit_test(test_device_ids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
