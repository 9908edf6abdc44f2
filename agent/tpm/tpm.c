/* SPDX-License-Identifier: MIT */
#include "tpm.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <tss2/tss2_tctildr.h>
#include <unistd.h>

#include "basic/log.h"
#include "tpm-rc.h"

/* Self-test after power-on can take seconds on real chips (field case B17); RETRY and NV_RATE
 * clear in milliseconds. One budget covers both; past it the command is reported as failed. */
#define TPM_TRANSIENT_BUDGET_MS 30000
#define TPM_TRANSIENT_FIRST_DELAY_MS 20
#define TPM_TRANSIENT_MAX_DELAY_MS 2000
#define TPM_MEMORY_RETRY_DELAY_MS 200

static void sleep_ms(unsigned ms) {
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* In failure mode a TPM still answers GetTestResult and GetCapability (TPM 2.0 Part 1,
 * 12.4, "Failure Mode"); what GetTestResult says is what a vendor asks for. */
static void report_unusable(struct tpm *t, TSS2_RC rc, const char *what) {
    TPM2B_MAX_BUFFER *data = NULL;
    TPM2_RC result = 0;
    TSS2_RC rc2;
    char hex[2 * 64 + 1] = "";

    if (t->unusable_reported)
        return;
    if (tpm_rc_base(rc) == TPM2_RC_UPGRADE) {
        t->unusable_reported = true;
        log_event(LOG_EVENT_TPM_UNUSABLE, LOG_ERR, "The TPM is in field upgrade mode.", NULL);
        log_error("The TPM is in field upgrade mode (%s answered 0x%x): an interrupted firmware "
                  "update. Finish or roll back the update with the TPM maker's tool.", what, rc);
        return;
    }

    rc2 = Esys_GetTestResult(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &data, &result);
    if (rc2 == TSS2_RC_SUCCESS && result == TPM2_RC_SUCCESS) {
        /* The TPM is fine: this was its way of refusing the one command. */
        Esys_Free(data);
        t->failure_contradicted = true;
        log_debug("%s answered 0x%x, but the TPM's self-test result is success: not failure "
                  "mode.", what, rc);
        return;
    }
    t->unusable_reported = true;
    log_event(LOG_EVENT_TPM_UNUSABLE, LOG_ERR, "The TPM is in failure mode.", NULL);
    if (rc2 == TSS2_RC_SUCCESS) {
        for (size_t i = 0; i < data->size && i < 64; i++)
            sprintf(hex + 2 * i, "%02x", data->buffer[i]);
        log_error("The TPM is in failure mode (%s answered 0x%x). GetTestResult: 0x%x (%s), "
                  "data %s. Only a TPM reset or the TPM maker's tool can recover it; "
                  "tpm-provision changes nothing.", what, rc, result, tpm_rc_str(result),
                  hex[0] ? hex : "(none)");
        Esys_Free(data);
    } else
        log_error("The TPM is in failure mode (%s answered 0x%x); GetTestResult failed too.",
                  what, rc);
}

int tpm_errno(const struct tpm *t, TSS2_RC rc) {
    int e = tpm_rc_to_errno(rc);

    if (e == ENOTRECOVERABLE && tpm_rc_base(rc) == TPM2_RC_FAILURE && t->failure_contradicted)
        return EPROTO;
    return e;
}

/* The first command a TPM sees after power-on must be Startup. The kernel sends it for
 * /dev/tpm*; a raw simulator may not have had it yet (field case B17: 0x100 INITIALIZE). One
 * Startup(CLEAR), then the command is sent again. */
static bool startup(struct tpm *t, const char *what) {
    TSS2_RC rc;

    if (t->startup_sent)
        return false;
    t->startup_sent = true;
    log_info("The TPM was not started yet (%s answered INITIALIZE); sending TPM2_Startup(CLEAR).",
             what);
    rc = Esys_Startup(t->esys, TPM2_SU_CLEAR);
    if (rc != TSS2_RC_SUCCESS && tpm_rc_base(rc) != TPM2_RC_INITIALIZE) {
        log_warning("TPM2_Startup failed: 0x%x (%s).", rc, tpm_rc_str(rc));
        return false;
    }
    return true;
}

bool tpm_check_answer(struct tpm *t, TSS2_RC rc, unsigned attempt, const char *what) {
    unsigned delay = TPM_TRANSIENT_FIRST_DELAY_MS, waited = 0;

    if (tpm_rc_base(rc) == TPM2_RC_INITIALIZE)
        return startup(t, what);

    if (tpm_rc_to_errno(rc) == ENOTRECOVERABLE) {
        report_unusable(t, rc, what);
        return false;
    }
    /* A TPM holds only a few objects and sessions. Under the kernel's resource manager that
     * is never ours to see; on a raw /dev/tpmN, objects other programs left fill the slots
     * (field case B16). One more try after a pause, in which their command may end and
     * flush, then a clear error. */
    if (tpm_rc_base(rc) == TPM2_RC_OBJECT_MEMORY || tpm_rc_base(rc) == TPM2_RC_SESSION_MEMORY) {
        if (attempt == 0) {
            log_debug("%s: the TPM has no room (0x%x); trying once more.", what, rc);
            sleep_ms(TPM_MEMORY_RETRY_DELAY_MS);
            return true;
        }
        log_warning("The TPM has no room for another %s (%s answered 0x%x). Without a resource "
                    "manager, objects other programs left fill its few slots: use /dev/tpmrm0, "
                    "or flush them with tpm2_flushcontext.",
                    tpm_rc_base(rc) == TPM2_RC_OBJECT_MEMORY ? "object" : "session", what, rc);
        return false;
    }
    if (!tpm_rc_is_transient(rc))
        return false;

    for (unsigned i = 0; i < attempt; i++) {
        waited += delay;
        delay = delay * 2 > TPM_TRANSIENT_MAX_DELAY_MS ? TPM_TRANSIENT_MAX_DELAY_MS : delay * 2;
    }
    if (waited >= TPM_TRANSIENT_BUDGET_MS)
        return false;

    log_debug("%s: TPM answered 0x%x (%s), repeating in %u ms.", what, rc, tpm_rc_str(rc), delay);
    sleep_ms(delay);
    return true;
}

/* N of /dev/tpmN or /dev/tpmrmN, or -1 for another name. */
static int node_number(const char *path) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    const char *num = strncmp(base, "tpmrm", 5) == 0 ? base + 5
                      : strncmp(base, "tpm", 3) == 0  ? base + 3
                                                      : NULL;
    char *end;
    long n;

    if (!num || !*num)
        return -1;
    n = strtol(num, &end, 10);
    return *end || n < 0 || n > 999 ? -1 : (int)n;
}

