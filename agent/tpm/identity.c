/* SPDX-License-Identifier: MIT */
#include "identity.h"

#include <errno.h>
#include <string.h>

#include "basic/log.h"
#include "tpm/tpm-rc.h"

static int open_persistent(struct tpm *t, TPM2_HANDLE handle, const char *what, ESYS_TR *ret) {
    int r = tpm_persistent_get(t, handle, ret, NULL);
    if (r == -ENOENT)
        return log_error_errno(ENOENT, "No %s at 0x%08x; run 'tpm-provision own' first.", what,
                               handle);
    if (r < 0)
        return log_error_errno(r, "Cannot open the %s at 0x%08x: %s", what, handle,
                               tpm_last_error(t));
    return 0;
}

/* The EK's policy: PolicySecret(TPM_RH_ENDORSEMENT) in a fresh policy session (protocol
 * document 2.2 step 3). The session is flushed by the TPM after its one use (continueSession
 * cleared), or by the caller on failure. */
static int ek_policy_session(struct tpm *t, const struct hierarchy_auths *a, ESYS_TR *ret) {
    TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc;
    int r;

    TPM_CALL(t, rc, "StartAuthSession",
             Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                   ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &sym, TPM2_ALG_SHA256,
                                   &session));
    if (rc != TSS2_RC_SUCCESS)
        return log_error_errno(tpm_errno(t, rc), "Cannot start the EK policy session: %s",
                               tpm_last_error(t));

    TPM_CALL(t, rc, "PolicySecret",
             Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, NULL, NULL, NULL, 0, NULL, NULL));
    if (rc != TSS2_RC_SUCCESS) {
        r = -tpm_errno(t, rc);
        Esys_FlushContext(t->esys, session);
        /* B02: an endorsement authorization is needed to use the EK at all. */
        return hierarchy_log_failure(t, a, HIERARCHY_ENDORSEMENT, r,
                                     "satisfy the EK policy (PolicySecret)");
    }

    Esys_TRSess_SetAttributes(t->esys, session, 0, TPMA_SESSION_CONTINUESESSION);
    *ret = session;
    return 0;
}

int identity_import(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE ek_handle,
                    TPM2_HANDLE srk_handle, const struct dps_blob *blob, ESYS_TR *ret_key,
                    TPM2B_NAME *ret_name) {
    TPMT_SYM_DEF_OBJECT aes128cfb = {
        .algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    ESYS_TR ek = ESYS_TR_NONE, srk = ESYS_TR_NONE, session = ESYS_TR_NONE, key = ESYS_TR_NONE;
    TPM2B_DIGEST *inner = NULL;
    TPM2B_PRIVATE *private = NULL;
    TPM2B_NAME *name = NULL;
    TPM2B_DATA encryption_key = {0};
    TSS2_RC rc;
    int r;

    r = open_persistent(t, ek_handle, "EK", &ek);
    if (r < 0)
        goto out;
    r = open_persistent(t, srk_handle, "SRK", &srk);
    if (r < 0)
        goto out;

    r = ek_policy_session(t, a, &session);
    if (r < 0)
        goto out;

    /* SRK first (password), EK second (the policy session): protocol document 2.2 step 4. */
    TPM_CALL(t, rc, "ActivateCredential",
             Esys_ActivateCredential(t->esys, srk, ek, ESYS_TR_PASSWORD, session, ESYS_TR_NONE,
                                     &blob->credential, &blob->secret, &inner));
    if (rc != TSS2_RC_SUCCESS) {
        Esys_FlushContext(t->esys, session);
        r = log_error_errno(tpm_errno(t, rc),
                            "The TPM refused the DPS credential (ActivateCredential): %s. The "
                            "key was not made for this TPM's EK and SRK, or it was damaged.",
                            tpm_last_error(t));
        goto out;
    }

    /* The inner wrapper's AES-128 key (section 2.2 step 5). */
    encryption_key.size = inner->size;
    memcpy(encryption_key.buffer, inner->buffer, inner->size);
    TPM_CALL(t, rc, "Import",
             Esys_Import(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                         &encryption_key, &blob->public, &blob->duplicate, &blob->seed,
                         &aes128cfb, &private));
    secure_zero(&encryption_key, sizeof(encryption_key));
    if (rc != TSS2_RC_SUCCESS) {
        r = log_error_errno(tpm_errno(t, rc), "The TPM refused to import the DPS key: %s",
                            tpm_last_error(t));
        goto out;
    }

    TPM_CALL(t, rc, "Load",
             Esys_Load(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, private,
                       &blob->public, &key));
    if (rc != TSS2_RC_SUCCESS) {
        r = log_error_errno(tpm_errno(t, rc), "Cannot load the imported DPS key: %s",
                            tpm_last_error(t));
        goto out;
    }

    rc = Esys_TR_GetName(t->esys, key, &name);
    if (rc != TSS2_RC_SUCCESS) {
        identity_flush(t, &key);
        r = log_error_errno(tpm_errno(t, rc), "Cannot compute the DPS key's Name.");
        goto out;
    }
    *ret_name = *name;
    *ret_key = key;
    r = 0;
out:
    if (inner)
        secure_zero(inner, sizeof(*inner));
    Esys_Free(inner);
    Esys_Free(private);
    Esys_Free(name);
    if (ek != ESYS_TR_NONE)
        Esys_TR_Close(t->esys, &ek);
    if (srk != ESYS_TR_NONE)
        Esys_TR_Close(t->esys, &srk);
    return r;
}

void identity_flush(struct tpm *t, ESYS_TR *key) {
    if (tpm_flush(t, key) < 0)
        log_warning("Could not flush a transient DPS key: %s", tpm_last_error(t));
}

int identity_hmac(struct tpm *t, ESYS_TR key, const void *data, size_t size,
                  uint8_t ret_mac[32]) {
    TPM2B_MAX_BUFFER buffer = {0};
    TPM2B_DIGEST *mac = NULL;
    TSS2_RC rc;

    /* A SAS string-to-sign is a few hundred bytes; TPM2B_MAX_BUFFER holds 1024. */
    if (size > sizeof(buffer.buffer))
        return -E2BIG;
    buffer.size = (uint16_t)size;
    memcpy(buffer.buffer, data, size);

    TPM_CALL(t, rc, "HMAC",
             Esys_HMAC(t->esys, key, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &buffer,
                       TPM2_ALG_SHA256, &mac));
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);
    if (mac->size != 32) {
        Esys_Free(mac);
        return -EBADMSG;
    }
    memcpy(ret_mac, mac->buffer, 32);
    Esys_Free(mac);
    return 0;
}

