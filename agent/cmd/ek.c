/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision ek: what a manufacturing line records for the DPS enrolment. The EK is read
 * fresh from the TPM every time (field case B06), and the exported bytes are checked to be the
 * marshaled TPM2B_PUBLIC DPS takes (B04) before they are printed. With --serial or --append it
 * makes one list row (agent/mfg/ekrows.h) bound to the device's serial, and appends it to the
 * line's list unless that EK, registration ID or serial is already recorded (B06).
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "mfg/ekrows.h"
#include "mfg/listfile.h"
#include "tpm/ekpub.h"
#include "tpm/keys.h"

/* Where the device serial is read from when --serial is not given: DMI (x86, some arm64), then
 * the device tree (most arm boards). $TPM_PROVISION_SERIAL_FILES (':'-separated) replaces the
 * list, for tests. */
static const char serial_files_default[] =
    "/sys/class/dmi/id/product_serial:/proc/device-tree/serial-number";

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

/* The first line of a serial file, without the NUL a device tree property ends with and
 * without surrounding white space. -ENOENT when the file is missing or empty. */
static int serial_read_file(const char *path, char *buf, size_t size) {
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ssize_t n;
    size_t len;
    char *s;

    if (fd < 0)
        return -errno;
    n = read(fd, buf, size - 1);
    if (n < 0)
        return -errno;
    buf[n] = '\0';
    buf[strcspn(buf, "\n")] = '\0';
    len = strlen(buf);
    while (len > 0 && (buf[len - 1] == ' ' || buf[len - 1] == '\t'))
        buf[--len] = '\0';
    s = buf + strspn(buf, " \t");
    memmove(buf, s, strlen(s) + 1);
    return buf[0] ? 0 : -ENOENT;
}

static int serial_find(const struct options *o, char *buf, size_t size) {
    const char *files = getenv("TPM_PROVISION_SERIAL_FILES");
    _cleanup_free_ char *list = strdup(files ? files : serial_files_default);
    const char *why;
    char *save = NULL;

    if (!list)
        return -ENOMEM;
    if (o->serial) {
        if (ekrows_serial_valid(o->serial, &why) < 0)
            return log_error_errno(EINVAL, "Invalid --serial '%s': %s.", o->serial, why);
        if (ekrows_serial_is_placeholder(o->serial))
            return log_error_errno(EINVAL, "--serial '%s' is a placeholder value, not a device's "
                                   "own serial.", o->serial);
        snprintf(buf, size, "%s", o->serial);
        return 0;
    }
    for (char *path = strtok_r(list, ":", &save); path; path = strtok_r(NULL, ":", &save)) {
        int r = serial_read_file(path, buf, size);
        if (r == -ENOENT)
            continue;
        if (r < 0)
            return log_error_errno(r, "Cannot read the device serial from %s: %m", path);
        /* Boards shipped with the firmware's default string would all share one serial (B06). */
        if (ekrows_serial_is_placeholder(buf))
            return log_error_errno(EINVAL, "The device serial in %s is the placeholder '%s'; give "
                                   "the device's serial with --serial.", path, buf);
        if (ekrows_serial_valid(buf, &why) < 0)
            return log_error_errno(EINVAL, "The device serial in %s cannot go into a list: %s; "
                                   "give it with --serial.", path, why);
        log_debug("Device serial %s from %s.", buf, path);
        return 0;
    }
    return log_error_errno(EINVAL, "No device serial: none in %s. Give it with --serial.",
                           files ? files : serial_files_default);
}

static int load_previous(const struct options *o, struct ekrows *lists) {
    for (size_t i = 0; i < o->n_previous; i++) {
        size_t bad = 0;
        int r = listfile_load(o->previous[i], &lists[i]);
        if (r >= 0)
            r = listfile_require_whole(o->previous[i], &lists[i]);
        if (r < 0)
            return r;
        for (size_t j = 0; j < lists[i].n_rows; j++)
            bad += lists[i].rows[j].error != NULL;
        if (bad)
            log_warning("%s: %zu rows cannot be read and are not compared against.",
                        o->previous[i], bad);
    }
    return 0;
}

