/* SPDX-License-Identifier: MIT */
#include "keys.h"

#include <errno.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <string.h>
#include <tss2/tss2_mu.h>

#include "basic/log.h"
#include "tpm/tpm-rc.h"

/* PolicySecret(TPM_RH_ENDORSEMENT), the EK's authPolicy (protocol document 3.1). */
static const uint8_t ek_policy_a_sha256[32] = {
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24,
    0xfd, 0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
};

static void rsa2048_storage_template(TPM2B_PUBLIC *ret, TPMA_OBJECT attributes) {
    *ret = (TPM2B_PUBLIC){
        .publicArea = {
            .type = TPM2_ALG_RSA,
            .nameAlg = TPM2_ALG_SHA256,
            .objectAttributes = attributes,
            .parameters.rsaDetail = {
                .symmetric = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB},
                .scheme = {.scheme = TPM2_ALG_NULL},
                .keyBits = 2048,
                .exponent = 0,
            },
            .unique.rsa.size = 256,
        },
    };
}

void ek_template_default(TPM2B_PUBLIC *ret) {
    rsa2048_storage_template(ret, TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_ADMINWITHPOLICY |
                                      TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT);
    ret->publicArea.authPolicy.size = sizeof(ek_policy_a_sha256);
    memcpy(ret->publicArea.authPolicy.buffer, ek_policy_a_sha256, sizeof(ek_policy_a_sha256));
}

void srk_template_default(TPM2B_PUBLIC *ret) {
    rsa2048_storage_template(ret, TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT |
                                      TPMA_OBJECT_SENSITIVEDATAORIGIN | TPMA_OBJECT_USERWITHAUTH |
                                      TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED |
                                      TPMA_OBJECT_DECRYPT);
}

const char *key_kind(const TPM2B_PUBLIC *pub, char *buf, size_t size) {
    const TPMT_PUBLIC *p = &pub->publicArea;

    if (p->type == TPM2_ALG_RSA)
        snprintf(buf, size, "RSA-%u", p->parameters.rsaDetail.keyBits);
    else if (p->type == TPM2_ALG_ECC)
        snprintf(buf, size, "ECC-%s",
                 p->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256   ? "P256"
                 : p->parameters.eccDetail.curveID == TPM2_ECC_NIST_P384 ? "P384"
                                                                         : "other");
    else
        snprintf(buf, size, "type-0x%04x", p->type);
    return buf;
}

/* The public area of the object persisted at handle, copied to *ret; -ENOENT when none. */
static int persistent_public(struct tpm *t, TPM2_HANDLE handle, TPM2B_PUBLIC *ret) {
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    r = tpm_persistent_get(t, handle, &tr, &pub);
    if (r < 0)
        return r;
    *ret = *pub;
    Esys_Free(pub);
    Esys_TR_Close(t->esys, &tr);
    return 0;
}

static bool is_storage_key(const TPM2B_PUBLIC *pub) {
    TPMA_OBJECT a = pub->publicArea.objectAttributes;

    return (a & TPMA_OBJECT_RESTRICTED) && (a & TPMA_OBJECT_DECRYPT) && !(a & TPMA_OBJECT_SIGN_ENCRYPT);
}

/* Reads a whole small NV index with its own authorization (or auth_override's); -ENOENT when
 * not defined, -EPERM (nothing sent) for its own on an index without NO_DA. */
