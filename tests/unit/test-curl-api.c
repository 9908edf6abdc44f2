/* SPDX-License-Identifier: MIT */
/*
 * libcurl loaded at run time (agent/dps/curl-api.h): the real one serves, a missing one and a
 * library that is not libcurl are refused with -ENOPKG, before any request could be tried.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>

#include "dps/curl-api.h"

static void test_the_real_libcurl_serves(void **state) {
    const struct curl_api *a, *b;
    (void)state;

    assert_int_equal(curl_api_load(&a), 0);
    assert_non_null(a->easy_init);
    assert_non_null(a->ssl_ctx_get0_param);
    CURL *c = a->easy_init();
    assert_non_null(c);
    assert_string_equal(a->easy_strerror(CURLE_OK), "No error");
    a->easy_cleanup(c);
    /* Loaded once: the same table again. */
    assert_int_equal(curl_api_load(&b), 0);
    assert_ptr_equal(a, b);
}

static void test_a_missing_or_wrong_library_is_refused(void **state) {
    struct curl_api api = {0};
    (void)state;

    assert_int_equal(curl_api_load_from("libtpm-provision-test-no-such-curl.so.4", &api),
                     -ENOPKG);
    assert_null(api.easy_init);
    /* A library that loads but is not libcurl (json-c is linked anyway). */
    assert_int_equal(curl_api_load_from("libjson-c.so.5", &api), -ENOPKG);
    assert_null(api.easy_init);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_real_libcurl_serves),
        cmocka_unit_test(test_a_missing_or_wrong_library_is_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