static void list_row_print(const struct ekrow *row, enum output_format f, bool appended) {
    if (f == OUTPUT_JSON || f == OUTPUT_CSV) {
        _cleanup_free_ char *line =
            ekrows_format_row(row, f == OUTPUT_JSON ? EKROWS_FORMAT_JSON : EKROWS_FORMAT_CSV);
        if (f == OUTPUT_CSV && !appended)
            fputs(ekrows_csv_header, stdout);
        if (line)
            fputs(line, stdout);
        return;
    }
    printf("Registration ID:  %s\n", row->effective_id);
    printf("Endorsement key:  %s\n", row->endorsement_key);
    if (row->ek_cert_sha256)
        printf("EK certificate:   serial %s, SHA-256 %s\n", row->ek_cert_serial,
               row->ek_cert_sha256);
    else
        printf("EK certificate:   none readable\n");
    printf("Device serial:    %s\n", row->device_serial);
    printf("Time:             %s\n", row->time);
}

static int append_row(const struct options *o, const struct ekrow *row) {
    _cleanup_free_ struct ekrows *previous = calloc(o->n_previous + 1, sizeof(*previous));
    _cleanup_free_ struct ekrows **ptrs = calloc(o->n_previous + 1, sizeof(*ptrs));
    struct listfile_conflict c = {0};
    struct ekrows list = {0};
    enum ekrows_format f = o->format == OUTPUT_JSON  ? EKROWS_FORMAT_JSON
                           : o->format == OUTPUT_CSV ? EKROWS_FORMAT_CSV
                                                     : EKROWS_FORMAT_UNKNOWN;
    int r;

    if (!previous || !ptrs)
        return log_error_errno(ENOMEM, "Out of memory.");
    r = load_previous(o, previous);
    for (size_t i = 0; i < o->n_previous; i++)
        ptrs[i] = &previous[i];
    if (r >= 0)
        r = listfile_append(o->append, f, row, ptrs, o->previous, o->n_previous, &list, &c);
    if (r == -EEXIST && c.same_device) {
        log_notice("This device (serial %s, registration ID %s) is already in %s, line %u; "
                   "nothing appended.", row->device_serial, row->effective_id, c.where,
                   c.row->line);
        r = 0;
    } else if (r == -EEXIST) {
        const char *what = strcmp(c.row->derived_id, row->derived_id) == 0 ? "Its EK"
                           : strcmp(c.row->effective_id, row->effective_id) == 0
                               ? "Its registration ID"
                               : "Its device serial";
        r = log_error_errno(ENOTUNIQ, "Row for device serial %s refused: %s is already in %s, "
                            "line %u (device serial %s). Either that row was captured from the "
                            "wrong device or this TPM or serial is shared (field case B06); "
                            "nothing appended.", row->device_serial, what, c.where, c.row->line,
                            c.row->device_serial ? c.row->device_serial : "none");
    } else if (r >= 0)
        log_info("Appended %s (serial %s) to %s.", row->effective_id, row->device_serial,
                 o->append);
    ekrows_done(&list);
    for (size_t i = 0; i < o->n_previous; i++)
        ekrows_done(&previous[i]);
    return r;
}

/* The manufacturing line's row: the EK facts plus the device serial and the time. */
static int cmd_ek_line(const struct options *o, const struct ek_info *info) {
    char serial[EKROWS_SERIAL_MAX + 2], now[32];
    struct ekrow row = {0};
    time_t t = time(NULL);
    int r;

    r = serial_find(o, serial, sizeof(serial));
    if (r < 0)
        return r;
    strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    row.registration_id = (char *)info->registration_id;
    row.endorsement_key = (char *)info->endorsement_key;
    row.ek_cert_serial = info->cert.readable ? (char *)info->cert.serial : NULL;
    row.ek_cert_sha256 = info->cert.readable ? (char *)info->cert.sha256 : NULL;
    row.device_serial = serial;
    row.time = now;
    /* The same check enroll makes: what is written can be read back. */
    if (ekrows_check_row(&row) < 0) {
        r = log_error_errno(EBADMSG, "The row for this device does not check: %s.", row.error);
        free(row.error);
        return r;
    }
    if (o->append) {
        r = append_row(o, &row);
        if (r < 0)
            return r;
    }
    list_row_print(&row, o->format, o->append != NULL);
    return 0;
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
    if (o->append || o->serial) {
        r = cmd_ek_line(o, &info);
        goto flush;
    }

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
flush:
    if (fflush(stdout) != 0 && r >= 0)
        r = log_error_errno(errno, "Cannot write the output: %m");
out:
    ek_cert_done(&info.cert);
    return r;
}