static int nv_read_all(struct tpm *t, TPM2_HANDLE index, ESYS_TR auth_override, uint8_t **ret,
                       size_t *ret_len, TPMA_NV *ret_attrs) {
    TPM2B_NV_PUBLIC *pub = NULL;
    ESYS_TR tr;
    uint8_t *buf;
    int r;

    r = tpm_nv_get(t, index, &tr, &pub);
    if (r < 0)
        return r;
    uint16_t size = pub->nvPublic.dataSize;
    TPMA_NV attrs = pub->nvPublic.attributes;
    Esys_Free(pub);
    if (ret_attrs)
        *ret_attrs = attrs;
    /* The index's own authorization on an index without NO_DA: if it has a password, the
     * empty value counts towards lockout at every read (someone else's index). */
    if (auth_override == ESYS_TR_NONE && (attrs & TPMA_NV_AUTHREAD) && !(attrs & TPMA_NV_NO_DA)) {
        Esys_TR_Close(t->esys, &tr);
        return -EPERM;
    }

    buf = malloc(size ? size : 1);
    if (!buf) {
        Esys_TR_Close(t->esys, &tr);
        return -ENOMEM;
    }
    r = tpm_nv_read(t, tr, auth_override != ESYS_TR_NONE ? auth_override : tr, 0, size, buf);
    Esys_TR_Close(t->esys, &tr);
    if (r < 0) {
        free(buf);
        return r;
    }
    *ret = buf;
    *ret_len = size;
    return 0;
}