/* The major version sysfs reports for TPM N (1 or 2), 0 when it says nothing. */
static int sysfs_version(int n) {
    char path[64];
    FILE *f;
    int major = 0;

    snprintf(path, sizeof(path), "/sys/class/tpm/tpm%d/tpm_version_major", n);
    f = fopen(path, "re");
    if (!f)
        return 0;
    if (fscanf(f, "%d", &major) != 1)
        major = 0;
    fclose(f);
    return major;
}

/*
 * With the default node absent, the TPM may carry another number (a firmware TPM and a
 * software one, or a second chip: field case B14). Looks through /sys/class/tpm for TPMs of
 * major version 2 with a resource manager node. Returns how many there are (the first one's
 * node in ret) and how many TPM 1.2 there are in *ret_v1.
 */
static int find_tpm2_nodes(char *ret, size_t size, int *ret_v1) {
    DIR *d = opendir("/sys/class/tpm");
    struct dirent *de;
    int found = 0;

    *ret_v1 = 0;
    if (!d)
        return 0;
    while ((de = readdir(d))) {
        char node[32];
        int n = strncmp(de->d_name, "tpmrm", 5) == 0 ? -1 : node_number(de->d_name);
        int v = n < 0 ? 0 : sysfs_version(n);

        if (v == 1)
            (*ret_v1)++;
        if (v != 2)
            continue;
        snprintf(node, sizeof(node), "/dev/tpmrm%d", n);
        if (access(node, F_OK) < 0)
            continue;
        if (found++ == 0)
            snprintf(ret, size, "%s", node);
    }
    closedir(d);
    return found;
}

