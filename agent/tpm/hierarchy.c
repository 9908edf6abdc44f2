/* SPDX-License-Identifier: MIT */
#include "hierarchy.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "basic/log.h"
#include "basic/secret.h"

static const struct {
    const char *name, *option, *credential;
    ESYS_TR esys;
    TPMA_PERMANENT set_bit;
} hierarchies[_HIERARCHY_MAX] = {
    [HIERARCHY_OWNER] = {"owner", "--owner-auth", "tpm-provision.owner-auth", ESYS_TR_RH_OWNER,
                         TPMA_PERMANENT_OWNERAUTHSET},
    [HIERARCHY_ENDORSEMENT] = {"endorsement", "--endorsement-auth",
                               "tpm-provision.endorsement-auth", ESYS_TR_RH_ENDORSEMENT,
                               TPMA_PERMANENT_ENDORSEMENTAUTHSET},
    [HIERARCHY_LOCKOUT] = {"lockout", "--lockout-auth", "tpm-provision.lockout-auth",
                           ESYS_TR_RH_LOCKOUT, TPMA_PERMANENT_LOCKOUTAUTHSET},
};

const char *hierarchy_name(enum hierarchy_id h) {
    return hierarchies[h].name;
}

ESYS_TR hierarchy_esys(enum hierarchy_id h) {
    return hierarchies[h].esys;
}

const char *hierarchy_credential(enum hierarchy_id h) {
    return hierarchies[h].credential;
}

int auth_value_load(struct auth_value *a, const char *path, const char *credential) {
    _cleanup_free_ char *cred_path = NULL;
    size_t size = 0;
    int r;

    *a = (struct auth_value){0};
    if (!path && credential && secret_credential_path(credential, &cred_path) == 0)
        path = cred_path;
    if (!path)
        return 0;

    r = secret_read_file(path, sizeof(a->value), a->value, &size);
    if (r == -E2BIG)
        return log_error_errno(EINVAL,
                               "Authorization value in %s is longer than %zu bytes, the most a "
                               "TPM takes.",
                               path, sizeof(a->value));
    if (r < 0) {
        /* A file that cannot be read is a configuration error: exit 2, not a retry. */
        log_error_errno(r, "Cannot read authorization value from %s: %m", path);
        return -EINVAL;
    }

    a->supplied = true;
    a->size = (uint8_t)size;
    /* A credential is named by its name: its path is freed on return. */
    a->source = cred_path ? credential : path;
    return 0;
}

void hierarchy_auths_wipe(struct hierarchy_auths *a) {
    secure_zero(a, sizeof(*a));
}

void hierarchy_auths_apply(struct tpm *t, const struct hierarchy_auths *a) {
    for (int h = 0; h < _HIERARCHY_MAX; h++)
        if (a->auth[h].supplied)
            tpm_set_hierarchy_auth(t, hierarchies[h].esys, a->auth[h].value, a->auth[h].size);
}

bool hierarchy_auth_is_set(struct tpm *t, enum hierarchy_id h) {
    /* Unknown flags (the TPM would not say) count as set: the safe side for every caller. */
    if (tpm_properties_load(t) < 0)
        return true;
    return t->permanent & hierarchies[h].set_bit;
}

int hierarchy_require(struct tpm *t, const struct hierarchy_auths *a, enum hierarchy_id h,
                      const char *for_what) {
    if (a->auth[h].supplied || !hierarchy_auth_is_set(t, h))
        return 0;
    return log_error_errno(EACCES,
                           "The %s hierarchy has an authorization value, needed to %s, and none "
                           "was supplied. Give it with %s=FILE or the systemd credential %s.",
                           hierarchies[h].name, for_what, hierarchies[h].option,
                           hierarchies[h].credential);
}

int hierarchy_log_failure(struct tpm *t, const struct hierarchy_auths *a, enum hierarchy_id h,
                          int error, const char *for_what) {
    if (error == -EACCES) {
        if (a->auth[h].supplied)
            return log_error_errno(EACCES,
                                   "The TPM rejected the %s hierarchy authorization from %s, "
                                   "needed to %s: %s. Check the value; tpm-provision will not "
                                   "try others.",
                                   hierarchies[h].name, a->auth[h].source, for_what,
                                   tpm_last_error(t));
        return log_error_errno(EACCES,
                               "The TPM rejected the empty %s hierarchy authorization, needed to "
                               "%s: %s. Give the value with %s=FILE or the systemd credential %s.",
                               hierarchies[h].name, for_what, tpm_last_error(t),
                               hierarchies[h].option, hierarchies[h].credential);
    }
    if (error == -ENOLCK)
        return log_error_errno(ENOLCK,
                               "The TPM is in dictionary-attack lockout, needed to %s: %s. It "
                               "recovers by itself after the lockout recovery time; tpm-provision "
                               "does not retry.",
                               for_what, tpm_last_error(t));
    return log_error_errno(error, "Cannot %s: %s", for_what, tpm_last_error(t));
}