static void hex(const uint8_t *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

static int parse_cert(struct ek_cert *c, uint8_t *data, size_t len) {
    const unsigned char *p = data;
    uint8_t digest[SHA256_DIGEST_LENGTH];
    X509 *x;

    /* The index may be larger than the certificate (padding); DER says where it ends. */
    x = d2i_X509(NULL, &p, (long)len);
    if (!x)
        return -EBADMSG;
    c->der_len = (size_t)(p - data);
    c->der = data;

    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    size_t n = (size_t)ASN1_STRING_length(serial);
    if (n > 20)
        n = 20;
    hex(ASN1_STRING_get0_data(serial), n, c->serial);
    SHA256(data, c->der_len, digest);
    hex(digest, sizeof(digest), c->sha256);
    X509_free(x);
    return 0;
}

/* Why a maker's index was not read: nv_read_all's -EPERM sent no command, so the TPM's last
 * answer would say nothing. */
static const char *maker_index_error(struct tpm *t, int r) {
    return r == -EPERM ? "it has no NO_DA, so its own authorization could count towards "
                         "dictionary-attack lockout; give --owner-auth= if the owner may read it"
                       : tpm_last_error(t);
}

/* Reads one of the TPM maker's indices (EK certificate, template, nonce): with its own
 * authorization, and when the index does not allow that (no AUTHREAD, or the platform refused
 * its own authorization) with the owner's, but only when OWNERREAD allows it and the value is
 * known (field case B21). Its own (empty) authorization is tried only on an index with NO_DA,
 * as the TCG's have: on another one, a password the agent cannot know would make every read
 * count towards dictionary-attack lockout; -EPERM then, unless the owner can read it.
 * -ENOENT when the index is not defined. */
static int nv_read_maker_index(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE index,
                               uint8_t **ret, size_t *ret_len) {
    TPMA_NV attrs = 0;
    int r;

    r = nv_read_all(t, index, ESYS_TR_NONE, ret, ret_len, &attrs);
    if (r >= 0 || r == -ENOENT || r == -ENODATA || !tpm_rc_from_tpm(t->last_rc))
        return r;
    if (!(attrs & TPMA_NV_OWNERREAD) ||
        !(a->auth[HIERARCHY_OWNER].supplied || !hierarchy_auth_is_set(t, HIERARCHY_OWNER)))
        return r;
    log_debug("NV index 0x%08x not read with its own authorization (%s); trying owner "
              "authorization.", index, maker_index_error(t, r));
    return nv_read_all(t, index, ESYS_TR_RH_OWNER, ret, ret_len, NULL);
}

int ek_cert_read(struct tpm *t, const struct hierarchy_auths *a, struct ek_cert *ret) {
    uint8_t *data = NULL;
    size_t len = 0;
    int r;

    *ret = (struct ek_cert){0};
    r = nv_read_maker_index(t, a, EK_CERT_RSA_INDEX, &data, &len);
    if (r == -ENOENT)
        return 0;
    if (r < 0 && !tpm_rc_from_tpm(t->last_rc))
        return r;
    ret->present = true;
    if (r < 0) {
        snprintf(ret->why_unreadable, sizeof(ret->why_unreadable), "%s",
                 r == -ENODATA ? "index defined but never written" : maker_index_error(t, r));
        return 0;
    }
    if (parse_cert(ret, data, len) < 0) {
        free(data);
        snprintf(ret->why_unreadable, sizeof(ret->why_unreadable), "not a DER X.509 certificate");
        return 0;
    }
    ret->readable = true;
    return 0;
}

void ek_cert_done(struct ek_cert *c) {
    free(c->der);
    *c = (struct ek_cert){0};
}

int ek_cert_matches(const struct ek_cert *c, const TPM2B_PUBLIC *pub) {
    const unsigned char *p = c->der;
    BIGNUM *n = NULL;
    uint8_t modulus[512];
    int r = -EINVAL, len;

    if (!c->readable || pub->publicArea.type != TPM2_ALG_RSA)
        return -EINVAL;
    X509 *x = d2i_X509(NULL, &p, (long)c->der_len);
    if (!x)
        return -EBADMSG;
    EVP_PKEY *key = X509_get0_pubkey(x);
    if (key && EVP_PKEY_get_bn_param(key, OSSL_PKEY_PARAM_RSA_N, &n) == 1) {
        len = BN_bn2bin(n, modulus);
        r = (size_t)len == pub->publicArea.unique.rsa.size &&
            memcmp(modulus, pub->publicArea.unique.rsa.buffer, (size_t)len) == 0;
    }
    BN_free(n);
    X509_free(x);
    return r;
}

/* The TPM maker's EK template and nonce in NV override the default (EK Credential Profile
 * 2.x, section 2.2.1.5): the nonce goes to the start of unique, zero-filled to the key size. */
static int ek_template(struct tpm *t, const struct hierarchy_auths *a, TPM2B_PUBLIC *ret,
                       bool *ret_from_nv) {
    uint8_t *data = NULL;
    size_t len = 0, off = 0;
    int r;

    ek_template_default(ret);
    *ret_from_nv = false;

    r = nv_read_maker_index(t, a, EK_TEMPLATE_RSA_INDEX, &data, &len);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return log_error_errno(r, "The TPM defines an EK template index 0x%08x that cannot be "
                               "read: %s", EK_TEMPLATE_RSA_INDEX, maker_index_error(t, r));
    TPMT_PUBLIC tmpl = {0};
    TSS2_RC rc = Tss2_MU_TPMT_PUBLIC_Unmarshal(data, len, &off, &tmpl);
    free(data);
    if (rc != TSS2_RC_SUCCESS || tmpl.type != TPM2_ALG_RSA)
        return log_error_errno(EBADMSG, "The EK template in NV index 0x%08x is not an RSA "
                               "TPMT_PUBLIC.", EK_TEMPLATE_RSA_INDEX);
    ret->publicArea = tmpl;
    *ret_from_nv = true;

    r = nv_read_maker_index(t, a, EK_NONCE_RSA_INDEX, &data, &len);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return log_error_errno(r, "Cannot read the EK nonce index 0x%08x: %s", EK_NONCE_RSA_INDEX,
                               maker_index_error(t, r));
    uint16_t key_bytes = tmpl.parameters.rsaDetail.keyBits / 8;
    if (len > key_bytes || key_bytes > sizeof(ret->publicArea.unique.rsa.buffer)) {
        free(data);
        return log_error_errno(EBADMSG, "The EK nonce in NV is larger than the key.");
    }
    memset(ret->publicArea.unique.rsa.buffer, 0, key_bytes);
    memcpy(ret->publicArea.unique.rsa.buffer, data, len);
    ret->publicArea.unique.rsa.size = key_bytes;
    free(data);
    return 0;
}

static int create_primary(struct tpm *t, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl,
                          ESYS_TR *ret_tr, TPM2B_PUBLIC *ret_pub) {
    TPM2B_SENSITIVE_CREATE sensitive = {0};
    TPM2B_DATA outside = {0};
    TPML_PCR_SELECTION pcrs = {0};
    TPM2B_PUBLIC *pub = NULL;
    TSS2_RC rc;

    /* RSA key generation takes seconds on real chips (field case B30): say so. */
    log_info("Creating an RSA-2048 primary key in the TPM; this can take several seconds.");
    TPM_CALL(t, rc, "CreatePrimary",
             Esys_CreatePrimary(t->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                                &sensitive, tmpl, &outside, &pcrs, ret_tr, &pub, NULL, NULL, NULL));
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);
    *ret_pub = *pub;
    Esys_Free(pub);
    return 0;
}