/*
 * For a device TCTI, says exactly what is wrong with the node before the TCTI tries to open it
 * (field cases B13 and B14): missing, a TPM 1.2, or not accessible to this user. When the
 * default node (is_default: no TCTI was configured) is missing and exactly one other TPM 2.0
 * node exists, writes its TCTI to alt_conf (else leaves it empty).
 */
static int check_device_node(const char *conf, bool is_default, char *alt_conf,
                             size_t alt_size) {
    const char *path = "/dev/tpm0";
    char other[32];
    struct stat st;
    int n, v1 = 0;

    alt_conf[0] = '\0';
    if (strcmp(conf, "device") != 0 && strncmp(conf, "device:", 7) != 0)
        return 0;
    if (conf[6] == ':' && conf[7])
        path = conf + 7;

    if (stat(path, &st) < 0) {
        if (errno != ENOENT)
            return log_error_errno(errno, "Cannot examine TPM device %s: %m", path);
        n = is_default ? find_tpm2_nodes(other, sizeof(other), &v1) : 0;
        if (n > 1)
            return log_error_errno(ENODEV, "%s does not exist, and this machine has %d TPM 2.0 "
                                   "devices (one is %s). Choose one with --tcti=device:/dev/tpmrmN.",
                                   path, n, other);
        if (n == 0 && v1 > 0)
            return log_error_errno(ENODEV, "No TPM 2.0 device: %s does not exist and this "
                                   "machine has only a TPM 1.2; tpm-provision needs a TPM 2.0.",
                                   path);
        if (n == 0)
            return log_error_errno(ENODEV, "No TPM 2.0 device: %s does not exist.", path);
        log_notice("%s does not exist; using %s, this machine's TPM 2.0.", path, other);
        snprintf(alt_conf, alt_size, "device:%s", other);
        path = alt_conf + 7;
        if (stat(path, &st) < 0)
            return log_error_errno(errno, "Cannot examine TPM device %s: %m", path);
    }

    /* /dev/tpmrmN belongs to /sys/class/tpm/tpmN; a TPM 1.2 has no resource manager node and
     * its raw node reports major version 1. */
    n = node_number(path);
    if (n >= 0 && sysfs_version(n) == 1)
        return log_error_errno(ENODEV, "%s is a TPM 1.2; tpm-provision needs a TPM 2.0.", path);

    if (access(path, R_OK | W_OK) < 0) {
        int r = -errno;
        struct passwd *pw = getpwuid(st.st_uid);
        struct group *gr = getgrgid(st.st_gid);

        if (r == -EACCES || r == -EPERM)
            return log_error_errno(EACCES,
                                   "Permission denied on %s (owner %s:%s, mode %04o). Run as root "
                                   "or as a member of the group that owns the node (usually "
                                   "'tss', set by the tpm-udev rules).",
                                   path, pw ? pw->pw_name : "?", gr ? gr->gr_name : "?",
                                   (unsigned)(st.st_mode & 07777));
        return log_error_errno(r, "Cannot access TPM device %s: %m", path);
    }
    return 0;
}

/* The TCTI could not open a device node that exists: a raw /dev/tpmN is exclusive, and
 * tpm2-abrmd keeps it open (field case B16). Says so instead of a bare I/O error. */
