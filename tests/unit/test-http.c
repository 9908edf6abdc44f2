/* SPDX-License-Identifier: MIT */
/* What the HTTPS layer puts into log lines: never a URL's user:password (field case B31). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "dps/http.h"

static void test_userinfo_redacted_in_libcurl_messages(void **state) {
    char text[256];
    (void)state;

    strcpy(text, "Unsupported proxy syntax in 'http://U:SECRETPW@127.0.0.1:99999'");
    http_redact_userinfo(text);
    assert_string_equal(text, "Unsupported proxy syntax in 'http://***@127.0.0.1:99999'");

    strcpy(text, "a socks5h://me:pw@p:1 and https://x:y@h/path?u@v");
    http_redact_userinfo(text);
    assert_string_equal(text, "a socks5h://***@p:1 and https://***@h/path?u@v");
    assert_null(strstr(text, "pw"));

    /* Nothing to hide: unchanged, including an @ in a path. */
    strcpy(text, "Could not resolve proxy: proxy.example; see https://h/a@b");
    http_redact_userinfo(text);
    assert_string_equal(text, "Could not resolve proxy: proxy.example; see https://h/a@b");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_userinfo_redacted_in_libcurl_messages),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
