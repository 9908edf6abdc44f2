/* SPDX-License-Identifier: MIT */
/*
 * tpm-provision enroll: the manufacturing line's lists to DPS individual enrollments, through
 * the service API (protocol document 6) in bulk operations of at most 10.
 *
 * Every row of every list is checked before anything is sent (EK structure, B04; registration
 * ID rules, B05; duplicates within and across lists and earlier batches, B06): one bad row and
 * nothing is sent.
 *
 * Exactly once: enrollments are only ever created with bulk mode "create", which DPS refuses
 * (409) for a registration ID that exists, so no request, repeated or not, creates an
 * enrollment twice or overwrites one. A results journal (JSON lines, fsync'ed) records each
 * bulk call before it is sent and each row's outcome after: a run started again skips the rows
 * done, and sends the rows of an interrupted call again; a 409 is then resolved by reading the
 * enrollment back: the same EK means it is done ("exists"), another EK is a conflict that is
 * reported and left alone. Checking with GET before re-sending would not do: the interrupted
 * request may still be in flight and land after the GET. docs/manufacturing.md has the rest.
 */
#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/secret.h"
#include "cmd/common.h"
#include "dps/service.h"
#include "dps/wire.h"
#include "mfg/ekrows.h"
#include "mfg/listfile.h"

#define CONNECTION_STRING_CREDENTIAL "tpm-provision.dps-connection-string"
#define CONNECTION_STRING_MAX 1024
#define TWIN_MAX (64 * 1024)
#define JOURNAL_LINE_MAX (64 * 1024)
#define BACKOFF_BASE_MS 1000
#define BACKOFF_CAP_MS 60000
#define RETRY_AFTER_MAX_SEC 600
#define DEVICE_ID_MAX 128

#define log_oom() log_error_errno(ENOMEM, "Out of memory.")

enum row_state { ROW_NEW, ROW_SENT, ROW_CREATED, ROW_EXISTS, ROW_FAILED, ROW_CONFLICT };

static const char *const row_state_names[] = {
    [ROW_NEW] = "new",         [ROW_SENT] = "sent",     [ROW_CREATED] = "created",
    [ROW_EXISTS] = "exists",   [ROW_FAILED] = "failed", [ROW_CONFLICT] = "conflict",
};

/* The latest journal entry for one registration ID. */
struct journal_entry {
    char *registration_id;
    char ek_id[EKPUB_REGISTRATION_ID_LEN + 1]; /* the EK it was sent with (its derived ID) */
    enum row_state state;
    size_t order;
};

struct job {
    const struct options *o;
    struct ekrows *lists; /* previous batches first, then the lists to enrol */
    const char **names;
    size_t n_lists, n_previous;

    /* Per row to enrol, in list order. */
    struct ekrow **rows;
    const char **row_names;
    char **device_ids;
    size_t n_rows;

    char *journal_path;
    int journal_fd;
    struct journal_entry *journal;
    size_t n_journal;
    unsigned batches; /* bulk calls recorded so far, over all runs */

