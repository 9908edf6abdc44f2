/* SPDX-License-Identifier: MIT */
#include "ekpub.h"

#include <errno.h>
#include <openssl/sha.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "basic/base32.h"

int ekpub_marshal(const TPM2B_PUBLIC *pub, uint8_t *buf, size_t size, size_t *ret_len) {
    size_t off = 0;

    if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, buf, size, &off) != TSS2_RC_SUCCESS)
        return -EINVAL;
    *ret_len = off;
    return 0;
}

int ekpub_validate(const uint8_t *buf, size_t len, TPM2B_PUBLIC *ret_pub, const char **ret_why) {
    TPM2B_PUBLIC pub = {0};
    uint8_t again[EKPUB_MAX_SIZE];
    size_t off = 0, again_len;
    const char *why = NULL;

    if (len < 2)
        why = "shorter than a size prefix";
    else if (((size_t)buf[0] << 8 | buf[1]) != len - 2)
        why = "size prefix does not equal the remaining length (not a big-endian marshaled "
              "TPM2B_PUBLIC; a C structure dump?)";
    else if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(buf, len, &off, &pub) != TSS2_RC_SUCCESS || off != len)
        why = "does not unmarshal as a TPM2B_PUBLIC";
    else if (pub.publicArea.type != TPM2_ALG_RSA && pub.publicArea.type != TPM2_ALG_ECC)
        why = "key type is neither RSA nor ECC";
    else if (pub.publicArea.nameAlg != TPM2_ALG_SHA256)
        why = "nameAlg is not SHA-256";
    else if (ekpub_marshal(&pub, again, sizeof(again), &again_len) < 0 || again_len != len ||
             memcmp(again, buf, len) != 0)
        why = "does not marshal back to the same bytes";

    if (why) {
        if (ret_why)
            *ret_why = why;
        return -EBADMSG;
    }
    if (ret_pub)
        *ret_pub = pub;
    return 0;
}

void ekpub_registration_id(const uint8_t *marshaled, size_t len,
                           char out[EKPUB_REGISTRATION_ID_LEN + 1]) {
    uint8_t digest[SHA256_DIGEST_LENGTH];

    SHA256(marshaled, len, digest);
    base32_encode_lower(digest, sizeof(digest), out);
}

int ekpub_registration_id_valid(const char *id, const char **ret_why) {
    size_t len = strlen(id);
    const char *why = NULL;

    if (len == 0)
        why = "it is empty";
    else if (len > 128)
        why = "it is longer than 128 characters";
    else
        for (const char *p = id; *p; p++)
            if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-._:", *p))) {
                why = "DPS allows only lowercase letters, digits and - . _ :";
                break;
            }
    if (why) {
        if (ret_why)
            *ret_why = why;
        return -EINVAL;
    }
    return 0;
}
