/* SPDX-License-Identifier: MIT */
/* tpm-provision status: what the TPM and the state record say, without changing anything. */
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "state/nvstate.h"
#include "tpm/keys.h"
#include "tpm/tpm-rc.h"

/* A key's entry; NULL with *error set when the TPM could not say (not "absent": a TPM in
 * failure mode answers nothing, and status must not report that as "no keys"). */
static json_object *key_json(struct tpm *t, TPM2_HANDLE handle, int *error) {
    json_object *o;
    TPM2B_PUBLIC *pub = NULL;
    ESYS_TR tr;
    char kind[32];
    int r;

    r = tpm_persistent_get(t, handle, &tr, &pub);
    if (r < 0 && r != -ENOENT) {
        *error = log_error_errno(r, "Cannot read the key at 0x%08x: %s", handle,
                                 tpm_last_error(t));
        return NULL;
    }
    o = json_object_new_object();
    json_object_object_add(o, "handle", json_object_new_int64(handle));
    json_object_object_add(o, "present", json_object_new_boolean(r == 0));
    if (r == 0) {
        json_object_object_add(o, "type", json_object_new_string(key_kind(pub, kind, sizeof(kind))));
        Esys_Free(pub);
        Esys_TR_Close(t->esys, &tr);
    }
    return o;
}

static json_object *state_json(struct tpm *t, TPM2_HANDLE index) {
    json_object *o = json_object_new_object();
    struct nvstate s;
    int r;

    json_object_object_add(o, "index", json_object_new_int64(index));
    r = nvstate_load(t, index, true, &s);
    if (r == -EEXIST) {
        json_object_object_add(o, "record", json_object_new_string("foreign-index"));
        return o;
    }
    if (r < 0 || !s.defined || s.status != 0) {
        const char *what = r < 0 ? "unreadable" : !s.defined ? "none"
                         : s.status == -ENODATA ? "empty" : s.status == -EPROTONOSUPPORT
                         ? "newer-version" : "damaged";
        json_object_object_add(o, "record", json_object_new_string(what));
        nvstate_done(t, &s);
        return o;
    }
    const struct record *rec = &s.record;
    json_object_object_add(o, "record", json_object_new_string("valid"));
    json_object_object_add(o, "state", json_object_new_string(record_state_to_string(rec->state)));
    json_object_object_add(o, "sequence", json_object_new_int64(rec->sequence));
    json_object_object_add(o, "changedAt", json_object_new_int64((int64_t)rec->changed_at));
    if (rec->registration_id[0])
        json_object_object_add(o, "registrationId", json_object_new_string(rec->registration_id));
    if (rec->hub[0])
        json_object_object_add(o, "assignedHub", json_object_new_string(rec->hub));
    if (rec->device_id[0])
        json_object_object_add(o, "deviceId", json_object_new_string(rec->device_id));
    nvstate_done(t, &s);
    return o;
}

static const char *yes_no(json_object *o, const char *key) {
    json_object *v;
    return json_object_object_get_ex(o, key, &v) && json_object_get_boolean(v) ? "yes" : "no";
}

