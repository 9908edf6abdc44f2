/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision reset: back to unprovisioned, for a new owner or a new enrollment. Removes what
 * registration made (the identity key, the assignment in the record, the hand-off file) and
 * nothing else: EK, SRK, the state index and every object of someone else's stay.
 */
#include <errno.h>
#include <time.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "tpm/identity.h"
#include "tpm/tpm-rc.h"

int cmd_reset(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    _cleanup_close_ int lock = -1;
    struct hierarchy_auths auths;
    struct nvstate s = {.tr = ESYS_TR_NONE};
    enum identity_slot slot;
    int r;

    if (!o->yes)
        return log_error_errno(EINVAL, "reset removes this device's cloud identity; it then has "
                               "to register again. Add --yes to do it.");
    r = cmd_open_tpm(o, &t, &auths);
    if (r < 0)
        return r;
    lock = cmd_lock(300);
    if (lock < 0) {
        hierarchy_auths_wipe(&auths);
        return lock;
    }

    r = nvstate_load(t, o->cfg.state_index, true, &s);
    if (r == -EEXIST) {
        r = log_error_errno(EEXIST, "NV index 0x%08x was not defined by tpm-provision; nothing "
                            "to reset there.", o->cfg.state_index);
        goto out;
    }
    if (r < 0 || !s.defined || s.status != 0) {
        if (r >= 0)
            log_info("No state record: nothing was registered.");
        r = r < 0 ? log_error_errno(r, "Cannot read the state index: %s", tpm_last_error(t))
                  : cmd_remove_handoff();
        goto out;
    }

    uint32_t handle = s.record.identity_handle ? s.record.identity_handle : o->cfg.identity_handle;
    r = identity_slot_check(t, handle, s.record.identity_name, s.record.identity_name_size, &slot);
    if (r < 0)
        goto out;
    if (slot == IDENTITY_SLOT_OURS) {
        r = hierarchy_require(t, &auths, HIERARCHY_OWNER, "remove the identity key");
        if (r < 0)
            goto out;
        r = identity_evict(t, handle);
        if (r < 0) {
            r = hierarchy_log_failure(t, &auths, HIERARCHY_OWNER, r, "remove the identity key");
            goto out;
        }
        log_notice("Removed the identity key at 0x%08x.", handle);
    } else if (slot == IDENTITY_SLOT_FOREIGN)
        log_info("0x%08x holds a key tpm-provision did not create; left alone.", handle);

    if (s.record.state != RECORD_OWNED || s.record.identity_name_size) {
        struct record rec = {.state = RECORD_OWNED, .changed_at = (uint64_t)time(NULL)};
        r = hierarchy_require(t, &auths, HIERARCHY_OWNER, "write the state record");
        if (r < 0)
            goto out;
        r = nvstate_save(t, &s, &rec);
        if (r < 0) {
            r = hierarchy_log_failure(t, &auths, HIERARCHY_OWNER, r, "write the state record");
            goto out;
        }
        log_notice("State record reset: owned, not registered.");
    } else if (slot != IDENTITY_SLOT_OURS)
        log_info("The device is not registered: nothing to reset.");
    r = cmd_remove_handoff();
out:
    nvstate_done(t, &s);
    hierarchy_auths_wipe(&auths);
    return r;
}
