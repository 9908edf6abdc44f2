/* SPDX-License-Identifier: MIT */
/* base32: RFC 4648 section 10 test vectors, lowercase and without padding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "basic/base32.h"

static void test_rfc4648_vectors(void **state) {
    static const struct { const char *in, *out; } v[] = {
        {"", ""},         {"f", "my"},          {"fo", "mzxq"},           {"foo", "mzxw6"},
        {"foob", "mzxw6yq"}, {"fooba", "mzxw6ytb"}, {"foobar", "mzxw6ytboi"},
    };
    char out[32];
    (void)state;

    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        size_t n = base32_encode_lower((const uint8_t *)v[i].in, strlen(v[i].in), out);
        assert_string_equal(out, v[i].out);
        assert_int_equal(n, strlen(v[i].out));
        assert_int_equal(base32_encoded_len(strlen(v[i].in)), strlen(v[i].out));
    }
}

static void test_digest_length_gives_52_characters(void **state) {
    uint8_t digest[32];
    char out[64];
    (void)state;

    memset(digest, 0xff, sizeof(digest));
    assert_int_equal(base32_encode_lower(digest, sizeof(digest), out), 52);
    assert_int_equal(strspn(out, "abcdefghijklmnopqrstuvwxyz234567"), 52);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc4648_vectors),
        cmocka_unit_test(test_digest_length_gives_52_characters),
    };
    return cmocka_run_group_tests_name("base32", tests, NULL, NULL);
}
