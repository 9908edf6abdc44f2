/* SPDX-License-Identifier: MIT */
/*
 * One connection to the TPM through ESAPI, and the few primitives every module needs: the
 * bounded retry of transient answers, TPM properties, persistent objects and NV indices.
 * All TPM access in the process goes through one struct tpm (field case B12).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <tss2/tss2_esys.h>

#include "basic/macro.h"

#define TPM_DEFAULT_TCTI "device:/dev/tpmrm0"

struct tpm {
    ESYS_CONTEXT *esys;
    TSS2_TCTI_CONTEXT *tcti;
    char *tcti_conf;

    /* TPM properties, read once on first use (tpm_properties_load). */
    bool have_properties;
    uint32_t manufacturer;
    char vendor[17];
    uint32_t firmware1, firmware2;
    uint32_t nv_buffer_max;
    uint32_t nv_index_max;
    uint32_t permanent;
    uint32_t lockout_counter, max_auth_fail, lockout_interval, lockout_recovery;

    bool unusable_reported;
    bool startup_sent;
    bool failure_contradicted; /* answered FAILURE, but GetTestResult says all is well */

    /* The last command's answer, for the one log line that reports a failure. */
    const char *last_what;
    TSS2_RC last_rc;
    char last_error[192];
};

/*
 * Opens the TPM named by a TCTI configuration string ("device:/dev/tpmrm0",
 * "swtpm:path=/run/x.sock"), or by default (NULL) TPM_DEFAULT_TCTI, or when that node is
 * missing the one other TPM 2.0 resource manager node the machine has. A TPM device node that
 * is missing, refuses access or is a TPM 1.2 gets a specific error (-ENODEV, -EACCES) that
 * names the node. Logs its own failure.
 */
int tpm_open(const char *tcti_conf, struct tpm **ret);
void tpm_close(struct tpm *t);
DEFINE_TRIVIAL_CLEANUP_FUNC(struct tpm *, tpm_close);

/*
 * Looks at every answer: a transient one (tpm_rc_is_transient) is repeated with exponential
 * backoff for a bounded time (returns true: send the command again); failure mode or an
 * interrupted field upgrade is diagnosed once with TPM2_GetTestResult and logged (field case
 * B18). `what` names the command in the logs.
 */
bool tpm_check_answer(struct tpm *t, TSS2_RC rc, unsigned attempt, const char *what);

#define TPM_CALL(t, rc, what, call)                                                                \
    do {                                                                                           \
        for (unsigned _attempt = 0;; _attempt++) {                                                 \
            (rc) = (call);                                                                         \
            (t)->last_what = (what);                                                               \
            (t)->last_rc = (rc);                                                                   \
            if (!tpm_check_answer((t), (rc), _attempt, (what)))                                    \
                break;                                                                             \
        }                                                                                          \
    } while (0)

/*
 * tpm_rc_to_errno for an answer of this TPM: a FAILURE answer the TPM's own self-test result
 * contradicts is a refusal of that one command (-EPROTO), not failure mode. libtpms answers
 * FAILURE to an ActivateCredential whose secret was made for another EK.
 */
int tpm_errno(const struct tpm *t, TSS2_RC rc);

/* "<command> returned 0x9a2 (<decoded>)" for the last command sent through TPM_CALL. */
const char *tpm_last_error(struct tpm *t);

/* Reads the fixed and variable TPM properties the agent uses into t, once (usually one
 * GetCapability). Commands that need them call it; the boot fast path does not. */
int tpm_properties_load(struct tpm *t);

/*
 * Looks up a persistent object. On success *ret_tr is an ESYS handle for it (close it with
 * Esys_TR_Close) and, when ret_public is not NULL, its public area (free with Esys_Free).
 * Returns -ENOENT when nothing is persisted at that handle.
 */
int tpm_persistent_get(struct tpm *t, TPM2_HANDLE handle, ESYS_TR *ret_tr,
                       TPM2B_PUBLIC **ret_public);

/* Flushes a transient object or session. A TPM that is gone is an error; a handle the TPM no
 * longer knows is not. Sets *tr to ESYS_TR_NONE. */
int tpm_flush(struct tpm *t, ESYS_TR *tr);

/* Persists a transient object at handle under owner authorization, then flushes it. */
int tpm_persist_and_flush(struct tpm *t, ESYS_TR transient, TPM2_HANDLE handle);

/* Looks up an NV index: -ENOENT when it is not defined. ret_public may be NULL. */
int tpm_nv_get(struct tpm *t, TPM2_HANDLE index, ESYS_TR *ret_tr, TPM2B_NV_PUBLIC **ret_public);

/*
 * Reads size bytes of an NV index from offset, in chunks of at most TPM_PT_NV_BUFFER_MAX.
 * auth is the authorization handle: the index itself (its own, usually empty, auth value) or
 * ESYS_TR_RH_OWNER. -ENODATA when the index was never written.
 */
int tpm_nv_read(struct tpm *t, ESYS_TR index, ESYS_TR auth, uint16_t offset, uint16_t size,
                uint8_t *ret_data);

/* Writes data at offset under owner authorization, in chunks of at most NV_BUFFER_MAX. */
int tpm_nv_write(struct tpm *t, ESYS_TR index, uint16_t offset, const uint8_t *data, size_t size);

/* A password authorization value for the owner, endorsement or lockout hierarchy. */
void tpm_set_hierarchy_auth(struct tpm *t, ESYS_TR hierarchy, const uint8_t *value, size_t size);
