/* SPDX-License-Identifier: MIT */
/*
 * The EK public as DPS and the manufacturing list carry it: the marshaled TPM2B_PUBLIC,
 * big-endian, with its 2-byte size prefix (protocol document 1.4, field case B04), and the
 * registration ID derived from exactly those bytes (protocol document 4, field case B05).
 * Pure code; unit-tested against the protocol document's test vector.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <tss2/tss2_tpm2_types.h>

#define EKPUB_MAX_SIZE sizeof(TPM2B_PUBLIC)
#define EKPUB_REGISTRATION_ID_LEN 52 /* base32 of a SHA-256 digest, unpadded */

/* Marshals a TPM2B_PUBLIC with its size prefix into buf. */
int ekpub_marshal(const TPM2B_PUBLIC *pub, uint8_t *buf, size_t size, size_t *ret_len);

/*
 * Checks that bytes are one marshaled TPM2B_PUBLIC of an RSA or ECC key with nameAlg SHA-256,
 * whose size prefix equals the remaining length and which marshals back to the same bytes.
 * Rejects C-structure dumps and anything else that would be base64-encoded blindly (B04).
 * On success fills *ret_pub when not NULL. -EBADMSG with a reason in *ret_why otherwise.
 */
int ekpub_validate(const uint8_t *buf, size_t len, TPM2B_PUBLIC *ret_pub, const char **ret_why);

/* Lowercase unpadded base32 of SHA-256 over the marshaled bytes; out holds 53 bytes. */
void ekpub_registration_id(const uint8_t *marshaled, size_t len,
                           char out[EKPUB_REGISTRATION_ID_LEN + 1]);

/* DPS's rule for registration IDs: 1-128 of lowercase a-z, 0-9, '-', '.', '_', ':'. */
int ekpub_registration_id_valid(const char *id, const char **ret_why);
