/* SPDX-License-Identifier: MIT */
/*
 * Configuration: systemd-style INI files, the kernel command line (for the initrd) and the
 * process environment (for tests and one-off runs). Later sources override earlier ones:
 *
 *   1. built-in defaults
 *   2. the main file, /etc/tpm-provision/tpm-provision.conf ($TPM_PROVISION_CONFIG overrides
 *      the path; a missing main file is not an error)
 *   3. drop-ins: *.conf in /usr/lib/tpm-provision/tpm-provision.conf.d/,
 *      /run/tpm-provision/tpm-provision.conf.d/ and /etc/tpm-provision/tpm-provision.conf.d/
 *      (or <main file>.d/ when $TPM_PROVISION_CONFIG is set), read in the lexical order of
 *      their file names across all directories; a name in a later directory masks the same
 *      name in an earlier one (as systemd does); "/dev/null" symlinks mask
 *   4. kernel command line keys tpm_provision.KEY=VALUE from /proc/cmdline
 *      ($TPM_PROVISION_CMDLINE names another file, for tests)
 *   5. environment variables TPM_PROVISION_KEY (only those listed per key below; an empty
 *      variable is ignored)
 *
 * In every source an empty value resets the key to its built-in default. Command line options
 * of the binary override all of these (main.c applies them). docs/tpm-provision.conf.5 lists
 * every key with its accepted values.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CONFIG_DEFAULT_PATH "/etc/tpm-provision/tpm-provision.conf"
#define CONFIG_DEFAULT_ENDPOINT "https://global.azure-devices-provisioning.net"
#define CONFIG_DEFAULT_API_VERSION "2021-06-01"
#define CONFIG_DEFAULT_IDENTITY_HANDLE 0x81000100u

/*
 * Each field with its key. "cmdline" is the kernel command line form tpm_provision.KEY=, "env"
 * the environment variable; keys without either are set in files only.
 */
/* The owner's persistent handles; 0x81800000 and up belong to the platform, where EvictControl
 * under TPM_RH_OWNER fails (TCG Registry of Reserved TPM 2.0 Handles, 2.3.2). */
#define CONFIG_OWNER_PERSISTENT_MIN 0x81000000u
#define CONFIG_OWNER_PERSISTENT_MAX 0x817fffffu
/* Owner-defined NV indices; 0x01c00000 and up belong to the TPM and platform makers (the same
 * registry, 2.2). */
#define CONFIG_OWNER_NV_INDEX_MIN 0x01000000u
#define CONFIG_OWNER_NV_INDEX_MAX 0x01bfffffu

struct config {
    /* [Provisioning] */
    char *id_scope;               /* IdScope=; cmdline id_scope, env TPM_PROVISION_ID_SCOPE */
    char *endpoint;               /* GlobalEndpoint=, https://host[:port], kept without a trailing
                                     slash; cmdline endpoint, env TPM_PROVISION_ENDPOINT */
    char *registration_id;        /* RegistrationId= (NULL: derived from the EK); checked by
                                     config_check_for_registration(), not while parsing;
                                     cmdline registration_id, env TPM_PROVISION_REGISTRATION_ID */
    char *payload_file;           /* PayloadFile=, a JSON file, absolute path */
    char *api_version;            /* ApiVersion=; cmdline api_version */
    char *ca_bundle;              /* CABundle= (NULL: the system's default), absolute path;
                                     cmdline ca_bundle, env TPM_PROVISION_CA_BUNDLE */
    char *proxy;                  /* Proxy= (NULL: libcurl reads https_proxy etc.); may carry a
                                     password, so never logged; cmdline proxy */
    char *no_proxy;               /* NoProxy= */
    uint32_t request_timeout_sec; /* RequestTimeoutSec= default 30, 1..600 */
    uint32_t deadline_sec;        /* TimeoutSec= overall registration deadline, default 900,
                                     0..86400, 0 = none; cmdline timeout */
    uint32_t sas_ttl_sec;         /* SasTokenLifetimeSec= default 3600, 60..86400 */

