/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision own: the TPM phase of first boot. Idempotent: each step first looks, and
 * changes the TPM only where something is missing, so a power cut at any command converges on
 * the next run, and a second run sends no command that changes the TPM.
 */
#include <errno.h>
#include <time.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "state/nvstate.h"
#include "tpm/keys.h"
#include "tpm/tpm-rc.h"

/* Long enough for another instance to finish creating two RSA keys on a slow TPM (B30). */
#define LOCK_TIMEOUT_SEC 300

/* The ownership policy (tpm-provision(8), OWNERSHIP POLICY): hierarchy authorizations are
 * left as they are, except that an empty lockout authorization is set when the operator
 * supplies a new value. Owner and endorsement stay as found, since systemd-cryptenroll,
 * systemd-tpm2-setup and clevis expect an empty owner authorization. */
static int apply_lockout_policy(struct tpm *t, const struct hierarchy_auths *a) {
    const struct auth_value *v = &a->new_lockout;
    TPM2B_AUTH auth = {0};
    TSS2_RC rc;

    if (!v->supplied)
        return 0;
    if (hierarchy_auth_is_set(t, HIERARCHY_LOCKOUT)) {
        log_info("Lockout authorization already set; left as it is.");
        return 0;
    }
    if (v->size == 0)
        return log_error_errno(EINVAL, "The new lockout authorization in %s is empty.", v->source);

    /* The current value is known to be empty (TPM2_PT_PERMANENT says so), so this cannot fail
     * on authorization and cannot count towards lockout. */
    tpm_set_hierarchy_auth(t, ESYS_TR_RH_LOCKOUT, NULL, 0);
    auth.size = v->size;
    memcpy(auth.buffer, v->value, v->size);
    TPM_CALL(t, rc, "HierarchyChangeAuth",
             Esys_HierarchyChangeAuth(t->esys, ESYS_TR_RH_LOCKOUT, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                                      ESYS_TR_NONE, &auth));
    secure_zero(&auth, sizeof(auth));
    if (rc != TSS2_RC_SUCCESS)
        return hierarchy_log_failure(t, a, HIERARCHY_LOCKOUT, -tpm_errno(t, rc),
                                     "set the lockout authorization");
    log_notice("Set the lockout authorization from %s.", v->source);
    return 0;
}

int cmd_own(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    struct hierarchy_auths auths;
    _cleanup_close_ int lock = -1;
    struct nvstate state = {.tr = ESYS_TR_NONE};
    TPM2B_PUBLIC ek, srk;
    bool ek_created, srk_created;
    int r;

    r = cmd_open_tpm(o, &t, &auths);
    if (r < 0)
        return r;
    lock = cmd_lock(LOCK_TIMEOUT_SEC);
    if (lock < 0) {
        hierarchy_auths_wipe(&auths);
        return lock;
    }

    r = tpm_properties_load(t);
    if (r < 0)
        goto out;
    if (t->permanent & TPMA_PERMANENT_INLOCKOUT)
        log_warning("The TPM is in dictionary-attack lockout (%u failures of %u); the keys "
                    "tpm-provision uses are not subject to it, so it goes on.",
                    t->lockout_counter, t->max_auth_fail);

    r = ek_ensure(t, &auths, o->cfg.ek_handle, &ek, &ek_created);
    if (r < 0)
        goto out;
    r = srk_ensure(t, &auths, o->cfg.srk_handle, &srk, &srk_created);
    if (r < 0)
        goto out;
    r = cmd_ensure_state(t, &auths, o->cfg.state_index, &state);
    nvstate_done(t, &state);
    if (r < 0)
        goto out;
    r = apply_lockout_policy(t, &auths);
    if (r < 0)
        goto out;

    log_info("TPM ready: EK 0x%08x (%s), SRK 0x%08x (%s), state index 0x%08x.", o->cfg.ek_handle,
             ek_created ? "created" : "existing", o->cfg.srk_handle,
             srk_created ? "created" : "existing", o->cfg.state_index);
out:
    hierarchy_auths_wipe(&auths);
    return r;
}