static const char *str(json_object *o, const char *key) {
    json_object *v;
    return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

static void print_key(const char *label, json_object *key) {
    json_object *h;

    json_object_object_get_ex(key, "handle", &h);
    if (yes_no(key, "present")[0] == 'y')
        printf("%-18s%s at 0x%08x\n", label, str(key, "type"), (unsigned)json_object_get_int64(h));
    else
        printf("%-18snone at 0x%08x\n", label, (unsigned)json_object_get_int64(h));
}

static void print_text(json_object *j) {
    json_object *tpm, *ek, *srk, *auth, *da, *state;

    json_object_object_get_ex(j, "tpm", &tpm);
    json_object_object_get_ex(j, "ek", &ek);
    json_object_object_get_ex(j, "srk", &srk);
    json_object_object_get_ex(j, "authorization", &auth);
    json_object_object_get_ex(j, "dictionaryAttack", &da);
    json_object_object_get_ex(j, "state", &state);

    printf("TPM:              %s, firmware %s (TCTI %s)\n", str(tpm, "manufacturer"),
           str(tpm, "firmware"), str(tpm, "tcti"));
    print_key("EK:", ek);
    print_key("SRK:", srk);
    printf("Authorization:    owner %s, endorsement %s, lockout %s\n",
           yes_no(auth, "owner") [0] == 'y' ? "set" : "empty",
           yes_no(auth, "endorsement")[0] == 'y' ? "set" : "empty",
           yes_no(auth, "lockout")[0] == 'y' ? "set" : "empty");
    printf("Lockout:          %s, %s failures of %s\n", yes_no(da, "inLockout")[0] == 'y'
           ? "LOCKED OUT" : "not locked out", str(da, "counter"), str(da, "maxTries"));
    printf("State record:     %s", str(state, "record"));
    if (strcmp(str(state, "record"), "valid") == 0)
        printf(", %s%s%s%s%s", str(state, "state"), *str(state, "assignedHub") ? ", hub " : "",
               str(state, "assignedHub"), *str(state, "deviceId") ? ", device " : "",
               str(state, "deviceId"));
    printf("\n");
}

int cmd_status(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    struct hierarchy_auths auths;
    char fw[32];
    int r;

    r = cmd_open_tpm(o, &t, &auths);
    hierarchy_auths_wipe(&auths);
    if (r < 0)
        return r;
    r = tpm_properties_load(t);
    if (r < 0)
        return r;

    json_object *j = json_object_new_object();
    json_object *tpm = json_object_new_object();
    json_object_object_add(tpm, "tcti", json_object_new_string(t->tcti_conf));
    json_object_object_add(tpm, "manufacturer", json_object_new_string(t->vendor));
    snprintf(fw, sizeof(fw), "%u.%u.%u.%u", t->firmware1 >> 16, t->firmware1 & 0xffff,
             t->firmware2 >> 16, t->firmware2 & 0xffff);
    json_object_object_add(tpm, "firmware", json_object_new_string(fw));
    json_object_object_add(j, "tpm", tpm);
    int error = 0;
    json_object *ek = key_json(t, o->cfg.ek_handle, &error);
    json_object *srk = error ? NULL : key_json(t, o->cfg.srk_handle, &error);
    if (error) {
        json_object_put(ek);
        json_object_put(j);
        return error;
    }
    json_object_object_add(j, "ek", ek);
    json_object_object_add(j, "srk", srk);

    json_object *auth = json_object_new_object();
    json_object_object_add(auth, "owner", json_object_new_boolean(hierarchy_auth_is_set(t, HIERARCHY_OWNER)));
    json_object_object_add(auth, "endorsement", json_object_new_boolean(hierarchy_auth_is_set(t, HIERARCHY_ENDORSEMENT)));
    json_object_object_add(auth, "lockout", json_object_new_boolean(hierarchy_auth_is_set(t, HIERARCHY_LOCKOUT)));
    json_object_object_add(j, "authorization", auth);

    json_object *da = json_object_new_object();
    json_object_object_add(da, "inLockout", json_object_new_boolean(t->permanent & TPMA_PERMANENT_INLOCKOUT));
    json_object_object_add(da, "counter", json_object_new_int64(t->lockout_counter));
    json_object_object_add(da, "maxTries", json_object_new_int64(t->max_auth_fail));
    json_object_object_add(da, "recoverySeconds", json_object_new_int64(t->lockout_interval));
    json_object_object_add(j, "dictionaryAttack", da);
    json_object_object_add(j, "state", state_json(t, o->cfg.state_index));

    if (o->format == OUTPUT_JSON)
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    else
        print_text(j);
    json_object_put(j);
    if (fflush(stdout) != 0)
        return log_error_errno(errno, "Cannot write the output: %m");
    return 0;
}
