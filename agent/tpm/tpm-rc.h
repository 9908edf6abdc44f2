/* SPDX-License-Identifier: MIT */
/*
 * TPM and TSS response codes, converted into the project's one error currency (negative errno)
 * right where they are received (STYLE.md 1). Pure functions: unit-tested without a TPM.
 */
#pragma once

#include <stdbool.h>
#include <tss2/tss2_common.h>

/* The TPM response code without its handle, session or parameter number; TSS layer kept. */
TSS2_RC tpm_rc_base(TSS2_RC rc);

/* RETRY, TESTING, YIELDED, NV_RATE, NV_UNAVAILABLE: the TPM asks to repeat the command. */
bool tpm_rc_is_transient(TSS2_RC rc);

/*
 * errno for a response code: EACCES wrong authorization, ENOLCK dictionary-attack lockout,
 * EAGAIN transient, ENOENT handle not present, EEXIST already defined, ENODATA NV index not
 * written, ENOSPC TPM memory full, ENOTRECOVERABLE failure mode or interrupted field upgrade,
 * ENXIO TPM not started, ENODEV no connection, EBADMSG malformed answer, EPROTO anything else.
 */
int tpm_rc_to_errno(TSS2_RC rc);

/* True when the code came from the TPM (or the resource manager relaying it), false when the
 * TSS or the transport produced it: the TPM may be gone. */
bool tpm_rc_from_tpm(TSS2_RC rc);

/* Readable text for a response code (tpm2-tss's decoder); a static buffer. */
const char *tpm_rc_str(TSS2_RC rc);
