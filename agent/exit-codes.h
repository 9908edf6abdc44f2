/* SPDX-License-Identifier: MIT */
/* The one documented set of exit codes (tpm-provision(8), EXIT STATUS). */
#pragma once

enum {
    EXIT_OK = 0,
    EXIT_FAILURE_OTHER = 1,   /* anything not listed below */
    EXIT_USAGE = 2,           /* bad command line or configuration: fix it, do not retry */
    EXIT_NO_TPM = 3,          /* no TPM 2.0 (missing node, TPM 1.2, TCTI cannot connect) */
    EXIT_TPM_REFUSED = 4,     /* access denied, wrong authorization, lockout, foreign object */
    EXIT_TEMPORARY = 5,       /* try again later: TPM busy, network down, throttled */
    EXIT_DPS_REFUSED = 6,     /* DPS refused the enrolment: do not retry soon */
    EXIT_TPM_UNUSABLE = 7,    /* TPM in failure mode or interrupted field upgrade */
};

/* Maps the negative errno a command failed with to its exit code. */
int exit_code_from_errno(int error);
