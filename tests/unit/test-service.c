/* SPDX-License-Identifier: MIT */
/*
 * The DPS service API's pure parts (protocol document 6): connection strings, the service SAS
 * token (expected values computed with Python's hmac, independently of the agent), bulk bodies
 * and bulk results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>

#include "dps/service.h"

#define KEY_B64 "Lm8gkzuZ3YkBQNNQ1LPppJVB3phGxnGo9Q+8b2aZcdg="
#define HOST "emulated-dps.azure-devices-provisioning.net"

static void test_connection_string_parses(void **state) {
    struct dps_connection_string c;
    (void)state;

    assert_int_equal(dps_connection_string_parse("HostName=" HOST ";SharedAccessKeyName="
                                                 "provisioningserviceowner;SharedAccessKey=" KEY_B64,
                                                 &c, NULL), 0);
    assert_string_equal(c.host_name, HOST);
    assert_string_equal(c.key_name, "provisioningserviceowner");
    assert_int_equal(c.key_len, 32);
    assert_int_equal(c.key[0], 0x2e);
    dps_connection_string_done(&c);
    assert_null(c.host_name);
    for (size_t i = 0; i < sizeof(c.key); i++)
        assert_int_equal(c.key[i], 0);
}

static void test_connection_string_order_case_spaces(void **state) {
    struct dps_connection_string c;
    (void)state;

    assert_int_equal(dps_connection_string_parse(" sharedaccesskey = " KEY_B64 " ; HOSTNAME=My-Dps."
                                                 "Azure-Devices-Provisioning.net;Other=x;"
                                                 "SharedAccessKeyName=p1;;\n",
                                                 &c, NULL), 0);
    assert_string_equal(c.host_name, "my-dps.azure-devices-provisioning.net");
    assert_string_equal(c.key_name, "p1");
    dps_connection_string_done(&c);
    dps_connection_string_done(&c); /* twice is safe */
}

static void test_connection_string_refusals(void **state) {
    static const char *const bad[] = {
        "",
        "HostName=" HOST ";SharedAccessKeyName=p",
        "HostName=" HOST ";SharedAccessKey=" KEY_B64,
        "SharedAccessKeyName=p;SharedAccessKey=" KEY_B64,
        "HostName=" HOST ";SharedAccessKeyName=p;SharedAccessKey=" KEY_B64 ";HostName=x.net",
        "HostName=bad host;SharedAccessKeyName=p;SharedAccessKey=" KEY_B64,
        "HostName=" HOST ";SharedAccessKeyName=p&q;SharedAccessKey=" KEY_B64,
        "HostName=" HOST ";SharedAccessKeyName=p;SharedAccessKey=not base64!",
        "HostName=" HOST ";SharedAccessKeyName=p;SharedAccessKey=Lm8gkzuZ3YkBQNNQ1LPppJVB3phGxnGo9Q+8b2aZcdg",
        "HostName=" HOST ";SharedAccessKeyName=p;SharedAccessKey=",
        "HostName=" HOST ";garbage;SharedAccessKeyName=p;SharedAccessKey=" KEY_B64,
    };
    (void)state;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct dps_connection_string c = {0};
        const char *why = NULL;
        assert_int_equal(dps_connection_string_parse(bad[i], &c, &why), -EINVAL);
        assert_non_null(why);
        assert_null(strstr(why, KEY_B64)); /* the reason never quotes the key */
        assert_null(c.host_name);
    }
}

/* Expected: Python hmac over "emulated-dps...net\n1700000000" with the decoded key. */
static void test_service_sas_known_answer(void **state) {
    struct dps_connection_string c;
    char *token;
    (void)state;

    assert_int_equal(dps_connection_string_parse("HostName=EMULATED-dps.azure-devices-"
                                                 "provisioning.net;SharedAccessKeyName=owner;"
                                                 "SharedAccessKey=" KEY_B64, &c, NULL), 0);
    token = dps_service_sas(&c, 1700000000);
    assert_string_equal(token, "SharedAccessSignature sr=" HOST "&sig=oLadxWLI%2bMMdP%2fYpMCymOpFi"
                               "EeXc%2fecO%2bfuxi9vniME%3d&se=1700000000&skn=owner");
    free(token);
    dps_connection_string_done(&c);
}