    char *twin;
    struct dps_service *dps;
    uint64_t deadline_ms;
    unsigned attempt;
    size_t created, exists, failed, skipped;
};

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(uint64_t ms) {
    struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void utc_now(char buf[static 32]) {
    time_t t = time(NULL);
    strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
}

/* ---- the journal ------------------------------------------------------------------------ */

static int journal_compare(const void *a, const void *b) {
    const struct journal_entry *x = a, *y = b;
    int c = strcmp(x->registration_id, y->registration_id);
    return c ? c : (x->order < y->order ? -1 : x->order > y->order);
}

static int journal_push(struct job *j, const char *regid, const char *ek_id, enum row_state s) {
    struct journal_entry *e;

    if (j->n_journal % 256 == 0) {
        e = reallocarray(j->journal, j->n_journal + 256, sizeof(*e));
        if (!e)
            return -ENOMEM;
        j->journal = e;
    }
    e = &j->journal[j->n_journal];
    *e = (struct journal_entry){.state = s, .order = j->n_journal};
    e->registration_id = strdup(regid);
    if (!e->registration_id)
        return -ENOMEM;
    snprintf(e->ek_id, sizeof(e->ek_id), "%s", ek_id ? ek_id : "");
    j->n_journal++;
    return 0;
}

static enum row_state state_from_string(const char *s) {
    for (size_t i = 0; i < ARRAY_SIZE(row_state_names); i++)
        if (strcmp(s, row_state_names[i]) == 0)
            return (enum row_state)i;
    return ROW_NEW;
}

/* One journal line: a bulk call about to be sent, or a row's outcome. */
static int journal_line(struct job *j, const char *line, size_t len, unsigned lineno) {
    json_object *o = json_tokener_parse(line), *v, *rows, *ek;
    int r = 0;
    (void)len;

    if (!o || !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        return log_error_errno(EBADMSG, "%s:%u: not a JSON object; is this a results file of "
                               "'enroll'?", j->journal_path, lineno);
    }
    if (json_object_object_get_ex(o, "rows", &rows) && json_object_is_type(rows, json_type_array)) {
        j->batches++;
        for (size_t i = 0; r >= 0 && i < json_object_array_length(rows); i++) {
            json_object *row = json_object_array_get_idx(rows, i), *id;
            if (json_object_object_get_ex(row, "registrationId", &id) &&
                json_object_object_get_ex(row, "ek", &ek))
                r = journal_push(j, json_object_get_string(id), json_object_get_string(ek),
                                 ROW_SENT);
        }
    } else if (json_object_object_get_ex(o, "registrationId", &v) &&
               json_object_object_get_ex(o, "status", &rows) &&
               json_object_object_get_ex(o, "ek", &ek))
        r = journal_push(j, json_object_get_string(v), json_object_get_string(ek),
                         state_from_string(json_object_get_string(rows)));
    json_object_put(o);
    return r == -ENOMEM ? log_oom() : r;
}

/* Keeps only the latest entry per registration ID, sorted for lookups. */
static void journal_compact(struct job *j) {
    size_t k = 0;

    if (j->n_journal == 0) /* no journal yet: qsort must not see its NULL array */
        return;
    qsort(j->journal, j->n_journal, sizeof(*j->journal), journal_compare);
    for (size_t i = 0; i < j->n_journal; i++) {
        if (i + 1 < j->n_journal &&
            strcmp(j->journal[i].registration_id, j->journal[i + 1].registration_id) == 0) {
            free(j->journal[i].registration_id);
            continue;
        }
        j->journal[k++] = j->journal[i];
    }
    j->n_journal = k;
}

static const struct journal_entry *journal_find(const struct job *j, const char *regid) {
    struct journal_entry key = {.registration_id = (char *)regid};
    size_t lo = 0, hi = j->n_journal;

    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(j->journal[mid].registration_id, key.registration_id);
        if (c == 0)
            return &j->journal[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Opens (creating) and locks the journal, and reads what earlier runs recorded. */
static int journal_open(struct job *j) {
    _cleanup_free_ char *data = NULL;
    struct stat st;
    size_t off = 0, len;
    unsigned lineno = 0;
    int flags = j->o->dry_run ? O_RDONLY : O_RDWR | O_APPEND | O_CREAT;
    int r;

    j->journal_fd = open(j->journal_path, flags | O_CLOEXEC | O_NOCTTY, 0644);
    if (j->journal_fd < 0 && errno == ENOENT && j->o->dry_run)
        return 0;
    if (j->journal_fd < 0) {
        int error = errno;
        log_error_errno(error, "Cannot open the results file %s: %m", j->journal_path);
        return path_error(error);
    }
    /* Two runs on one list would both send its rows: one at a time. */
    if (flock(j->journal_fd, (j->o->dry_run ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0)
        return log_error_errno(errno == EWOULDBLOCK ? EBUSY : errno, "%s is in use by another "
                               "'enroll'; wait for it to finish.", j->journal_path);
    if (fstat(j->journal_fd, &st) < 0)
        return log_error_errno(errno, "Cannot read %s: %m", j->journal_path);
    len = (size_t)st.st_size;
    data = malloc(len + 1);
    if (!data)
        return log_oom();
    if (pread(j->journal_fd, data, len, 0) != (ssize_t)len)
        return log_error_errno(EIO, "Cannot read %s.", j->journal_path);
    data[len] = '\0';

    while (off < len) {
        char *line = data + off, *nl = memchr(line, '\n', len - off);
        lineno++;
        if (!nl) {
            /* Our own half line from a crash: the call or outcome it recorded is treated as
             * unknown, which is safe (the rows are sent again with mode create). */
            log_warning("%s:%u: a half line from an interrupted run; cutting it off.",
                        j->journal_path, lineno);
            if (!j->o->dry_run && ftruncate(j->journal_fd, (off_t)off) < 0)
                return log_error_errno(errno, "Cannot repair %s: %m", j->journal_path);
            break;
        }
        *nl = '\0';
        off += (size_t)(nl - line) + 1;
        if (*line == '\0')
            continue;
        r = journal_line(j, line, (size_t)(nl - line), lineno);
        if (r < 0)
            return r;
    }
    journal_compact(j);
    return 0;
}

/* Appends text (whole lines) with one write() and makes it durable before going on. */
static int journal_write(struct job *j, const char *text) {
    size_t len = strlen(text);
    ssize_t n = write(j->journal_fd, text, len);

    if (n < 0 || (size_t)n != len)
        return log_error_errno(n < 0 ? errno : EIO, "Cannot write the results file %s: %m",
                               j->journal_path);
    if (fsync(j->journal_fd) < 0)
        return log_error_errno(errno, "Cannot flush the results file %s: %m", j->journal_path);
    return 0;
}

/* ---- checking the rows -------------------------------------------------------------------- */

/* The device ID template with {serial} and {registrationId} filled in. */
static int device_id_expand(const char *tmpl, const struct ekrow *row, char **ret,
                            const char **ret_why) {
    _cleanup_free_ char *out = calloc(1, DEVICE_ID_MAX + 2);
    size_t n = 0;

    if (!out)
        return -ENOMEM;
    for (const char *p = tmpl; *p;) {
        const char *v = NULL;
        size_t skip = 1;
        if (strncmp(p, "{serial}", 8) == 0) {
            v = row->device_serial;
            skip = 8;
            if (!v) {
                *ret_why = "the row has no deviceSerial for {serial}";
                return -EINVAL;
            }
        } else if (strncmp(p, "{registrationId}", 16) == 0) {
            v = row->effective_id;
            skip = 16;
        }
        size_t vlen = v ? strlen(v) : 1;
        if (n + vlen > DEVICE_ID_MAX) {
            *ret_why = "the device ID would be longer than 128 characters";
            return -EINVAL;
        }
        memcpy(out + n, v ? v : p, vlen);
        n += vlen;
        p += skip;
    }
    /* IoT Hub's device ID characters. */
    if (n == 0 || out[strspn(out, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-:.+%_#*?!(),=@$'")] != '\0') {
        *ret_why = "IoT Hub device IDs take letters, digits and - : . + % _ # * ? ! ( ) , = @ $ '";
        return -EINVAL;
    }
    *ret = TAKE_PTR(out);
    return 0;
}

static int row_refuse(struct ekrow *row, const char *why) {
    if (!row->error && asprintf(&row->error, "%s", why) < 0) {
        row->error = NULL;
        return -ENOMEM;
    }
    return 0;
}

static int compare_strings(const void *a, const void *b) {
    const char *const *x = a, *const *y = b;
    return strcmp(*x, *y);
}

/* Two rows with one device ID would be one device in the hub. */
static int check_device_ids(struct job *j) {
    _cleanup_free_ const char **ids = calloc(j->n_rows + 1, sizeof(*ids));
    size_t n = 0;

    if (!ids)
        return log_oom();
    for (size_t i = 0; i < j->n_rows; i++)
        if (j->device_ids[i] && !j->rows[i]->error)
            ids[n++] = j->device_ids[i];
    qsort(ids, n, sizeof(*ids), compare_strings);
    for (size_t i = 0; i + 1 < n; i++)
        if (strcmp(ids[i], ids[i + 1]) == 0)
            for (size_t k = 0; k < j->n_rows; k++)
                if (j->device_ids[k] && strcmp(j->device_ids[k], ids[i]) == 0 &&
                    row_refuse(j->rows[k], "its device ID is also another row's") < 0)
                    return log_oom();
    return 0;
}

/* Refuses a row the journal says was enrolled with another EK under its registration ID. */
static int check_against_journal(struct job *j, struct ekrow *row) {
    const struct journal_entry *e = journal_find(j, row->effective_id);
    _cleanup_free_ char *why = NULL;

    if (!e || !e->ek_id[0] || strcmp(e->ek_id, row->derived_id) == 0)
        return 0;
    if (asprintf(&why, "registration ID %s was sent with another EK by an earlier run (%s)",
                 row->effective_id, j->journal_path) < 0)
        return log_oom();
    return row_refuse(row, why) < 0 ? log_oom() : 0;
}

/* Collects the rows to enrol, checks them all, and reports every refused row. */
static int check_rows(struct job *j) {
    size_t bad = 0, custom = 0;
    int r;

    {
        struct ekrows *ptrs[j->n_lists];
        for (size_t i = 0; i < j->n_lists; i++)
            ptrs[i] = &j->lists[i];
        r = ekrows_mark_duplicates(ptrs, j->names, j->n_lists, j->n_previous);
        if (r < 0)
            return log_oom();
    }
    for (size_t i = j->n_previous; i < j->n_lists; i++)
        j->n_rows += j->lists[i].n_rows;
    j->rows = calloc(j->n_rows + 1, sizeof(*j->rows));
    j->row_names = calloc(j->n_rows + 1, sizeof(*j->row_names));
    j->device_ids = calloc(j->n_rows + 1, sizeof(*j->device_ids));
    if (!j->rows || !j->row_names || !j->device_ids)
        return log_oom();

    j->n_rows = 0;
    for (size_t i = j->n_previous; i < j->n_lists; i++) {
        if (j->lists[i].torn) {
            log_error("%s:%u: a half row without a newline (an interrupted write?). Check that "
                      "device, then delete the line or end it with a newline; 'ek --append' "
                      "cuts it off.", j->names[i], j->lists[i].torn_line);
            bad++;
        } else if (j->lists[i].n_rows == 0)
            log_warning("%s holds no rows: nothing of it is enrolled. Is it the list that was "
                        "meant?", j->names[i]);
        for (size_t k = 0; k < j->lists[i].n_rows; k++) {
            struct ekrow *row = &j->lists[i].rows[k];
            const char *why = "out of memory";
            j->rows[j->n_rows] = row;
            j->row_names[j->n_rows] = j->names[i];
            if (!row->error && j->o->device_id &&
                device_id_expand(j->o->device_id, row, &j->device_ids[j->n_rows], &why) < 0 &&
                row_refuse(row, why) < 0)
                return log_oom();
            if (!row->error && check_against_journal(j, row) < 0)
                return -ENOMEM;
            j->n_rows++;
        }
    }
    r = check_device_ids(j);
    if (r < 0)
        return r;

    for (size_t i = 0; i < j->n_rows; i++) {
        if (j->rows[i]->error) {
            log_error("%s:%u: %s.", j->row_names[i], j->rows[i]->line, j->rows[i]->error);
            bad++;
        } else if (j->rows[i]->custom_id)
            custom++;
    }
    if (bad)
        return log_error_errno(EINVAL, "%zu of %zu rows refused; nothing was sent.", bad,
                               j->n_rows);
    if (custom)
        log_info("%zu rows carry a registration ID of their own, not the EK's: those devices "
                 "must be configured with that RegistrationId=.", custom);
    return 0;
}

static bool host_valid(const char *h) {
    size_t len = strlen(h);
    return len > 0 && len <= 253 && h[0] != '.' && h[0] != '-' &&
           h[strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")] == '\0';
}

static int check_options(struct job *j) {
    const struct options *o = j->o;

    if (o->n_lists == 0)
        return log_error_errno(EINVAL, "Name at least one list with --list=FILE.");
    if (o->provisioning_status && strcmp(o->provisioning_status, "enabled") != 0 &&
        strcmp(o->provisioning_status, "disabled") != 0)
        return log_error_errno(EINVAL, "--provisioning-status is enabled or disabled, not '%s'.",
                               o->provisioning_status);
    if (o->allocation && strcmp(o->allocation, "hashed") != 0 &&
        strcmp(o->allocation, "geoLatency") != 0 && strcmp(o->allocation, "static") != 0)
        return log_error_errno(EINVAL, "--allocation is hashed, geoLatency or static, not '%s' "
                               "(custom allocation needs a webhook; set it on the enrollments "
                               "afterwards).", o->allocation);
    if (o->allocation && strcmp(o->allocation, "static") == 0 && o->n_iot_hubs != 1)
        return log_error_errno(EINVAL, "--allocation=static needs exactly one --iot-hub.");
    for (size_t i = 0; i < o->n_iot_hubs; i++)
        if (!host_valid(o->iot_hubs[i]))
            return log_error_errno(EINVAL, "--iot-hub '%s' is not a host name.", o->iot_hubs[i]);
    return 0;
}

static int read_twin(struct job *j) {
    _cleanup_close_ int fd = -1;
    json_object *twin;
    ssize_t n;

    if (!j->o->initial_twin)
        return 0;
    fd = open(j->o->initial_twin, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int error = errno;
        log_error_errno(error, "Cannot open the initial twin %s: %m", j->o->initial_twin);
        return path_error(error);
    }
    j->twin = calloc(1, TWIN_MAX + 1);
    if (!j->twin)
        return log_oom();
    n = read(fd, j->twin, TWIN_MAX + 1);
    if (n < 0 || n > TWIN_MAX)
        return log_error_errno(n < 0 ? errno : E2BIG, "Cannot read the initial twin %s (at most "
                               "64 KiB): %m", j->o->initial_twin);
    twin = json_tokener_parse(j->twin);
    if (!twin || !json_object_is_type(twin, json_type_object)) {
        json_object_put(twin);
        return log_error_errno(EINVAL, "The initial twin %s is not a JSON object.",
                               j->o->initial_twin);
    }
    json_object_put(twin);
    return 0;
}

/* ---- talking to DPS ----------------------------------------------------------------------- */

static int read_connection_string(const struct options *o, struct dps_connection_string *ret) {
    _cleanup_free_ char *cred = NULL;
    const char *path = o->connection_string_file, *why;
    char buf[CONNECTION_STRING_MAX + 1];
    size_t len;
    int r;

    if (!path) {
        r = secret_credential_path(CONNECTION_STRING_CREDENTIAL, &cred);
        if (r < 0)
            return log_error_errno(EINVAL, "No connection string: give --connection-string-file="
                                   "FILE or the systemd credential %s.",
                                   CONNECTION_STRING_CREDENTIAL);
        path = cred;
    }
    /* The value itself given as the option: say so without repeating it in the log. */
    if (strcasestr(path, "SharedAccessKey") || strchr(path, ';'))
        return log_error_errno(EINVAL, "--connection-string-file takes the name of a file, not "
                               "the connection string itself, which must never be on a command "
                               "line (it shows in ps and in shell history).");
    r = secret_read_file(path, CONNECTION_STRING_MAX, (uint8_t *)buf, &len);
    if (r < 0) {
        log_error_errno(r, "Cannot read the connection string from %s: %m", path);
        return path_error(-r);
    }
    buf[len] = '\0';
    r = dps_connection_string_parse(buf, ret, &why);
    secure_zero(buf, sizeof(buf));
    if (r < 0)
        return log_error_errno(r, "The connection string in %s is not usable: %s.", path, why);
    return 0;
}

/* Waits before the next attempt: retry-after when DPS gave one, else backoff with jitter. */
static int wait_before_retry(struct job *j, const struct http_response *resp, const char *why) {
    uint64_t delay_ms, rnd = 0;
    int64_t after = -1;

    if (resp && resp->retry_after)
        after = dps_retry_after_parse(resp->retry_after, time(NULL), 1, RETRY_AFTER_MAX_SEC);
    if (after >= 0)
        delay_ms = (uint64_t)after * 1000;
    else {
        RAND_bytes((unsigned char *)&rnd, sizeof(rnd));
        delay_ms = dps_backoff_ms(j->attempt, BACKOFF_BASE_MS, BACKOFF_CAP_MS, rnd);
    }
    j->attempt++;
    if (j->deadline_ms && now_ms() + delay_ms > j->deadline_ms)
        return log_error_errno(ETIMEDOUT, "%s; the deadline (TimeoutSec=%u) would pass before the "
                               "next attempt. Run 'enroll' again later: it goes on where it "
                               "stopped.", why, j->o->cfg.deadline_sec);
    log_info("%s; trying again in %llu s.", why, (unsigned long long)((delay_ms + 999) / 1000));
    sleep_ms(delay_ms);
    return 0;
}

/* A refusal of the whole request: logged once, with what to do about it. */
static int refused(struct job *j, const char *what, const struct http_response *resp) {
    _cleanup_free_ char *message = NULL;
    int64_t code;

    dps_service_error_parse(resp->body, &code, &message);
    if (resp->status == 401 || resp->status == 403)
        return log_error_errno(ECONNREFUSED, "DPS refused %s with the policy '%s': HTTP %ld, "
                               "%lld, %s. Creating enrollments needs a policy with the "
                               "EnrollmentWrite permission (such as provisioningserviceowner); "
                               "check also the key and the clock.", what,
                               dps_service_key_name(j->dps), resp->status, (long long)code,
                               message ? message : "no message");
    return log_error_errno(ECONNREFUSED, "DPS refused %s: HTTP %ld, %lld, %s.", what,
                           resp->status, (long long)code, message ? message : "no message");
}

/*
 * One request, repeated while DPS or the network says "later" (429, 5xx, network failures).
 * 0 with *resp holding any other answer; a negative errno, logged, when the run must stop.
 */
static int exchange(struct job *j, const char *what, const char *method, const char *path,
                    const char *body, struct http_response *resp) {
    for (;;) {
        char why[320];
        int r = dps_service_request(j->dps, method, path, body, resp);

        if (r < 0 && resp->failure != HTTP_FAIL_NETWORK && resp->failure != HTTP_FAIL_ANSWER) {
            r = log_error_errno(r, "%s at %s failed: %s.", what, dps_service_endpoint(j->dps),
                                resp->error);
            http_response_done(resp);
            return r;
        }
        if (r < 0)
            snprintf(why, sizeof(why), "%s: %s", what, resp->error);
        else if (resp->status == 429 || resp->status >= 500)
            snprintf(why, sizeof(why), "%s: DPS answered %ld", what, resp->status);
        else {
            j->attempt = 0;
            return 0;
        }
        r = wait_before_retry(j, r < 0 ? NULL : resp, why);
        http_response_done(resp);
        if (r < 0)
            return r;
    }
}

/* A 409 on create: the enrollment exists. Ours (same EK) from an earlier, interrupted call,
 * or someone else's, which is left alone. */
static enum row_state resolve_existing(struct job *j, const struct ekrow *row, char **ret_msg) {
    _cleanup_free_ char *path = NULL, *enc = dps_url_encode(row->effective_id), *ek = NULL;
    struct http_response resp = {0};
    enum row_state s = ROW_FAILED;

    if (!enc || asprintf(&path, "/enrollments/%s", enc) < 0)
        return ROW_FAILED;
    if (exchange(j, "Reading an existing enrollment", "GET", path, NULL, &resp) < 0)
        return ROW_FAILED;
    if (resp.status == 200 && (ek = dps_enrollment_ek(resp.body)) &&
        strcmp(ek, row->endorsement_key) == 0)
        s = ROW_EXISTS;
    else if (resp.status == 200) {
        s = ROW_CONFLICT;
        *ret_msg = strdup("an enrollment with this registration ID exists with another EK; "
                          "left as it is");
    } else if (asprintf(ret_msg, "exists, but reading it back answered HTTP %ld", resp.status) < 0)
        *ret_msg = NULL;
    http_response_done(&resp);
    return s;
}

static int result_line(json_object *lines, struct job *j, size_t i, enum row_state s,
                       int64_t code, const char *message) {
    const struct ekrow *row = j->rows[i];
    json_object *o = json_object_new_object();
    char now[32], source[PATH_MAX + 16];

    utc_now(now);
    snprintf(source, sizeof(source), "%s:%u", j->row_names[i], row->line);
    json_object_object_add(o, "registrationId", json_object_new_string(row->effective_id));
    json_object_object_add(o, "ek", json_object_new_string(row->derived_id));
    json_object_object_add(o, "status", json_object_new_string(row_state_names[s]));
    if (code)
        json_object_object_add(o, "errorCode", json_object_new_int64(code));
    if (message)
        json_object_object_add(o, "message", json_object_new_string(message));
    if (row->device_serial)
        json_object_object_add(o, "deviceSerial", json_object_new_string(row->device_serial));
    if (j->device_ids[i])
        json_object_object_add(o, "deviceId", json_object_new_string(j->device_ids[i]));
    json_object_object_add(o, "source", json_object_new_string(source));
    json_object_object_add(o, "batch", json_object_new_int((int)j->batches));
    json_object_object_add(o, "time", json_object_new_string(now));
    return json_object_array_add(lines, o);
}

static char *lines_text(json_object *lines) {
    size_t n = json_object_array_length(lines), len = 0;
    char *text = NULL;
    FILE *f = open_memstream(&text, &len);

    if (!f)
        return NULL;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s\n", json_object_to_json_string_ext(json_object_array_get_idx(lines, i),
                                                           JSON_C_TO_STRING_PLAIN |
                                                               JSON_C_TO_STRING_NOSLASHESCAPE));
    if (fclose(f) != 0) {
        free(text);
        return NULL;
    }
    return text;
}

static const struct dps_bulk_error *bulk_error_for(const struct dps_bulk_result *res,
                                                   const char *regid) {
    for (size_t i = 0; i < res->n_errors; i++)
        if (strcmp(res->errors[i].registration_id, regid) == 0)
            return &res->errors[i];
    return NULL;
}

/* Each row's outcome, logged when it failed, and written to the journal in one write. */
static int record_outcomes(struct job *j, const size_t *idx, size_t n,
                           const struct dps_bulk_result *res) {
    json_object *lines = json_object_new_array();
    _cleanup_free_ char *text = NULL;
    int r;

    for (size_t k = 0; k < n; k++) {
        const struct ekrow *row = j->rows[idx[k]];
        const struct dps_bulk_error *e = bulk_error_for(res, row->effective_id);
        _cleanup_free_ char *msg = NULL;
        enum row_state s = ROW_CREATED;

        if (e && e->code / 1000 == 409)
            s = resolve_existing(j, row, &msg);
        else if (e)
            s = ROW_FAILED;
        if (s == ROW_CREATED)
            j->created++;
        else if (s == ROW_EXISTS)
            j->exists++;
        else {
            j->failed++;
            log_error("%s:%u: %s not enrolled: %s%s%lld.", j->row_names[idx[k]], row->line,
                      row->effective_id, msg ? msg : e && e->status ? e->status : "failed",
                      e ? ", error code " : "", e ? (long long)e->code : 0LL);
        }
        result_line(lines, j, idx[k], s, e ? e->code : 0, msg ? msg : e ? e->status : NULL);
    }
    text = lines_text(lines);
    json_object_put(lines);
    if (!text)
        return log_oom();
    r = journal_write(j, text);
    return r;
}

static void fill_enrollment(const struct job *j, size_t i, struct dps_enrollment *e) {
    const struct ekrow *row = j->rows[i];

    *e = (struct dps_enrollment){
        .registration_id = row->effective_id,
        .endorsement_key = row->endorsement_key,
        .device_id = j->device_ids[i],
        .provisioning_status = j->o->provisioning_status,
        .allocation_policy = j->o->allocation,
        .iot_hubs = j->o->iot_hubs,
        .n_iot_hubs = j->o->n_iot_hubs,
        .initial_twin_json = j->twin,
    };
}

static char *batch_line(struct job *j, const size_t *idx, size_t n) {
    json_object *o = json_object_new_object(), *rows = json_object_new_array();
    char now[32], *text = NULL;

    utc_now(now);
    json_object_object_add(o, "batch", json_object_new_int((int)j->batches));
    json_object_object_add(o, "time", json_object_new_string(now));
    for (size_t k = 0; k < n; k++) {
        json_object *r = json_object_new_object();
        json_object_object_add(r, "registrationId",
                               json_object_new_string(j->rows[idx[k]]->effective_id));
        json_object_object_add(r, "ek", json_object_new_string(j->rows[idx[k]]->derived_id));
        json_object_array_add(rows, r);
    }
    json_object_object_add(o, "rows", rows);
    if (asprintf(&text, "%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN)) < 0)
        text = NULL;
    json_object_put(o);
    return text;
}

/* One bulk call: recorded before it is sent, its outcomes after. */
static int send_batch(struct job *j, const size_t *idx, size_t n, const char *body) {
    _cleanup_free_ char *line = NULL;
    struct http_response resp = {0};
    struct dps_bulk_result res = {0};
    char what[64];
    int r;

    j->batches++;
    line = batch_line(j, idx, n);
    if (!line)
        return log_oom();
    r = journal_write(j, line);
    if (r < 0)
        return r;

    snprintf(what, sizeof(what), "Bulk operation %u (%zu rows)", j->batches, n);
    r = exchange(j, what, "POST", "/enrollments", body, &resp);
    if (r < 0)
        return r;
    if (resp.status != 200) {
        r = refused(j, what, &resp);
        http_response_done(&resp);
        return r;
    }
    r = dps_bulk_result_parse(resp.body, &res);
    http_response_done(&resp);
    if (r < 0)
        return log_error_errno(r, "%s: DPS's answer is not a bulk operation result; the rows "
                               "are sent again by the next run.", what);
    log_info("%s: %zu created or refused by DPS.", what, n - res.n_errors);
    r = record_outcomes(j, idx, n, &res);
    dps_bulk_result_done(&res);
    return r;
}

/* The rows still to send: not recorded as created or existing by this or an earlier run. */
static bool row_pending(struct job *j, size_t i) {
    const struct journal_entry *e = journal_find(j, j->rows[i]->effective_id);

    if (e && (e->state == ROW_CREATED || e->state == ROW_EXISTS))
        return false;
    return true;
}

static int run_batches(struct job *j) {
    size_t idx[DPS_BULK_MAX], n = 0, uncertain = 0;
    int r;

    /* Counted before any batch: a run that stops half way still says what earlier runs did. */
    for (size_t i = 0; i < j->n_rows; i++) {
        const struct journal_entry *e = journal_find(j, j->rows[i]->effective_id);
        uncertain += e && e->state == ROW_SENT;
        j->skipped += !row_pending(j, i);
    }
    if (uncertain)
        log_notice("%zu rows were in a bulk call an earlier run did not see the end of; they "
                   "are sent again with mode create, and those that exist are read back.",
                   uncertain);

    for (size_t i = 0; i <= j->n_rows; i++) {
        if (i < j->n_rows && !row_pending(j, i))
            continue;
        if (i < j->n_rows)
            idx[n++] = i;
        if (n == 0 || (n < DPS_BULK_MAX && i < j->n_rows))
            continue;

        struct dps_enrollment e[DPS_BULK_MAX];
        _cleanup_free_ char *body = NULL;
        for (size_t k = 0; k < n; k++)
            fill_enrollment(j, idx[k], &e[k]);
        body = dps_bulk_body("create", e, n, &r);
        if (!body)
            return log_error_errno(r, "Cannot build the bulk request: %m");
        if (j->o->dry_run)
            puts(body);
        else {
            r = send_batch(j, idx, n, body);
            if (r < 0)
                return r;
        }
        n = 0;
    }
    return 0;
}

/* ---- the command -------------------------------------------------------------------------- */

static int load_lists(struct job *j) {
    const struct options *o = j->o;

    j->n_previous = o->n_previous;
    j->n_lists = o->n_previous + o->n_lists;
    j->lists = calloc(j->n_lists, sizeof(*j->lists));
    j->names = calloc(j->n_lists, sizeof(*j->names));
    if (!j->lists || !j->names)
        return log_oom();
    for (size_t i = 0; i < j->n_lists; i++) {
        j->names[i] = i < o->n_previous ? o->previous[i] : o->lists[i - o->n_previous];
        int r = listfile_load(j->names[i], &j->lists[i]);
        if (r >= 0 && i < o->n_previous)
            r = listfile_require_whole(j->names[i], &j->lists[i]);
        if (r < 0)
            return r;
    }
    /* Results appended to a list would turn it into something no later run can read. */
    struct stat rs, ls;
    if (o->results && stat(o->results, &rs) == 0)
        for (size_t i = 0; i < j->n_lists; i++)
            if (stat(j->names[i], &ls) == 0 && ls.st_dev == rs.st_dev && ls.st_ino == rs.st_ino)
                return log_error_errno(EINVAL, "--results=%s is the list %s itself: results go "
                                       "in a file of their own (by default the first list's "
                                       "name with .results.jsonl).", o->results, j->names[i]);
    return 0;
}

static void job_done(struct job *j) {
    for (size_t i = 0; i < j->n_lists; i++)
        ekrows_done(&j->lists[i]);
    for (size_t i = 0; i < j->n_rows; i++)
        free(j->device_ids ? j->device_ids[i] : NULL);
    for (size_t i = 0; i < j->n_journal; i++)
        free(j->journal[i].registration_id);
    if (j->journal_fd >= 0)
        close(j->journal_fd);
    dps_service_free(j->dps);
    free(j->lists);
    free(j->names);
    free(j->rows);
    free(j->row_names);
    free(j->device_ids);
    free(j->journal);
    free(j->journal_path);
    free(j->twin);
}

static int enroll(struct job *j) {
    const struct options *o = j->o;
    struct dps_connection_string cs = {0};
    int r;

    r = check_options(j);
    if (r < 0)
        return r;
    r = read_twin(j);
    if (r < 0)
        return r;
    r = load_lists(j);
    if (r < 0)
        return r;
    if (o->results)
        j->journal_path = strdup(o->results);
    else if (asprintf(&j->journal_path, "%s.results.jsonl", o->lists[0]) < 0)
        j->journal_path = NULL;
    if (!j->journal_path)
        return log_oom();
    r = journal_open(j);
    if (r < 0)
        return r;
    r = check_rows(j);
    if (r < 0)
        return r;

    if (o->dry_run) {
        r = run_batches(j);
        log_info("Dry run: %zu rows checked, %zu already enrolled by earlier runs; nothing sent.",
                 j->n_rows, j->skipped);
        return r;
    }

    if (o->cfg.ca_bundle && config_check_ca_bundle(o->cfg.ca_bundle) < 0)
        return -EINVAL;
    r = read_connection_string(o, &cs);
    if (r < 0)
        return r;
    struct http_options ho = {
        .ca_bundle = o->cfg.ca_bundle,
        .proxy = o->cfg.proxy,
        .no_proxy = o->cfg.no_proxy,
        .timeout_sec = o->cfg.request_timeout_sec,
        .clock_floor = o->clock_floor,
    };
    r = dps_service_new(&cs, o->service_endpoint, &ho, &j->dps);
    dps_connection_string_done(&cs);
    if (r < 0)
        return log_error_errno(r, "Cannot set up HTTPS: %m");
    if (o->cfg.deadline_sec)
        j->deadline_ms = now_ms() + (uint64_t)o->cfg.deadline_sec * 1000;
    log_info("Enrolling %zu rows with %s at %s as policy %s; results in %s.", j->n_rows,
             dps_service_host(j->dps), dps_service_endpoint(j->dps), dps_service_key_name(j->dps),
             j->journal_path);

    r = run_batches(j);
    /* A run stopped half way (TLS refused, the deadline) leaves rows without an outcome: not
     * sent, or in the bulk call whose answer never came. The next run settles both. */
    size_t counted = j->created + j->exists + j->failed + j->skipped;
    size_t left = j->n_rows > counted ? j->n_rows - counted : 0;
    log_info("%zu created, %zu existed already, %zu failed, %zu left for the next run, %zu done "
             "by earlier runs.", j->created, j->exists, j->failed, left, j->skipped);
    if (r < 0)
        return r;
    if (j->failed)
        return log_error_errno(ECONNREFUSED, "%zu rows were not enrolled; see %s. Running "
                               "'enroll' again retries them.", j->failed, j->journal_path);
    return 0;
}

int cmd_enroll(const struct options *o) {
    struct job j = {.o = o, .journal_fd = -1};
    int r = enroll(&j);

    job_done(&j);
    return r;
}