static int explain_open_failure(const char *conf, TSS2_RC rc) {
    const char *path = strncmp(conf, "device:", 7) == 0 && conf[7] ? conf + 7 : NULL;
    int fd;

    if (path) {
        fd = open(path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
        if (fd >= 0)
            close(fd);
        else if (errno == EBUSY)
            return log_error_errno(EBUSY, "TPM device %s is busy: another program (for example "
                                   "tpm2-abrmd) holds it open. Use the kernel's resource manager "
                                   "node, --tcti=device:/dev/tpmrm%d, which many programs can "
                                   "share.", path, node_number(path) < 0 ? 0 : node_number(path));
    }
    /* A TCTI string the loader cannot use is a typo in the configuration, not a missing TPM. */
    switch (rc & ~TSS2_RC_LAYER_MASK) {
    case TSS2_BASE_RC_NOT_SUPPORTED:
    case TSS2_BASE_RC_BAD_VALUE:
    case TSS2_BASE_RC_BAD_REFERENCE:
        return log_error_errno(EINVAL, "The TCTI '%s' cannot be used (%s). Give --tcti= (or "
                               "TCTI= in [TPM]) as device:/dev/tpmrm0, swtpm:path=/run/swtpm.sock "
                               "or mssim:host=127.0.0.1,port=2321.", conf, tpm_rc_str(rc));
    default:
        return log_error_errno(ENODEV, "Cannot open the TPM through TCTI '%s': %s%s", conf,
                               tpm_rc_str(rc),
                               strncmp(conf, "device", 6) == 0 ? ""
                                                               : ". Is the TPM simulator running, "
                                                                 "and is that its address?");
    }
}

int tpm_open(const char *tcti_conf, struct tpm **ret) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    bool is_default = !tcti_conf;
    char alt_conf[48];
    TSS2_RC rc;
    int r;

    if (is_default)
        tcti_conf = TPM_DEFAULT_TCTI;
    r = check_device_node(tcti_conf, is_default, alt_conf, sizeof(alt_conf));
    if (r < 0)
        return r;
    if (alt_conf[0])
        tcti_conf = alt_conf;

    t = calloc(1, sizeof(*t));
    if (!t)
        return log_error_errno(ENOMEM, "Out of memory.");
    t->tcti_conf = strdup(tcti_conf);
    if (!t->tcti_conf)
        return log_error_errno(ENOMEM, "Out of memory.");

    /* Always a named TCTI: the loader's default search tries tpm2-abrmd over D-Bus first,
     * which does not exist in the initrd and can deadlock early boot (field case B16). */
    rc = Tss2_TctiLdr_Initialize(tcti_conf, &t->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        t->tcti = NULL;
        return explain_open_failure(tcti_conf, rc);
    }

    rc = Esys_Initialize(&t->esys, t->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        t->esys = NULL;
        return log_error_errno(tpm_errno(t, rc), "Cannot initialise ESAPI on '%s': %s",
                               tcti_conf, tpm_rc_str(rc));
    }

    *ret = TAKE_PTR(t);
    return 0;
}

void tpm_close(struct tpm *t) {
    if (!t)
        return;
    if (t->esys)
        Esys_Finalize(&t->esys);
    if (t->tcti)
        Tss2_TctiLdr_Finalize(&t->tcti);
    free(t->tcti_conf);
    free(t);
}

static int get_properties(struct tpm *t, TPM2_PT first, uint32_t count, TPMI_YES_NO *ret_more,
                          TPMS_CAPABILITY_DATA **ret) {
    TSS2_RC rc;

    TPM_CALL(t, rc, "GetCapability",
             Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                TPM2_CAP_TPM_PROPERTIES, first, count, ret_more, ret));
    if (rc != TSS2_RC_SUCCESS)
        return log_error_errno(tpm_errno(t, rc), "Cannot read TPM properties: %s",
                               tpm_last_error(t));
    return 0;
}

static void copy_vendor(char *dst, uint32_t v) {
    size_t len = strlen(dst);

    for (int shift = 24; shift >= 0; shift -= 8) {
        char c = (char)((v >> shift) & 0xff);
        if (c >= 0x20 && c < 0x7f)
            dst[len++] = c;
    }
    dst[len] = '\0';
}

