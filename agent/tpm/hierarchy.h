/* SPDX-License-Identifier: MIT */
/*
 * Hierarchy authorization values. The agent never assumes they are empty (field cases B01,
 * B02): each comes from a file or a systemd credential, and a hierarchy whose authorization
 * is set but not supplied is reported before any command that would need it.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tpm/tpm.h"

enum hierarchy_id { HIERARCHY_OWNER, HIERARCHY_ENDORSEMENT, HIERARCHY_LOCKOUT, _HIERARCHY_MAX };

struct auth_value {
    bool supplied;
    uint8_t size;
    uint8_t value[sizeof(TPMU_HA)];
    const char *source; /* where it came from, for messages: a path or "credential X" */
};

struct hierarchy_auths {
    struct auth_value auth[_HIERARCHY_MAX];
    struct auth_value new_lockout; /* own --set-lockout-auth */
};

const char *hierarchy_name(enum hierarchy_id h);
ESYS_TR hierarchy_esys(enum hierarchy_id h);

/* The credential name systemd hands over for hierarchy h ("tpm-provision.owner-auth", ...). */
const char *hierarchy_credential(enum hierarchy_id h);

/*
 * Loads one value: from path when given, else from the systemd credential named credential
 * when present, else leaves it not supplied. Logs its own failure (bad file, too long).
 */
int auth_value_load(struct auth_value *a, const char *path, const char *credential);

void hierarchy_auths_wipe(struct hierarchy_auths *a);

/* Hands every supplied value to ESAPI. */
void hierarchy_auths_apply(struct tpm *t, const struct hierarchy_auths *a);

/* True when the TPM reports an authorization value set for h (TPM2_PT_PERMANENT). */
bool hierarchy_auth_is_set(struct tpm *t, enum hierarchy_id h);

/*
 * Before a command that needs hierarchy h: -EACCES with a message naming the hierarchy and
 * how to supply its value, when the TPM has one set and none was supplied. `for_what` says
 * what the command is for ("persist the SRK").
 */
int hierarchy_require(struct tpm *t, const struct hierarchy_auths *a, enum hierarchy_id h,
                      const char *for_what);

/*
 * Logs the failure of a command authorized by hierarchy h: a wrong value (BAD_AUTH) gets a
 * message naming the hierarchy and where the value came from; lockout gets its own. Returns
 * the negative errno.
 */
int hierarchy_log_failure(struct tpm *t, const struct hierarchy_auths *a, enum hierarchy_id h,
                          int error, const char *for_what);
