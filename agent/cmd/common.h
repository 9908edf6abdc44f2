/* SPDX-License-Identifier: MIT */
/* What every subcommand shares: options (configuration plus command line), opening the TPM,
 * the lock that keeps two instances apart, and the hand-off file for the IoT client. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "state/nvstate.h"
#include "tpm/hierarchy.h"
#include "tpm/tpm.h"

enum output_format { OUTPUT_TEXT, OUTPUT_JSON, OUTPUT_CSV };

struct options {
    struct config cfg; /* configuration files, kernel command line, environment, options */
    enum output_format format;
    const char *set_lockout_auth_file; /* own */
    bool force;                        /* register */
    bool yes;                          /* reset */
    const char *resource;              /* sas */
    int64_t expiry;                    /* sas: seconds from now, -(absolute Unix time), 0: default */
    time_t clock_floor;                /* no clock can be earlier than this build */

    /* ek on the manufacturing line, and enroll (docs/manufacturing.md) */
    const char *serial;                 /* ek: device serial instead of DMI/device tree */
    const char *append;                 /* ek: the list file to append the row to */
    const char **previous;              /* ek, enroll: earlier batches (lists) */
    size_t n_previous;
    const char **lists;                 /* enroll: lists to enrol */
    size_t n_lists;
    const char *results;                /* enroll: results journal (default next to the list) */
    const char *connection_string_file; /* enroll */
    const char *service_endpoint;       /* enroll: --endpoint, instead of https://HostName */
    bool dry_run;                       /* enroll */
    const char *device_id;              /* enroll: device ID template */
    const char *initial_twin;           /* enroll: JSON file */
    const char *provisioning_status;    /* enroll */
    const char *allocation;             /* enroll */
    const char **iot_hubs;              /* enroll */
    size_t n_iot_hubs;
};

#define RUNTIME_DIR_DEFAULT "/run/tpm-provision"
/* The shortest SAS token lifetime sas signs, as SasTokenLifetimeSec= allows. */
#define SAS_LIFETIME_MIN_SEC 60
/* The longest, given as seconds or as @UNIXTIME: a token that lives for years is a key handed
 * out. */
#define SAS_LIFETIME_MAX_SEC (365 * 24 * 3600)

/* Opens the TPM named by the options and loads the hierarchy authorizations. */
int cmd_open_tpm(const struct options *o, struct tpm **ret_tpm, struct hierarchy_auths *ret_auths);

/* $RUNTIME_DIRECTORY (set by systemd's RuntimeDirectory=) or /run/tpm-provision. */
const char *cmd_runtime_dir(void);

/*
 * Takes the lock that lets one tpm-provision at a time change the TPM (field case B12: a
 * udev-started and a systemd-started instance at once). Waits up to timeout_sec, saying so.
 * Returns the lock's file descriptor (close it to release), or a negative errno.
 */
int cmd_lock(unsigned timeout_sec);

/* Makes sure the state index exists and holds a record; defines and writes it when not. */
int cmd_ensure_state(struct tpm *t, const struct hierarchy_auths *a, TPM2_HANDLE index,
                     struct nvstate *ret);

/* Writes <runtime dir>/identity.json for the device's IoT client from an assigned record
 * (atomically, mode 0644: it holds no secret). */
int cmd_write_handoff(const struct record *r);
int cmd_remove_handoff(void);

int cmd_own(const struct options *o);
int cmd_status(const struct options *o);
int cmd_ek(const struct options *o);
int cmd_register(const struct options *o);
int cmd_sas(const struct options *o);
int cmd_reset(const struct options *o);
int cmd_enroll(const struct options *o);
