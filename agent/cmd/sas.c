/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision sas: an IoT Hub SAS token for the device's IoT client, signed by the identity
 * key inside the TPM. The key never leaves the TPM; the token is all the client gets.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "dps/wire.h"
#include "tpm/identity.h"
#include "tpm/tpm-rc.h"

int cmd_sas(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    _cleanup_free_ char *resource = NULL, *sr = NULL, *to_sign = NULL, *token = NULL;
    struct hierarchy_auths auths;
    struct nvstate s = {.tr = ESYS_TR_NONE};
    enum identity_slot slot;
    ESYS_TR key = ESYS_TR_NONE;
    uint8_t mac[32];
    time_t now = time(NULL);
    uint64_t expiry;
    int r;

    /* A token from a clock stuck in the past would be expired at once, or valid far too long
     * once the clock is fixed: refuse rather than guess (field case B26). */
    if (o->clock_floor > 0 && now < o->clock_floor)
        return log_error_errno(EAGAIN, "The system clock is before this build's date; not "
                               "signing a token until the time is set.");
    expiry = o->expiry < 0    ? (uint64_t)(-o->expiry)
             : o->expiry > 0  ? (uint64_t)now + (uint64_t)o->expiry
                              : (uint64_t)now + o->cfg.sas_ttl_sec;
    /* A token that is expired when the client gets it is a mistake, not a token. */
    if (expiry < (uint64_t)now + SAS_LIFETIME_MIN_SEC)
        return log_error_errno(EINVAL, "--expiry=@%llu is in the past or less than %d s from "
                               "now (%lld); the token would be useless.",
                               (unsigned long long)expiry, SAS_LIFETIME_MIN_SEC, (long long)now);

    r = cmd_open_tpm(o, &t, &auths);
    hierarchy_auths_wipe(&auths);
    if (r < 0)
        return r;
    r = nvstate_load(t, o->cfg.state_index, false, &s);
    if (r == -EEXIST) {
        r = log_error_errno(EEXIST, "NV index 0x%08x was not defined by tpm-provision; not "
                            "reading it. Give --state-index= the agent's index.",
                            o->cfg.state_index);
        goto out;
    }
    /* A registration replaces the key in steps (docs/state-record.md); while the record says
     * one is under way, a missing key or a record without an assignment is that, not a
     * device to register: try again later (exit 5). */
    bool registering = r == 0 && s.status == 0 && (s.record.flags & RECORD_FLAG_REGISTERING);
    if (r < 0 || s.status != 0 || s.record.state != RECORD_ASSIGNED) {
        if (registering)
            r = log_error_errno(EAGAIN, "This device is registering with DPS (or a "
                                "registration was cut short and the next 'tpm-provision "
                                "register' finishes it); try again once it is assigned.");
        else
            r = log_error_errno(ENOENT, "This device is not provisioned yet; run "
                                "'tpm-provision register' first.");
        goto out;
    }

    r = identity_slot_check(t, s.record.identity_handle, s.record.identity_name,
                            s.record.identity_name_size, &slot);
    if (r < 0) {
        r = log_error_errno(r, "Cannot read the identity key at 0x%08x: %s",
                            s.record.identity_handle, tpm_last_error(t));
        goto out;
    }
    if (slot != IDENTITY_SLOT_OURS) {
        if (registering)
            r = log_error_errno(EAGAIN, "The identity key at 0x%08x is being replaced by a "
                                "registration with DPS (or one that was cut short, which the "
                                "next 'tpm-provision register' finishes); try again once it is "
                                "assigned.", s.record.identity_handle);
        else
            r = log_error_errno(ENOENT, "The identity key at 0x%08x is missing or not the one "
                                "registered; run 'tpm-provision register --force'.",
                                s.record.identity_handle);
        goto out;
    }

    if (o->resource)
        resource = strdup(o->resource);
    else if (asprintf(&resource, "%s/devices/%s", s.record.hub, s.record.device_id) < 0)
        resource = NULL;
    if (!resource) {
        r = -ENOMEM;
        goto out;
    }
    sr = dps_url_encode(resource);
    to_sign = sr ? dps_sas_string_to_sign(sr, expiry) : NULL;
    if (!to_sign) {
        r = -ENOMEM;
        goto out;
    }

    r = identity_open(t, s.record.identity_handle, &key);
    if (r < 0)
        goto out;
    r = identity_hmac(t, key, to_sign, strlen(to_sign), mac);
    Esys_TR_Close(t->esys, &key);
    if (r < 0) {
        r = log_error_errno(r, "Cannot sign with the identity key: %s", tpm_last_error(t));
        goto out;
    }

    /* IoT Hub device tokens carry no skn. */
    token = dps_sas_token(sr, mac, sizeof(mac), expiry, NULL);
    secure_zero(mac, sizeof(mac));
    if (!token) {
        r = -ENOMEM;
        goto out;
    }
    printf("%s\n", token);
    if (fflush(stdout) != 0)
        r = log_error_errno(errno, "Cannot write the token: %m");
out:
    nvstate_done(t, &s);
    return r;
}