static int ek_compute(struct tpm *t, const struct hierarchy_auths *a, ESYS_TR *ret_tr,
                      TPM2B_PUBLIC *ret_pub) {
    TPM2B_PUBLIC tmpl;
    bool from_nv;
    int r;

    r = ek_template(t, a, &tmpl, &from_nv);
    if (r < 0)
        return r;
    if (from_nv)
        log_info("Using the EK template the TPM maker stored in NV.");

    r = hierarchy_require(t, a, HIERARCHY_ENDORSEMENT, "create the EK");
    if (r < 0)
        return r;
    r = create_primary(t, ESYS_TR_RH_ENDORSEMENT, &tmpl, ret_tr, ret_pub);
    if (r < 0)
        return hierarchy_log_failure(t, a, HIERARCHY_ENDORSEMENT, r, "create the EK");
    return 0;
}

/* Whether a persisted key can be an EK: a restricted decryption key that only a policy may use
 * (adminWithPolicy, an authPolicy; TCG EK Credential Profile 2.2.1). Someone's storage key at
 * the EK's handle would otherwise be exported and enrolled as this TPM's EK. */
static int check_persisted_ek(const TPM2B_PUBLIC *pub, TPM2_HANDLE handle) {
    char kind[32];

    if (!is_storage_key(pub))
        return log_error_errno(EINVAL, "The object at 0x%08x (%s) is not a restricted "
                               "decryption key, so it cannot be an EK. Set --ek-handle to where "
                               "the EK is.", handle, key_kind(pub, kind, sizeof(kind)));
    if (pub->publicArea.authPolicy.size == 0 ||
        !(pub->publicArea.objectAttributes & TPMA_OBJECT_ADMINWITHPOLICY))
        return log_error_errno(EINVAL, "The object at 0x%08x (%s) has no EK policy (%s), so it "
                               "is no EK but someone's storage key. Set --ek-handle to where the "
                               "EK is.", handle, key_kind(pub, kind, sizeof(kind)),
                               pub->publicArea.authPolicy.size == 0 ? "an empty authPolicy"
                                                                    : "no adminWithPolicy");
    return 0;
}

int ek_read(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
            TPM2B_PUBLIC *ret_pub, bool *ret_persisted) {
    ESYS_TR tr = ESYS_TR_NONE;
    int r;

    r = persistent_public(t, handle, ret_pub);
    if (r == 0) {
        r = check_persisted_ek(ret_pub, handle);
        if (r < 0)
            return r;
        *ret_persisted = true;
        return 0;
    }
    if (r != -ENOENT)
        return log_error_errno(r, "Cannot read the EK at 0x%08x: %s", handle, tpm_last_error(t));

    r = ek_compute(t, a, &tr, ret_pub);
    if (r < 0)
        return r;
    r = tpm_flush(t, &tr);
    if (r < 0)
        return log_error_errno(r, "Cannot flush the computed EK: %s", tpm_last_error(t));
    *ret_persisted = false;
    return 0;
}

