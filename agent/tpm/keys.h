/* SPDX-License-Identifier: MIT */
/*
 * The endorsement key and the storage root key: their templates, how they are found or made,
 * and the EK certificate. Protocol document section 3; TCG EK Credential Profile 2.x.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tpm/hierarchy.h"
#include "tpm/tpm.h"

#define EK_DEFAULT_HANDLE 0x81010001u
#define SRK_DEFAULT_HANDLE 0x81000001u
#define EK_CERT_RSA_INDEX 0x01c00002u
#define EK_NONCE_RSA_INDEX 0x01c00003u
#define EK_TEMPLATE_RSA_INDEX 0x01c00004u

/* The TCG EK Credential Profile template L-1 (RSA-2048, unique = 256 zero bytes). */
void ek_template_default(TPM2B_PUBLIC *ret);

/* The TCG Provisioning Guidance SRK template (RSA-2048 storage key, unique = 256 zero bytes). */
void srk_template_default(TPM2B_PUBLIC *ret);

struct ek_cert {
    bool present;
    bool readable;
    uint8_t *der;
    size_t der_len;
    char serial[2 * 20 + 1];         /* hex, as the certificate carries it */
    char sha256[2 * 32 + 1];         /* fingerprint of the DER certificate, hex */
    char why_unreadable[160];
};

/*
 * Reads the RSA EK certificate (B21): with the index's own authorization when AUTHREAD is
 * set, otherwise with owner authorization when OWNERREAD is set and the value is known.
 * A missing index is not an error: present = false. A certificate the TPM refuses to give or
 * that does not parse is not an error either: readable = false with the reason. Fails only
 * when the TPM itself stops answering.
 */
int ek_cert_read(struct tpm *t, const struct hierarchy_auths *a, struct ek_cert *ret);
void ek_cert_done(struct ek_cert *c);

/* 1 if the certificate's public key is the RSA key of pub, 0 if not, negative if unknown. */
int ek_cert_matches(const struct ek_cert *c, const TPM2B_PUBLIC *pub);

/*
 * The EK public: the object persisted at handle when there is one (used as it is), otherwise
 * computed with CreatePrimary from the template (the TPM maker's template and nonce from NV
 * when defined) and flushed again. ret_persisted says which.
 */
int ek_read(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
            TPM2B_PUBLIC *ret_pub, bool *ret_persisted);

/*
 * Makes sure an EK is persisted at handle. Creates it when missing, checks it against the EK
 * certificate when one is readable (a mismatch is an error: nothing is persisted), and
 * persists it under owner authorization. *ret_created says whether it changed the TPM.
 */
int ek_ensure(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
              TPM2B_PUBLIC *ret_pub, bool *ret_created);

/*
 * Makes sure an RSA-2048 storage key is persisted at handle: one already there is used when
 * it is a restricted decryption key of that kind (an ECC key there, as systemd >= 255 may
 * create, is reported with the way out: another --srk-handle).
 */
int srk_ensure(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
               TPM2B_PUBLIC *ret_pub, bool *ret_created);

/* "RSA-2048" / "ECC-P256" / ... for messages and status. */
const char *key_kind(const TPM2B_PUBLIC *pub, char *buf, size_t size);