int tpm_properties_load(struct tpm *t) {
    TPM2_PT next = TPM2_PT_FIXED;
    bool have_permanent = false;

    if (t->have_properties)
        return 0;

    t->nv_buffer_max = 512; /* The smallest value seen; replaced by what the TPM reports. */
    t->nv_index_max = 2048;
    /* One query from the first fixed property on: a TPM lists properties in order, the fixed
     * group first, then the variable group, so one command usually covers both. */
    for (int queries = 0; queries < 4 && !have_permanent; queries++) {
        TPMS_CAPABILITY_DATA *data = NULL;
        TPMI_YES_NO more = TPM2_NO;
        int r = get_properties(t, next, TPM2_MAX_TPM_PROPERTIES, &more, &data);
        if (r < 0)
            return r;

        TPML_TAGGED_TPM_PROPERTY *props = &data->data.tpmProperties;
        for (uint32_t i = 0; i < props->count; i++) {
            uint32_t v = props->tpmProperty[i].value;
            switch (props->tpmProperty[i].property) {
            case TPM2_PT_MANUFACTURER: t->manufacturer = v; break;
            case TPM2_PT_VENDOR_STRING_1:
            case TPM2_PT_VENDOR_STRING_2:
            case TPM2_PT_VENDOR_STRING_3:
            case TPM2_PT_VENDOR_STRING_4: copy_vendor(t->vendor, v); break;
            case TPM2_PT_FIRMWARE_VERSION_1: t->firmware1 = v; break;
            case TPM2_PT_FIRMWARE_VERSION_2: t->firmware2 = v; break;
            case TPM2_PT_NV_BUFFER_MAX: t->nv_buffer_max = v; break;
            case TPM2_PT_NV_INDEX_MAX: t->nv_index_max = v; break;
            case TPM2_PT_PERMANENT: t->permanent = v; have_permanent = true; break;
            case TPM2_PT_LOCKOUT_COUNTER: t->lockout_counter = v; break;
            case TPM2_PT_MAX_AUTH_FAIL: t->max_auth_fail = v; break;
            case TPM2_PT_LOCKOUT_INTERVAL: t->lockout_interval = v; break;
            case TPM2_PT_LOCKOUT_RECOVERY: t->lockout_recovery = v; break;
            default: break;
            }
        }
        /* Not there yet: continue after the last one listed, or at the variable group. */
        next = props->count ? props->tpmProperty[props->count - 1].property + 1 : TPM2_PT_VAR;
        if (!more && next < TPM2_PT_VAR)
            next = TPM2_PT_VAR;
        bool exhausted = !more && next > TPM2_PT_VAR + 0x100;
        Esys_Free(data);
        if (exhausted)
            break;
    }
    if (t->nv_buffer_max == 0 || t->nv_buffer_max > TPM2_MAX_NV_BUFFER_SIZE)
        t->nv_buffer_max = TPM2_MAX_NV_BUFFER_SIZE;
    t->have_properties = true;
    return 0;
}

int tpm_persistent_get(struct tpm *t, TPM2_HANDLE handle, ESYS_TR *ret_tr,
                       TPM2B_PUBLIC **ret_public) {
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc;

    TPM_CALL(t, rc, "ReadPublic",
             Esys_TR_FromTPMPublic(t->esys, handle, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr));
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);

    if (ret_public) {
        TPM_CALL(t, rc, "ReadPublic",
                 Esys_ReadPublic(t->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                 ret_public, NULL, NULL));
        if (rc != TSS2_RC_SUCCESS) {
            Esys_TR_Close(t->esys, &tr);
            return -tpm_errno(t, rc);
        }
    }
    *ret_tr = tr;
    return 0;
}

int tpm_persist_and_flush(struct tpm *t, ESYS_TR transient, TPM2_HANDLE handle) {
    ESYS_TR persisted = ESYS_TR_NONE;
    TSS2_RC rc, rc_flush;

    TPM_CALL(t, rc, "EvictControl",
             Esys_EvictControl(t->esys, ESYS_TR_RH_OWNER, transient, ESYS_TR_PASSWORD,
                               ESYS_TR_NONE, ESYS_TR_NONE, handle, &persisted));
    /* Flushed whatever EvictControl answered, so no object outlives the command (B11); the
     * EvictControl answer stays the one reported. */
    rc_flush = Esys_FlushContext(t->esys, transient);
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);
    Esys_TR_Close(t->esys, &persisted);
    if (rc_flush != TSS2_RC_SUCCESS) {
        /* The key is persisted; only a TPM that went away mid-way gets here. */
        t->last_what = "FlushContext";
        t->last_rc = rc_flush;
        return -tpm_rc_to_errno(rc_flush);
    }
    return 0;
}

int tpm_flush(struct tpm *t, ESYS_TR *tr) {
    TSS2_RC rc;

    if (*tr == ESYS_TR_NONE)
        return 0;
    rc = Esys_FlushContext(t->esys, *tr);
    *tr = ESYS_TR_NONE;
    if (rc == TSS2_RC_SUCCESS || tpm_errno(t, rc) == ENOENT)
        return 0;
    t->last_what = "FlushContext";
    t->last_rc = rc;
    return -tpm_errno(t, rc);
}

