/* SPDX-License-Identifier: MIT */
/*
 * The state record kept in the TPM NV index, and its encoding. Pure code: no TPM here, so the
 * format is unit-tested byte for byte (docs/state-record.md describes it).
 *
 * The index holds two slots. A write goes to the slot that does not hold the newest valid
 * record, so a power cut during any NV write leaves the previous record readable, whatever the
 * TPM does with a half-finished write.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RECORD_MAGIC 0x54505053u /* "TPPS" */
#define RECORD_VERSION 1
#define RECORD_SLOT_SIZE 512
#define RECORD_SLOTS 2
#define RECORD_INDEX_SIZE (RECORD_SLOT_SIZE * RECORD_SLOTS)

#define RECORD_ID_SCOPE_MAX 24
#define RECORD_REGISTRATION_ID_MAX 128
#define RECORD_HUB_MAX 128
#define RECORD_DEVICE_ID_MAX 128
#define RECORD_NAME_MAX 34 /* TPM2B_NAME of a SHA-256 object: nameAlg + digest */

enum record_state {
    RECORD_OWNED = 1,    /* EK and SRK in place; not registered */
    RECORD_ASSIGNED = 2, /* DPS assigned a hub; identity key persisted */
    RECORD_DISABLED = 3, /* DPS said the enrolment is disabled */
    RECORD_FAILED = 4,   /* DPS said the assignment failed */
};

/*
 * Set before the signed registration request, cleared when its outcome is recorded. DPS may
 * have moved the device to another hub as soon as it got that request, so a boot that finds
 * the flag registers again instead of trusting the recorded assignment (which `sas` keeps using
 * until then). The write also proves the owner authorization before DPS is asked.
 */
#define RECORD_FLAG_REGISTERING 0x01

/*
 * Set in the fresh record written over a damaged one (both slots failing their checksum), so
 * the Name of the agent's own identity key is lost. Until the record names a key again, a key
 * at the identity handle with the shape of a DPS identity key is taken for the agent's own
 * (identity_is_dps_key); without the flag the device could never register again.
 */
#define RECORD_FLAG_REBUILT 0x02

struct record {
    uint32_t sequence;
    uint8_t state; /* enum record_state */
    uint8_t flags; /* RECORD_FLAG_* */
    uint32_t identity_handle;
    uint64_t changed_at; /* Unix time of the last change, as the device's clock said */
    int32_t dps_error;   /* DPS errorCode when state is FAILED or DISABLED */
    char id_scope[RECORD_ID_SCOPE_MAX + 1];
    char registration_id[RECORD_REGISTRATION_ID_MAX + 1];
    char hub[RECORD_HUB_MAX + 1];
    char device_id[RECORD_DEVICE_ID_MAX + 1];
    /* Name of the identity key tpm-provision persisted: only an object at identity_handle with
     * this Name is ours to evict. */
    uint8_t identity_name[RECORD_NAME_MAX];
    uint8_t identity_name_size;
};

const char *record_state_to_string(uint8_t state);

/* Encodes r into one slot of exactly RECORD_SLOT_SIZE bytes. -E2BIG if a field is too long. */
int record_encode(const struct record *r, uint8_t slot[RECORD_SLOT_SIZE]);

/*
 * Decodes one slot. -ENODATA: the slot holds no record (never written); -EBADMSG: a record
 * whose checksum or structure is wrong (a torn write or corruption); -EPROTONOSUPPORT: written
 * by a newer format version.
 */
int record_decode(const uint8_t slot[RECORD_SLOT_SIZE], struct record *ret);

/*
 * Picks the newest valid record of the index image. *ret_slot is the slot it came from.
 * -ENODATA when no slot holds a record; -EBADMSG when slots hold only damaged records;
 * -EPROTONOSUPPORT when the newest is from a newer version.
 */
int record_pick(const uint8_t image[RECORD_INDEX_SIZE], struct record *ret, unsigned *ret_slot);

/* The slot the next write goes to, given the slot of the current newest record (or -1). */
unsigned record_next_slot(int current_slot);