    /* [TPM] */
    char *tcti;                  /* TCTI=; cmdline tcti, env TPM_PROVISION_TCTI; NULL: default */
    uint32_t ek_handle;          /* EKHandle= default 0x81010001, 0x81000000..0x817fffff */
    uint32_t srk_handle;         /* SRKHandle= default 0x81000001, same range */
    uint32_t identity_handle;    /* IdentityHandle= default 0x81000100, same range */
    uint32_t state_index;        /* StateIndex= default 0x01000100, 0x01000000..0x01bfffff */
    char *owner_auth_file;       /* OwnerAuthFile=, absolute path */
    char *endorsement_auth_file; /* EndorsementAuthFile=, absolute path */
    char *lockout_auth_file;     /* LockoutAuthFile=, absolute path */

    /* Set between config_init() and config_load() by a command that reads no [Provisioning]
     * key (own, status, ek, reset): an invalid one in a file, the kernel command line or the
     * environment is then a warning and is ignored. Cleared before the command's own options. */
    bool provisioning_unused;
};

/*
 * Fills c with the built-in defaults (strings NULL except endpoint and api_version, which are
 * allocated; tcti NULL means the default device, see tpm_open). Whatever c held before is overwritten, not freed. Returns -ENOMEM (with c
 * left empty, safe for config_done) when the defaults cannot be allocated.
 */
int config_init(struct config *c);

/*
 * Reads every source in the order above into c, which config_init() filled. An unknown
 * section or key, a malformed line, or a bad value is an error that names the file, the line
 * number, the key and what is expected (logged here); returns -EINVAL then, with c partly
 * updated. Unreadable drop-in directories are skipped with a warning. On the kernel command
 * line an unknown tpm_provision.* key is only a warning, a bad value of a known key an error.
 */
int config_load(struct config *c);

/* Reads one INI file into c (used by config_load; exposed for tests). A missing file returns
 * -ENOENT without logging, so the caller decides; every other failure is logged. */
int config_load_file(struct config *c, const char *path);

/*
 * Reads the *.conf files of dirs (lowest priority first) in the lexical order of their names;
 * a name in a later directory masks the same name in an earlier one. Used by config_load;
 * exposed for tests.
 */
int config_load_dropin_dirs(struct config *c, const char *const *dirs, size_t n_dirs);

/* Applies one kernel command line string ("quiet tpm_provision.id_scope=0ne... ro"). */
int config_load_cmdline(struct config *c, const char *cmdline);

/* Checks what registration needs: IdScope set and well-formed, RegistrationId (when set)
 * valid by DPS's rules, the endpoint an https:// URL. Logs every problem and how to fix it;
 * -EINVAL when there is one. */
int config_check_for_registration(const struct config *c);

/* A CA bundle (a PEM file) or a CA directory (hashed, as openssl-rehash(1) leaves one) that can
 * be read: 0, or a negative errno, logged. Checked before a first request, not found out as a
 * TLS trust failure after connecting. */
int config_check_ca_bundle(const char *path);

/* Whether dir holds files named by subject hash ("5ad8a5d6.0"). */
bool config_dir_has_hashed_certs(const char *dir);

/* Frees the strings and empties c. Safe on a zeroed or partly filled struct, and twice. */
/* Why url is not a proxy URL libcurl can use (scheme://[user:password@]host[:port]), or NULL. */
const char *config_check_proxy(const char *url);

/* Sets the configuration key `name` (as in the file, say "TimeoutSec") from a value given
 * elsewhere, checked as the file's value is; errors name `where` and `as` (the option). */
int config_set_key(struct config *c, const char *name, const char *value, const char *where,
                   const char *as);

/* NULL when url is an https:// URL naming a host (and port) only; else why not. */
const char *config_check_endpoint(const char *url);

/* EKHandle=, SRKHandle= and IdentityHandle= must name three handles: -EINVAL (logged) when
 * two are the same, since the agent would take one key for the other. */
int config_check_handles(const struct config *c);

void config_done(struct config *c);