int ek_ensure(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
              TPM2B_PUBLIC *ret_pub, bool *ret_created) {
    _cleanup_(ek_cert_done) struct ek_cert cert = {0};
    ESYS_TR tr = ESYS_TR_NONE;
    char kind[32];
    int r;

    r = persistent_public(t, handle, ret_pub);
    if (r == 0) {
        /* Someone's EK, maybe the TPM maker's: used as it is, never replaced. */
        r = check_persisted_ek(ret_pub, handle);
        if (r < 0)
            return r;
        log_info("EK found at 0x%08x (%s).", handle, key_kind(ret_pub, kind, sizeof(kind)));
        *ret_created = false;
        return 0;
    }
    if (r != -ENOENT)
        return log_error_errno(r, "Cannot read the EK at 0x%08x: %s", handle, tpm_last_error(t));

    r = hierarchy_require(t, a, HIERARCHY_OWNER, "persist the EK");
    if (r < 0)
        return r;
    r = ek_compute(t, a, &tr, ret_pub);
    if (r < 0)
        return r;

    /* An EK that does not match the TPM maker's certificate would be enrolled under an
     * identity nobody can verify; better to stop before persisting it. */
    r = ek_cert_read(t, a, &cert);
    if (r < 0) {
        tpm_flush(t, &tr);
        return log_error_errno(r, "Cannot read the EK certificate: %s", tpm_last_error(t));
    }
    if (cert.readable && ek_cert_matches(&cert, ret_pub) == 0) {
        tpm_flush(t, &tr);
        return log_error_errno(EKEYREJECTED, "The EK created from the template does not match the EK "
                               "certificate in NV 0x%08x; not persisting it. The TPM maker may "
                               "have used another template.", EK_CERT_RSA_INDEX);
    }

    r = tpm_persist_and_flush(t, tr, handle);
    if (r < 0)
        return hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "persist the EK");
    log_notice("Persisted the EK at 0x%08x%s.", handle,
               cert.readable ? " (matches the EK certificate)" : "");
    log_event(LOG_EVENT_EK_PERSISTED, LOG_NOTICE, "Persisted the EK.", NULL);
    *ret_created = true;
    return 0;
}

int srk_ensure(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
               TPM2B_PUBLIC *ret_pub, bool *ret_created) {
    TPM2B_PUBLIC tmpl;
    ESYS_TR tr = ESYS_TR_NONE;
    char kind[32];
    int r;

    r = persistent_public(t, handle, ret_pub);
    if (r == 0) {
        if (!is_storage_key(ret_pub) || ret_pub->publicArea.type != TPM2_ALG_RSA ||
            ret_pub->publicArea.parameters.rsaDetail.keyBits != 2048)
            return log_error_errno(EINVAL, "The object at 0x%08x is a %s key%s, not an RSA-2048 "
                                   "storage key, which DPS wraps its key to. It is not ours to "
                                   "replace: set --srk-handle to a free persistent handle "
                                   "(for example 0x81000002).", handle,
                                   key_kind(ret_pub, kind, sizeof(kind)),
                                   is_storage_key(ret_pub) ? "" : " that is no storage key");
        /* Every registration uses the SRK with an empty password. Without noDA, one set by
         * another tool would make each use count towards dictionary-attack lockout. */
        if (!(ret_pub->publicArea.objectAttributes & TPMA_OBJECT_NODA))
            return log_error_errno(EINVAL, "The storage key at 0x%08x lacks noDA: if it has a "
                                   "password (someone else's key), every use would count "
                                   "towards the TPM's dictionary-attack lockout. It is not ours "
                                   "to replace: set --srk-handle to a free persistent handle "
                                   "(for example 0x81000002).", handle);
        log_info("SRK found at 0x%08x.", handle);
        *ret_created = false;
        return 0;
    }
    if (r != -ENOENT)
        return log_error_errno(r, "Cannot read the SRK at 0x%08x: %s", handle, tpm_last_error(t));

    r = hierarchy_require(t, a, HIERARCHY_OWNER, "create and persist the SRK");
    if (r < 0)
        return r;
    srk_template_default(&tmpl);
    r = create_primary(t, ESYS_TR_RH_OWNER, &tmpl, &tr, ret_pub);
    if (r < 0)
        return hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "create the SRK");
    r = tpm_persist_and_flush(t, tr, handle);
    if (r < 0)
        return hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "persist the SRK");
    log_notice("Persisted the SRK at 0x%08x.", handle);
    *ret_created = true;
    return 0;
}
