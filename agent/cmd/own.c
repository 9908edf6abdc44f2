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
        return hierarchy_log_failure(t, a, HIERARCHY_LOCKOUT, -tpm_rc_to_errno(rc),
                                     "set the lockout authorization");
    log_notice("Set the lockout authorization from %s.", v->source);
    return 0;
}

static int ensure_state(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE index) {
    struct nvstate s;
    int r;

    r = nvstate_load(t, index, true, &s);
    if (r == -EEXIST)
        return log_error_errno(EEXIST, "NV index 0x%08x exists and was not defined by "
                               "tpm-provision; it is left alone. Choose another with "
                               "--state-index.", index);
    if (r < 0) {
        r = log_error_errno(r, "Cannot read the state NV index 0x%08x: %s", index,
                            tpm_last_error(t));
        goto out;
    }
    if (s.status == -EPROTONOSUPPORT) {
        r = log_error_errno(EPROTONOSUPPORT, "The state record in 0x%08x was written by a newer "
                            "tpm-provision; not touching it.", index);
        goto out;
    }
    if (s.status == 0) {
        log_info("State record present (%s).", record_state_to_string(s.record.state));
        goto out;
    }

    r = hierarchy_require(t, a, HIERARCHY_OWNER, "write the state NV index");
    if (r < 0)
        goto out;
    if (!s.defined) {
        r = nvstate_define(t, &s);
        if (r < 0) {
            r = hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "define the state NV index");
            goto out;
        }
    } else if (s.status == -EBADMSG)
        log_warning("The state record in 0x%08x is damaged; writing a fresh one.", index);

    struct record rec = {.state = RECORD_OWNED, .changed_at = (uint64_t)time(NULL)};
    r = nvstate_save(t, &s, &rec);
    if (r < 0) {
        r = hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "write the state NV index");
        goto out;
    }
    log_notice("Wrote the state record: owned.");
out:
    nvstate_done(t, &s);
    return r;
}

int cmd_own(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    struct hierarchy_auths auths;
    TPM2B_PUBLIC ek, srk;
    bool ek_created, srk_created;
    int r;

    r = cmd_open_tpm(o, &t, &auths);
    if (r < 0)
        return r;

    if (t->permanent & TPMA_PERMANENT_INLOCKOUT)
        log_warning("The TPM is in dictionary-attack lockout (%u failures of %u); the keys "
                    "tpm-provision uses are not subject to it, so it goes on.",
                    t->lockout_counter, t->max_auth_fail);

    r = ek_ensure(t, &auths, o->ek_handle, &ek, &ek_created);
    if (r < 0)
        goto out;
    r = srk_ensure(t, &auths, o->srk_handle, &srk, &srk_created);
    if (r < 0)
        goto out;
    r = ensure_state(t, &auths, o->state_index);
    if (r < 0)
        goto out;
    r = apply_lockout_policy(t, &auths);
    if (r < 0)
        goto out;

    log_info("TPM ready: EK 0x%08x (%s), SRK 0x%08x (%s), state index 0x%08x.", o->ek_handle,
             ek_created ? "created" : "existing", o->srk_handle,
             srk_created ? "created" : "existing", o->state_index);
out:
    hierarchy_auths_wipe(&auths);
    return r;
}
