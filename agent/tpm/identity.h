/* SPDX-License-Identifier: MIT */
/*
 * The DPS keys inside the TPM (protocol document 2.2, 2.3): importing a key DPS wrapped to
 * this TPM's EK and SRK, signing with it, and keeping the hub key at the identity handle.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dps/wire.h"
#include "tpm/hierarchy.h"
#include "tpm/tpm.h"

#define IDENTITY_DEFAULT_HANDLE 0x81000100u

/*
 * Unwraps blob with ActivateCredential (SRK first, EK under a PolicySecret(endorsement)
 * session) and Import + Load under the SRK. *ret_key is a transient object the caller flushes
 * (identity_flush); *ret_name its Name. The policy session is gone when this returns, on every
 * path. Logs its own failure, naming the step.
 */
int identity_import(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE ek_handle,
                    TPM2_HANDLE srk_handle, const struct dps_blob *blob, ESYS_TR *ret_key,
                    TPM2B_NAME *ret_name);

void identity_flush(struct tpm *t, ESYS_TR *key);

/* HMAC-SHA256 of data with key (TPM2_HMAC, empty password), data at most 1024 bytes. */
int identity_hmac(struct tpm *t, ESYS_TR key, const void *data, size_t size,
                  uint8_t ret_mac[32]);

/* What sits at the identity handle, against what the state record says is ours. */
enum identity_slot {
    IDENTITY_SLOT_EMPTY,
    IDENTITY_SLOT_OURS,    /* an object whose Name is the recorded one */
    IDENTITY_SLOT_FOREIGN, /* someone else's object: never evicted */
};

int identity_slot_check(struct tpm *t, TPM2_HANDLE handle, const uint8_t *our_name,
                        size_t our_name_size, enum identity_slot *ret);

/* *ret: the object persisted at handle has the shape of a key DPS issues (protocol document
 * 3.4): an imported (neither fixedTPM nor fixedParent, no sensitiveDataOrigin) KEYEDHASH HMAC
 * SHA-256 signing key, not restricted, not for decryption. -ENOENT when nothing is there. */
int identity_is_dps_key(struct tpm *t, TPM2_HANDLE handle, bool *ret);

/* Evicts the object at handle (owner authorization). Only call for IDENTITY_SLOT_OURS. */
int identity_evict(struct tpm *t, TPM2_HANDLE handle);

/* Opens the persisted identity key for signing; close with Esys_TR_Close. */
int identity_open(struct tpm *t, TPM2_HANDLE handle, ESYS_TR *ret_key);
