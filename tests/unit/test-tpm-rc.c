/* SPDX-License-Identifier: MIT */
/* TPM response codes: base code, transient classification, errno and exit-code mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>
#include <errno.h>
#include <tss2/tss2_tcti.h>
#include <tss2/tss2_tpm2_types.h>

#include "exit-codes.h"
#include "tpm/tpm-rc.h"

static void test_base_strips_handle_session_parameter(void **state) {
    (void)state;
    assert_int_equal(tpm_rc_base(0x9a2), TPM2_RC_BAD_AUTH);      /* session 1 */
    assert_int_equal(tpm_rc_base(0x18b), TPM2_RC_HANDLE);        /* handle 1 */
    assert_int_equal(tpm_rc_base(0x1c4), TPM2_RC_VALUE);         /* parameter 1 */
    assert_int_equal(tpm_rc_base(0x922), TPM2_RC_RETRY);
    assert_int_equal(tpm_rc_base(0x14a), TPM2_RC_NV_UNINITIALIZED);
    /* Resource-manager layer keeps its layer bits. */
    assert_int_equal(tpm_rc_base(TSS2_RESMGR_TPM_RC_LAYER | 0x9a2),
                     TSS2_RESMGR_TPM_RC_LAYER | TPM2_RC_BAD_AUTH);
    /* Another layer's code is left alone. */
    assert_int_equal(tpm_rc_base(TSS2_TCTI_RC_IO_ERROR), TSS2_TCTI_RC_IO_ERROR);
}

/* B17: the warnings that mean "send the command again". */
static void test_b17_transient_codes(void **state) {
    (void)state;
    assert_true(tpm_rc_is_transient(0x922));  /* RETRY */
    assert_true(tpm_rc_is_transient(0x90a));  /* TESTING */
    assert_true(tpm_rc_is_transient(0x908));  /* YIELDED */
    assert_true(tpm_rc_is_transient(0x920));  /* NV_RATE */
    assert_true(tpm_rc_is_transient(0x923));  /* NV_UNAVAILABLE */
    assert_true(tpm_rc_is_transient(TSS2_RESMGR_TPM_RC_LAYER | 0x922));
    assert_false(tpm_rc_is_transient(0x921)); /* LOCKOUT: never retried */
    assert_false(tpm_rc_is_transient(0x9a2)); /* BAD_AUTH: never retried */
    assert_false(tpm_rc_is_transient(0x100)); /* INITIALIZE: needs Startup, not a repeat */
    assert_false(tpm_rc_is_transient(0x101));
    assert_false(tpm_rc_is_transient(TSS2_TCTI_RC_TRY_AGAIN));
    assert_false(tpm_rc_is_transient(0));
}

static void test_errno_mapping(void **state) {
    (void)state;
    assert_int_equal(tpm_rc_to_errno(0), 0);
    assert_int_equal(tpm_rc_to_errno(0x9a2), EACCES);
    assert_int_equal(tpm_rc_to_errno(0x98e), EACCES);       /* AUTH_FAIL, session 1 */
    assert_int_equal(tpm_rc_to_errno(0x921), ENOLCK);
    assert_int_equal(tpm_rc_to_errno(0x922), EAGAIN);
    assert_int_equal(tpm_rc_to_errno(0x902), ENOSPC);       /* OBJECT_MEMORY */
    assert_int_equal(tpm_rc_to_errno(0x18b), ENOENT);
    assert_int_equal(tpm_rc_to_errno(0x14c), EEXIST);
    assert_int_equal(tpm_rc_to_errno(0x14a), ENODATA);
    assert_int_equal(tpm_rc_to_errno(0x101), ENOTRECOVERABLE);
    assert_int_equal(tpm_rc_to_errno(0x12d), ENOTRECOVERABLE);
    assert_int_equal(tpm_rc_to_errno(0x100), ENXIO);
    assert_int_equal(tpm_rc_to_errno(0x1c4), EPROTO);
    assert_int_equal(tpm_rc_to_errno(TSS2_TCTI_RC_IO_ERROR), ENODEV);
    assert_int_equal(tpm_rc_to_errno(TSS2_TCTI_RC_NO_CONNECTION), ENODEV);
    assert_int_equal(tpm_rc_to_errno(TSS2_ESYS_RC_MALFORMED_RESPONSE), EBADMSG);
}

static void test_decoded_text(void **state) {
    (void)state;
    assert_non_null(strstr(tpm_rc_str(0x9a2), "authorization"));
    assert_non_null(strstr(tpm_rc_str(0x921), "lockout"));
}

static void test_exit_codes(void **state) {
    (void)state;
    assert_int_equal(exit_code_from_errno(0), EXIT_OK);
    assert_int_equal(exit_code_from_errno(-EINVAL), EXIT_USAGE);
    assert_int_equal(exit_code_from_errno(-ENODEV), EXIT_NO_TPM);
    assert_int_equal(exit_code_from_errno(-EACCES), EXIT_TPM_REFUSED);
    assert_int_equal(exit_code_from_errno(-ENOLCK), EXIT_TPM_REFUSED);
    assert_int_equal(exit_code_from_errno(-EEXIST), EXIT_TPM_REFUSED);
    assert_int_equal(exit_code_from_errno(-EAGAIN), EXIT_TEMPORARY);
    assert_int_equal(exit_code_from_errno(-ENOTRECOVERABLE), EXIT_TPM_UNUSABLE);
    assert_int_equal(exit_code_from_errno(-EPROTO), EXIT_FAILURE_OTHER);
    /* Every TPM answer lands on a documented exit code through its errno. */
    assert_int_equal(exit_code_from_errno(-tpm_rc_to_errno(0x9a2)), EXIT_TPM_REFUSED);
    assert_int_equal(exit_code_from_errno(-tpm_rc_to_errno(0x922)), EXIT_TEMPORARY);
    assert_int_equal(exit_code_from_errno(-tpm_rc_to_errno(0x101)), EXIT_TPM_UNUSABLE);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_base_strips_handle_session_parameter),
        cmocka_unit_test(test_b17_transient_codes),
        cmocka_unit_test(test_errno_mapping),
        cmocka_unit_test(test_decoded_text),
        cmocka_unit_test(test_exit_codes),
    };
    return cmocka_run_group_tests_name("tpm-rc", tests, NULL, NULL);
}