static void test_bulk_body(void **state) {
    static const char *const hubs[] = {"hub-1.azure-devices.net"};
    struct dps_enrollment rows[11] = {
        {.registration_id = "r1", .endorsement_key = "AAAA"},
        {.registration_id = "r2", .endorsement_key = "BBBB", .device_id = "d2",
         .provisioning_status = "disabled", .allocation_policy = "static", .iot_hubs = hubs,
         .n_iot_hubs = 1, .initial_twin_json = "{\"tags\":{\"a\":1}}"},
    };
    char *body;
    int r;
    (void)state;

    body = dps_bulk_body("create", rows, 2, &r);
    assert_int_equal(r, 0);
    assert_string_equal(body,
        "{\"mode\":\"create\",\"enrollments\":[{\"registrationId\":\"r1\",\"attestation\":{\"type\":"
        "\"tpm\",\"tpm\":{\"endorsementKey\":\"AAAA\"}}},{\"registrationId\":\"r2\",\"attestation\":"
        "{\"type\":\"tpm\",\"tpm\":{\"endorsementKey\":\"BBBB\"}},\"deviceId\":\"d2\","
        "\"provisioningStatus\":\"disabled\",\"allocationPolicy\":\"static\",\"iotHubs\":"
        "[\"hub-1.azure-devices.net\"],\"initialTwin\":{\"tags\":{\"a\":1}}}]}");
    free(body);

    for (int i = 0; i < 11; i++)
        rows[i] = (struct dps_enrollment){.registration_id = "r", .endorsement_key = "AAAA"};
    assert_null(dps_bulk_body("create", rows, 11, &r)); /* section 6.2: at most 10 */
    assert_int_equal(r, -EINVAL);
    assert_null(dps_bulk_body("create", rows, 0, &r));
    rows[0].initial_twin_json = "[1]";
    assert_null(dps_bulk_body("create", rows, 1, &r));
    assert_int_equal(r, -EINVAL);
}

static void test_bulk_result(void **state) {
    struct dps_bulk_result res;
    (void)state;

    assert_int_equal(dps_bulk_result_parse("{\"isSuccessful\": true, \"errors\": []}", &res), 0);
    assert_true(res.successful);
    assert_int_equal(res.n_errors, 0);
    dps_bulk_result_done(&res);

    assert_int_equal(dps_bulk_result_parse(
        "{\"isSuccessful\": false, \"errors\": [{\"registrationId\": \"r2\", \"errorCode\": 409201,"
        " \"errorStatus\": \"Enrollment already exists\"}]}", &res), 0);
    assert_false(res.successful);
    assert_int_equal(res.n_errors, 1);
    assert_string_equal(res.errors[0].registration_id, "r2");
    assert_int_equal(res.errors[0].code, 409201);
    assert_string_equal(res.errors[0].status, "Enrollment already exists");
    dps_bulk_result_done(&res);

    assert_int_equal(dps_bulk_result_parse("{}", &res), -EBADMSG);
    assert_int_equal(dps_bulk_result_parse("not json", &res), -EBADMSG);
    assert_int_equal(dps_bulk_result_parse("{\"isSuccessful\": false, \"errors\": [{}]}", &res),
                     -EBADMSG);
}

static void test_error_and_enrollment_answers(void **state) {
    int64_t code;
    char *msg, *ek;
    (void)state;

    dps_service_error_parse("{\"errorCode\": 401002, \"message\": \"Unauthorized: policy "
                            "enrollmentread lacks EnrollmentWrite\"}", &code, &msg);
    assert_int_equal(code, 401002);
    assert_string_equal(msg, "Unauthorized: policy enrollmentread lacks EnrollmentWrite");
    free(msg);
    dps_service_error_parse("<html>", &code, &msg);
    assert_int_equal(code, 0);
    assert_null(msg);

    ek = dps_enrollment_ek("{\"registrationId\": \"r\", \"attestation\": {\"type\": \"tpm\", "
                           "\"tpm\": {\"endorsementKey\": \"AToA\"}}}");
    assert_string_equal(ek, "AToA");
    free(ek);
    assert_null(dps_enrollment_ek("{\"attestation\": {}}"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connection_string_parses),
        cmocka_unit_test(test_connection_string_order_case_spaces),
        cmocka_unit_test(test_connection_string_refusals),
        cmocka_unit_test(test_service_sas_known_answer),
        cmocka_unit_test(test_bulk_body),
        cmocka_unit_test(test_bulk_result),
        cmocka_unit_test(test_error_and_enrollment_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