int identity_slot_check(struct tpm *t, TPM2_HANDLE handle, const uint8_t *our_name,
                        size_t our_name_size, enum identity_slot *ret) {
    TPM2B_NAME *name = NULL;
    ESYS_TR tr;
    int r;

    r = tpm_persistent_get(t, handle, &tr, NULL);
    if (r == -ENOENT) {
        *ret = IDENTITY_SLOT_EMPTY;
        return 0;
    }
    if (r < 0)
        return r;
    r = Esys_TR_GetName(t->esys, tr, &name) == TSS2_RC_SUCCESS ? 0 : -EPROTO;
    Esys_TR_Close(t->esys, &tr);
    if (r < 0)
        return r;

    *ret = our_name_size > 0 && name->size == our_name_size &&
                   memcmp(name->name, our_name, our_name_size) == 0
               ? IDENTITY_SLOT_OURS
               : IDENTITY_SLOT_FOREIGN;
    Esys_Free(name);
    return 0;
}

int identity_is_dps_key(struct tpm *t, TPM2_HANDLE handle, bool *ret) {
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr;
    int r;

    r = tpm_persistent_get(t, handle, &tr, &pub);
    if (r < 0)
        return r;
    Esys_TR_Close(t->esys, &tr);

    const TPMT_PUBLIC *p = &pub->publicArea;
    TPMA_OBJECT a = p->objectAttributes;
    *ret = p->type == TPM2_ALG_KEYEDHASH && p->nameAlg == TPM2_ALG_SHA256 &&
           p->parameters.keyedHashDetail.scheme.scheme == TPM2_ALG_HMAC &&
           p->parameters.keyedHashDetail.scheme.details.hmac.hashAlg == TPM2_ALG_SHA256 &&
           (a & TPMA_OBJECT_SIGN_ENCRYPT) &&
           !(a & (TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                  TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT));
    Esys_Free(pub);
    return 0;
}

int identity_evict(struct tpm *t, TPM2_HANDLE handle) {
    ESYS_TR tr, out = ESYS_TR_NONE;
    TSS2_RC rc;
    int r;

    r = tpm_persistent_get(t, handle, &tr, NULL);
    if (r < 0)
        return r;
    /* The persistent handle goes in both places (protocol document 8, pitfall 6). */
    TPM_CALL(t, rc, "EvictControl",
             Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, tr, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, handle, &out));
    if (rc != TSS2_RC_SUCCESS) {
        Esys_TR_Close(t->esys, &tr);
        return -tpm_errno(t, rc);
    }
    return 0;
}

int identity_open(struct tpm *t, TPM2_HANDLE handle, ESYS_TR *ret_key) {
    return tpm_persistent_get(t, handle, ret_key, NULL);
}