int tpm_nv_get(struct tpm *t, TPM2_HANDLE index, ESYS_TR *ret_tr, TPM2B_NV_PUBLIC **ret_public) {
    ESYS_TR tr = ESYS_TR_NONE;
    TSS2_RC rc;

    TPM_CALL(t, rc, "NV_ReadPublic",
             Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &tr));
    if (rc != TSS2_RC_SUCCESS)
        return -tpm_errno(t, rc);

    if (ret_public) {
        TPM_CALL(t, rc, "NV_ReadPublic",
                 Esys_NV_ReadPublic(t->esys, tr, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                    ret_public, NULL));
        if (rc != TSS2_RC_SUCCESS) {
            Esys_TR_Close(t->esys, &tr);
            return -tpm_errno(t, rc);
        }
    }
    *ret_tr = tr;
    return 0;
}

/* Bytes per NV command: TPM_PT_NV_BUFFER_MAX once known. Before that, a read tries the
 * common 1024 first, so the boot fast path needs no GetCapability. */
static uint16_t nv_chunk(struct tpm *t, bool optimistic) {
    if (t->have_properties || !optimistic) {
        if (tpm_properties_load(t) < 0)
            return 512;
        return (uint16_t)t->nv_buffer_max;
    }
    return 1024;
}

int tpm_nv_read(struct tpm *t, ESYS_TR index, ESYS_TR auth, uint16_t offset, uint16_t size,
                uint8_t *ret_data) {
    uint16_t chunk = nv_chunk(t, true), done = 0;

    while (done < size) {
        TPM2B_MAX_NV_BUFFER *data = NULL;
        uint16_t n = size - done < chunk ? size - done : chunk;
        TSS2_RC rc;

        TPM_CALL(t, rc, "NV_Read",
                 Esys_NV_Read(t->esys, auth, index, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                              n, offset + done, &data));
        if (rc != TSS2_RC_SUCCESS && !t->have_properties && tpm_rc_base(rc) == TPM2_RC_VALUE) {
            /* More than this TPM's NV_BUFFER_MAX: learn it and go on in smaller chunks. */
            chunk = nv_chunk(t, false);
            continue;
        }
        if (rc != TSS2_RC_SUCCESS)
            return -tpm_errno(t, rc);
        if (data->size != n) {
            Esys_Free(data);
            return -EBADMSG;
        }
        memcpy(ret_data + done, data->buffer, n);
        Esys_Free(data);
        done += n;
    }
    return 0;
}

int tpm_nv_write(struct tpm *t, ESYS_TR index, uint16_t offset, const uint8_t *data, size_t size) {
    uint16_t chunk = nv_chunk(t, false);
    size_t done = 0;

    while (done < size) {
        TPM2B_MAX_NV_BUFFER buf = {0};
        TSS2_RC rc;

        buf.size = (uint16_t)(size - done < chunk ? size - done : chunk);
        memcpy(buf.buffer, data + done, buf.size);
        TPM_CALL(t, rc, "NV_Write",
                 Esys_NV_Write(t->esys, ESYS_TR_RH_OWNER, index, ESYS_TR_PASSWORD, ESYS_TR_NONE,
                               ESYS_TR_NONE, &buf, (uint16_t)(offset + done)));
        if (rc != TSS2_RC_SUCCESS)
            return -tpm_errno(t, rc);
        done += buf.size;
    }
    return 0;
}

void tpm_set_hierarchy_auth(struct tpm *t, ESYS_TR hierarchy, const uint8_t *value, size_t size) {
    TPM2B_AUTH auth = {.size = (uint16_t)size};

    if (size) /* an empty value may come as NULL; memcpy must not see it */
        memcpy(auth.buffer, value, size);
    Esys_TR_SetAuth(t->esys, hierarchy, &auth);
    secure_zero(&auth, sizeof(auth));
}

const char *tpm_last_error(struct tpm *t) {
    snprintf(t->last_error, sizeof(t->last_error), "%s returned 0x%x (%s)",
             t->last_what ? t->last_what : "TPM command", t->last_rc, tpm_rc_str(t->last_rc));
    return t->last_error;
}
