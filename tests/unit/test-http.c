/* SPDX-License-Identifier: MIT */
/* What the HTTPS layer puts into log lines: never a URL's user:password (field case B31). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Only a name update-ca-certificates or openssl rehash gives makes a directory a hashed store:
 * one that holds only ca-certificates.crt (an initramfs) keeps libcurl's default bundle. */
static void test_a_hashed_directory_is_told_by_its_names(void **state) {
    char dir[] = "/tmp/test-http.XXXXXX", path[64];
    static const char *const not_hashed[] = {"ca-certificates.crt", "5ad8a5d.0", "5ad8a5d6.",
                                             "5ad8a5d6.0x", "5ad8a5d6_0", "xad8a5d6.0"};
    (void)state;

    assert_non_null(mkdtemp(dir));
    assert_false(http_dir_has_hashed_certs(dir)); /* empty */
    for (size_t i = 0; i < sizeof(not_hashed) / sizeof(not_hashed[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, not_hashed[i]);
        fclose(fopen(path, "w"));
    }
    assert_false(http_dir_has_hashed_certs(dir));
    assert_false(http_dir_has_hashed_certs("/nonexistent/dir"));
    snprintf(path, sizeof(path), "%s/5ad8a5d6.12", dir);
    fclose(fopen(path, "w"));
    assert_true(http_dir_has_hashed_certs(dir));

    snprintf(path, sizeof(path), "rm -rf %s", dir);
    assert_int_equal(system(path), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_userinfo_redacted_in_libcurl_messages),
        cmocka_unit_test(test_a_hashed_directory_is_told_by_its_names),
    };
    return cmocka_run_group_tests_name("http", tests, NULL, NULL);
}
