/* SPDX-License-Identifier: MIT */
/*
 * The state record's home: one NV index (default 0x01000100), 1024 bytes, two record slots.
 * Writes need owner authorization (TPMA_NV_OWNERWRITE); anyone can read it with the index's
 * empty authorization (TPMA_NV_AUTHREAD), so `status` and the boot fast path need no secret.
 * NO_DA: a read never counts towards dictionary-attack lockout. Not ORDERLY: an orderly index
 * reaches NV only at an orderly shutdown, which a power cut skips. docs/state-record.md.
 */
#pragma once

#include <stdbool.h>

#include "state/record.h"
#include "tpm/tpm.h"

#define NVSTATE_DEFAULT_INDEX 0x01000100u
#define NVSTATE_ATTRIBUTES (TPMA_NV_OWNERWRITE | TPMA_NV_OWNERREAD | TPMA_NV_AUTHREAD | TPMA_NV_NO_DA)

struct nvstate {
    TPM2_HANDLE index;
    ESYS_TR tr;
    bool defined;
    int status;      /* 0: record valid; -ENODATA none written; -EBADMSG damaged; ... */
    int slot;        /* slot of the current record, -1 when none */
    struct record record;
};

/*
 * Reads the index. -ENOENT is not an error here: ret->defined is false. An index at that
 * handle that tpm-provision did not define gives -EEXIST (and is never written or undefined).
 * With check_public false, the index's Name (which the TPM already gave) must be that of our
 * public area, not read again (one command less on the boot fast path); that also refuses a
 * foreign index whose flags differ only in the TPM's own bits.
 */
int nvstate_load(struct tpm *t, TPM2_HANDLE index, bool check_public, struct nvstate *ret);

/* Defines the index (owner authorization). Logs at notice level. */
int nvstate_define(struct tpm *t, struct nvstate *s);

/* Writes r as the next record: sequence + 1, into the other slot. Updates s on success. */
int nvstate_save(struct tpm *t, struct nvstate *s, const struct record *r);

void nvstate_done(struct tpm *t, struct nvstate *s);
