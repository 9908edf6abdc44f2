/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision ek: what a manufacturing line records for the DPS enrolment. The EK is read
 * fresh from the TPM every time (field case B06), and the exported bytes are checked to be the
 * marshaled TPM2B_PUBLIC DPS takes (B04) before they are printed.
 */
#include <errno.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "tpm/ekpub.h"
#include "tpm/keys.h"

struct ek_info {
    char registration_id[EKPUB_REGISTRATION_ID_LEN + 1];
    char endorsement_key[4 * ((EKPUB_MAX_SIZE + 2) / 3) + 1];
    bool persisted;
    struct ek_cert cert;
};

static int ek_info_collect(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE handle,
                           struct ek_info *ret) {
    uint8_t bytes[EKPUB_MAX_SIZE];
    TPM2B_PUBLIC pub;
    const char *why;
    size_t len;
    int r;

    r = ek_read(t, a, handle, &pub, &ret->persisted);
    if (r < 0)
        return r;
    r = ekpub_marshal(&pub, bytes, sizeof(bytes), &len);
    if (r < 0)
        return log_error_errno(r, "Cannot marshal the EK public.");
    r = ekpub_validate(bytes, len, NULL, &why);
    if (r < 0)
        return log_error_errno(r, "The EK public read from the TPM is not exportable: %s.", why);

    ekpub_registration_id(bytes, len, ret->registration_id);
    EVP_EncodeBlock((unsigned char *)ret->endorsement_key, bytes, (int)len);
    return ek_cert_read(t, a, &ret->cert);
}

static json_object *cert_json(const struct ek_cert *c) {
    json_object *o;

    if (!c->present)
        return NULL;
    o = json_object_new_object();
    json_object_object_add(o, "present", json_object_new_boolean(1));
    json_object_object_add(o, "readable", json_object_new_boolean(c->readable));
    if (c->readable) {
        json_object_object_add(o, "serial", json_object_new_string(c->serial));
        json_object_object_add(o, "sha256", json_object_new_string(c->sha256));
    } else
        json_object_object_add(o, "error", json_object_new_string(c->why_unreadable));
    return o;
}

int cmd_ek(const struct options *o) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    struct hierarchy_auths auths;
    struct ek_info info = {0};
    int r;

    r = cmd_open_tpm(o, &t, &auths);
    if (r < 0)
        return r;
    r = ek_info_collect(t, &auths, o->cfg.ek_handle, &info);
    hierarchy_auths_wipe(&auths);
    if (r < 0)
        goto out;

    switch (o->format) {
    case OUTPUT_JSON: {
        json_object *j = json_object_new_object();
        json_object_object_add(j, "registrationId", json_object_new_string(info.registration_id));
        json_object_object_add(j, "endorsementKey", json_object_new_string(info.endorsement_key));
        json_object_object_add(j, "ekCertificate", cert_json(&info.cert));
        json_object_object_add(j, "ekPersisted", json_object_new_boolean(info.persisted));
        puts(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
        json_object_put(j);
        break;
    }
    case OUTPUT_CSV:
        puts("registrationId,endorsementKey,ekCertSerial,ekCertSha256");
        printf("%s,%s,%s,%s\n", info.registration_id, info.endorsement_key,
               info.cert.readable ? info.cert.serial : "", info.cert.readable ? info.cert.sha256 : "");
        break;
    default:
        printf("Registration ID:  %s\n", info.registration_id);
        printf("Endorsement key:  %s\n", info.endorsement_key);
        printf("EK persisted:     %s\n", info.persisted ? "yes" : "no (computed from the template)");
        if (!info.cert.present)
            printf("EK certificate:   none\n");
        else if (!info.cert.readable)
            printf("EK certificate:   present, unreadable (%s)\n", info.cert.why_unreadable);
        else
            printf("EK certificate:   serial %s, SHA-256 %s\n", info.cert.serial, info.cert.sha256);
    }
    if (fflush(stdout) != 0)
        r = log_error_errno(errno, "Cannot write the output: %m");
out:
    ek_cert_done(&info.cert);
    return r;
}
