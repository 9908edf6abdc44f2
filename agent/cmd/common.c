/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "basic/log.h"
#include "tpm/tpm-rc.h"

int cmd_open_tpm(const struct options *o, struct tpm **ret_tpm, struct hierarchy_auths *ret_auths) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    const char *files[_HIERARCHY_MAX] = {
        [HIERARCHY_OWNER] = o->cfg.owner_auth_file,
        [HIERARCHY_ENDORSEMENT] = o->cfg.endorsement_auth_file,
        [HIERARCHY_LOCKOUT] = o->cfg.lockout_auth_file,
    };
    int r;

    *ret_auths = (struct hierarchy_auths){0};
    for (int h = 0; h < _HIERARCHY_MAX; h++) {
        r = auth_value_load(&ret_auths->auth[h], files[h], hierarchy_credential(h));
        if (r < 0)
            goto fail;
    }
    r = auth_value_load(&ret_auths->new_lockout, o->set_lockout_auth_file,
                        "tpm-provision.new-lockout-auth");
    if (r < 0)
        goto fail;

    /* TPM properties are read where they are needed: the boot fast path needs none. */
    r = tpm_open(o->cfg.tcti, &t);
    if (r < 0)
        goto fail;
    hierarchy_auths_apply(t, ret_auths);

    *ret_tpm = TAKE_PTR(t);
    return 0;

fail:
    hierarchy_auths_wipe(ret_auths);
    return r;
}

const char *cmd_runtime_dir(void) {
    const char *d = getenv("RUNTIME_DIRECTORY");

    /* systemd may list several directories separated by ':'; the first is ours. */
    if (d && *d && !strchr(d, ':'))
        return d;
    return RUNTIME_DIR_DEFAULT;
}

static int ensure_runtime_dir(void) {
    const char *dir = cmd_runtime_dir();

    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return log_error_errno(errno, "Cannot create %s: %m", dir);
    return 0;
}

int cmd_lock(unsigned timeout_sec) {
    _cleanup_free_ char *path = NULL;
    int fd, r;

    if (asprintf(&path, "%s/lock", cmd_runtime_dir()) < 0)
        return -ENOMEM;
    (void)ensure_runtime_dir();
    /* 0644 and flock() on a read-only descriptor: a member of the tss group who may use the
     * TPM but not write to /run still takes part in the locking. */
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0 && (errno == EACCES || errno == EROFS))
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return log_error_errno(errno, "Cannot open the lock file %s: %m. Run as root, or as "
                               "the user the tpm-provision units run as.", path);

    for (unsigned waited_ms = 0;; waited_ms += 100) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return fd;
        if (errno != EWOULDBLOCK) {
            r = log_error_errno(errno, "Cannot lock %s: %m", path);
            break;
        }
        if (waited_ms == 0)
            log_info("Another tpm-provision is working on the TPM; waiting for it to finish.");
        if (waited_ms >= timeout_sec * 1000) {
            r = log_error_errno(EBUSY, "Another tpm-provision still holds %s after %u s; "
                                "giving up.", path, timeout_sec);
            break;
        }
        usleep(100 * 1000);
    }
    close(fd);
    return r;
}

int cmd_ensure_state(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE index,
                     struct nvstate *ret) {
    int r;

    r = nvstate_load(t, index, true, ret);
    if (r == -EEXIST)
        return log_error_errno(EEXIST, "NV index 0x%08x exists and was not defined by "
                               "tpm-provision; it is left alone. Choose another with "
                               "--state-index or StateIndex=.", index);
    if (r < 0)
        return log_error_errno(r, "Cannot read the state NV index 0x%08x: %s", index,
                               tpm_last_error(t));
    if (ret->status == -EPROTONOSUPPORT)
        return log_error_errno(EPROTONOSUPPORT, "The state record in 0x%08x was written by a "
                               "newer tpm-provision; not touching it.", index);
    if (ret->status == 0) {
        log_info("State record present (%s).", record_state_to_string(ret->record.state));
        return 0;
    }

    r = hierarchy_require(t, a, HIERARCHY_OWNER, "write the state NV index");
    if (r < 0)
        return r;
    if (!ret->defined) {
        r = nvstate_define(t, ret);
        if (r < 0)
            return hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "define the state NV index");
    } else if (ret->status == -EBADMSG)
        log_warning("The state record in 0x%08x is damaged; writing a fresh one.", index);

    struct record rec = {.state = RECORD_OWNED, .changed_at = (uint64_t)time(NULL),
                         .flags = ret->status == -EBADMSG ? RECORD_FLAG_REBUILT : 0};
    r = nvstate_save(t, ret, &rec);
    if (r < 0)
        return hierarchy_log_failure(t, a, HIERARCHY_OWNER, r, "write the state NV index");
    log_notice("Wrote the state record: owned.");
    return 0;
}

static char *handoff_path(const char *suffix) {
    char *p;

    if (asprintf(&p, "%s/identity.json%s", cmd_runtime_dir(), suffix) < 0)
        return NULL;
    return p;
}

int cmd_write_handoff(const struct record *r) {
    _cleanup_free_ char *path = handoff_path(""), *tmp = handoff_path(".tmp");
    char when[32], handle[16];
    struct tm tm;
    time_t at = (time_t)r->changed_at;
    json_object *j;
    FILE *f;
    int k;

    if (!path || !tmp)
        return -ENOMEM;
    k = ensure_runtime_dir();
    if (k < 0)
        return k;

    gmtime_r(&at, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    snprintf(handle, sizeof(handle), "0x%08x", r->identity_handle);
    j = json_object_new_object();
    json_object_object_add(j, "assignedHub", json_object_new_string(r->hub));
    json_object_object_add(j, "deviceId", json_object_new_string(r->device_id));
    json_object_object_add(j, "registrationId", json_object_new_string(r->registration_id));
    json_object_object_add(j, "idScope", json_object_new_string(r->id_scope));
    json_object_object_add(j, "identityHandle", json_object_new_string(handle));
    json_object_object_add(j, "provisionedAt", json_object_new_string(when));

    f = fopen(tmp, "we");
    if (!f) {
        json_object_put(j);
        return log_error_errno(errno, "Cannot write %s: %m", tmp);
    }
    fchmod(fileno(f), 0644);
    fprintf(f, "%s\n", json_object_to_json_string_ext(j, JSON_C_TO_STRING_PRETTY |
                                                             JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(j);
    k = fflush(f) == 0 && fsync(fileno(f)) == 0 ? 0 : -errno;
    fclose(f);
    if (k < 0 || rename(tmp, path) < 0) {
        k = k < 0 ? k : -errno;
        unlink(tmp);
        return log_error_errno(k, "Cannot write %s: %m", path);
    }
    log_debug("Wrote %s.", path);
    return 0;
}

int cmd_remove_handoff(void) {
    _cleanup_free_ char *path = handoff_path("");

    if (!path)
        return -ENOMEM;
    if (unlink(path) < 0 && errno != ENOENT)
        return log_error_errno(errno, "Cannot remove %s: %m", path);
    return 0;
}
