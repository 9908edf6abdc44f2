/* SPDX-License-Identifier: MIT */
#include "tpm-rc.h"

#include <errno.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tpm2_types.h>

#include "tss2/tss2_tcti.h"

TSS2_RC tpm_rc_base(TSS2_RC rc) {
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
    TSS2_RC code = rc & ~TSS2_RC_LAYER_MASK;

    /* Only TPM answers (layer 0, also as relayed by the resource manager) carry the
     * handle/session/parameter number (TPM 2.0 Part 2, 6.6.3). */
    if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER)
        return rc;
    if (code & TPM2_RC_FMT1)
        return layer | (code & (TPM2_RC_FMT1 | 0x3f));
    return layer | (code & (TPM2_RC_WARN | TPM2_RC_VER1 | 0x7f));
}

static TSS2_RC tpm_code(TSS2_RC rc) {
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;

    if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER)
        return TPM2_RC_SUCCESS;
    return tpm_rc_base(rc) & ~TSS2_RC_LAYER_MASK;
}

bool tpm_rc_is_transient(TSS2_RC rc) {
    switch (tpm_code(rc)) {
    case TPM2_RC_RETRY:
    case TPM2_RC_TESTING:
    case TPM2_RC_YIELDED:
    case TPM2_RC_NV_RATE:
    case TPM2_RC_NV_UNAVAILABLE:
        return true;
    default:
        return false;
    }
}

static int tss_rc_to_errno(TSS2_RC rc) {
    switch (rc & ~TSS2_RC_LAYER_MASK) {
    case TSS2_BASE_RC_MEMORY:
        return ENOMEM;
    case TSS2_BASE_RC_NO_CONNECTION:
    case TSS2_BASE_RC_IO_ERROR:
        return ENODEV;
    case TSS2_BASE_RC_TRY_AGAIN:
        return EAGAIN;
    case TSS2_BASE_RC_MALFORMED_RESPONSE:
    case TSS2_BASE_RC_INSUFFICIENT_RESPONSE:
    case TSS2_BASE_RC_INSUFFICIENT_BUFFER:
        return EBADMSG;
    case TSS2_BASE_RC_BAD_VALUE:
    case TSS2_BASE_RC_BAD_REFERENCE:
    case TSS2_BASE_RC_BAD_SIZE:
        return EINVAL;
    case TSS2_BASE_RC_NOT_IMPLEMENTED:
    case TSS2_BASE_RC_NOT_SUPPORTED:
        return EOPNOTSUPP;
    default:
        return EPROTO;
    }
}

int tpm_rc_to_errno(TSS2_RC rc) {
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;

    if (rc == TSS2_RC_SUCCESS)
        return 0;
    if (layer != TSS2_TPM_RC_LAYER && layer != TSS2_RESMGR_TPM_RC_LAYER)
        return tss_rc_to_errno(rc);

    switch (tpm_code(rc)) {
    case TPM2_RC_BAD_AUTH:
    case TPM2_RC_AUTH_FAIL:
    case TPM2_RC_POLICY_FAIL:
    case TPM2_RC_AUTH_MISSING:
    case TPM2_RC_HIERARCHY:
        return EACCES;
    case TPM2_RC_LOCKOUT:
        return ENOLCK;
    case TPM2_RC_RETRY:
    case TPM2_RC_TESTING:
    case TPM2_RC_YIELDED:
    case TPM2_RC_NV_RATE:
    case TPM2_RC_NV_UNAVAILABLE:
    case TPM2_RC_CONTEXT_GAP:
        return EAGAIN;
    case TPM2_RC_OBJECT_MEMORY:
    case TPM2_RC_SESSION_MEMORY:
    case TPM2_RC_MEMORY:
    case TPM2_RC_NV_SPACE:
    case TPM2_RC_OBJECT_HANDLES:
    case TPM2_RC_SESSION_HANDLES:
        return ENOSPC;
    case TPM2_RC_HANDLE:
    case TPM2_RC_REFERENCE_H0:
        return ENOENT;
    case TPM2_RC_NV_DEFINED:
        return EEXIST;
    case TPM2_RC_NV_UNINITIALIZED:
        return ENODATA;
    case TPM2_RC_FAILURE:
    case TPM2_RC_UPGRADE:
        return ENOTRECOVERABLE;
    case TPM2_RC_INITIALIZE:
        return ENXIO;
    default:
        return EPROTO;
    }
}

bool tpm_rc_from_tpm(TSS2_RC rc) {
    TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
    return layer == TSS2_TPM_RC_LAYER || layer == TSS2_RESMGR_TPM_RC_LAYER;
}

const char *tpm_rc_str(TSS2_RC rc) {
    return Tss2_RC_Decode(rc);
}
