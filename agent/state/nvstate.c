/* SPDX-License-Identifier: MIT */
#include "nvstate.h"

#include <errno.h>
#include <string.h>

#include <openssl/sha.h>
#include <tss2/tss2_mu.h>

#include "basic/log.h"
#include "tpm/tpm-rc.h"

/* Bits the TPM sets on its own as an index is used; they say nothing about who defined it. */
#define NV_STATE_BITS (TPMA_NV_WRITTEN | TPMA_NV_WRITELOCKED | TPMA_NV_READLOCKED)

static bool public_is_ours(const TPM2B_NV_PUBLIC *p) {
    return p->nvPublic.nameAlg == TPM2_ALG_SHA256 &&
           (p->nvPublic.attributes & ~NV_STATE_BITS) == NVSTATE_ATTRIBUTES &&
           p->nvPublic.authPolicy.size == 0 && p->nvPublic.dataSize == RECORD_INDEX_SIZE;
}

/* The public area tpm-provision defines the index with (docs/state-record.md). */
static TPMS_NV_PUBLIC our_public(TPM2_HANDLE index) {
    return (TPMS_NV_PUBLIC){
        .nvIndex = index,
        .nameAlg = TPM2_ALG_SHA256,
        .attributes = NVSTATE_ATTRIBUTES,
        .dataSize = RECORD_INDEX_SIZE,
    };
}

/*
 * Without reading the public area again: the Name ESAPI already took from the TPM is the hash
 * of the public area, so an index defined exactly as ours (written or not) has one of two
 * Names. Anything else is someone else's index, and reading it with an empty authorization
 * could count towards dictionary-attack lockout (it may lack NO_DA).
 */
static bool name_is_ours(struct tpm *t, ESYS_TR tr, TPM2_HANDLE index) {
    TPM2B_NAME *name = NULL;
    bool ours = false;

    if (Esys_TR_GetName(t->esys, tr, &name) != TSS2_RC_SUCCESS)
        return false;
    for (int written = 0; written < 2 && !ours; written++) {
        TPMS_NV_PUBLIC pub = our_public(index);
        uint8_t buf[sizeof(TPMS_NV_PUBLIC)], want[2 + SHA256_DIGEST_LENGTH];
        size_t len = 0;

        if (written)
            pub.attributes |= TPMA_NV_WRITTEN;
        if (Tss2_MU_TPMS_NV_PUBLIC_Marshal(&pub, buf, sizeof(buf), &len) != TSS2_RC_SUCCESS)
            break;
        want[0] = TPM2_ALG_SHA256 >> 8;
        want[1] = TPM2_ALG_SHA256 & 0xff;
        SHA256(buf, len, want + 2);
        ours = name->size == sizeof(want) && memcmp(name->name, want, sizeof(want)) == 0;
    }
    Esys_Free(name);
    return ours;
}

int nvstate_load(struct tpm *t, TPM2_HANDLE index, bool check_public, struct nvstate *ret) {
    TPM2B_NV_PUBLIC *pub = NULL;
    uint8_t image[RECORD_INDEX_SIZE];
    unsigned slot;
    int r;

    *ret = (struct nvstate){.index = index, .tr = ESYS_TR_NONE, .slot = -1, .status = -ENODATA};

    r = tpm_nv_get(t, index, &ret->tr, check_public ? &pub : NULL);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    ret->defined = true;

    if (!pub && !name_is_ours(t, ret->tr, index))
        return -EEXIST;
    if (pub) {
        bool ours = public_is_ours(pub);
        bool written = pub->nvPublic.attributes & TPMA_NV_WRITTEN;
        Esys_Free(pub);
        if (!ours)
            return -EEXIST;
        if (!written)
            return 0;
    }

    r = tpm_nv_read(t, ret->tr, ret->tr, 0, RECORD_INDEX_SIZE, image);
    if (r == -ENODATA)
        return 0;
    if (r < 0)
        return r;

    ret->status = record_pick(image, &ret->record, &slot);
    if (ret->status == 0)
        ret->slot = (int)slot;
    return 0;
}

int nvstate_define(struct tpm *t, struct nvstate *s) {
    TPM2B_NV_PUBLIC pub = {.nvPublic = our_public(s->index)};
    TPM2B_AUTH empty = {0};
    TSS2_RC rc;

    TPM_CALL(t, rc, "NV_DefineSpace",
             Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                 ESYS_TR_NONE, &empty, &pub, &s->tr));
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);

    s->defined = true;
    s->status = -ENODATA;
    s->slot = -1;
    log_notice("Defined the state NV index 0x%08x (%u bytes).", s->index, RECORD_INDEX_SIZE);
    return 0;
}

int nvstate_save(struct tpm *t, struct nvstate *s, const struct record *r) {
    uint8_t slot_data[RECORD_SLOT_SIZE];
    struct record next = *r;
    unsigned slot = record_next_slot(s->slot);
    int k;

    next.sequence = s->status == 0 ? s->record.sequence + 1 : 1;
    k = record_encode(&next, slot_data);
    if (k < 0)
        return k;

    k = tpm_nv_write(t, s->tr, (uint16_t)(slot * RECORD_SLOT_SIZE), slot_data, sizeof(slot_data));
    if (k < 0)
        return k;

    s->record = next;
    s->slot = (int)slot;
    s->status = 0;
    return 0;
}

void nvstate_done(struct tpm *t, struct nvstate *s) {
    if (s->tr != ESYS_TR_NONE)
        Esys_TR_Close(t->esys, &s->tr);
}
