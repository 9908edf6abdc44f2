/* SPDX-License-Identifier: MIT */
/* tpm-provision: command line, global options and dispatch. Everything else lives in cmd/. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "basic/log.h"
#include "basic/secret.h"
#include "cmd/common.h"
#include "exit-codes.h"
#include "state/nvstate.h"
#include "tpm/identity.h"
#include "tpm/keys.h"

#ifndef BUILD_EPOCH
#define BUILD_EPOCH 0
#endif

#ifndef VERSION
#define VERSION "0.1"
#endif

struct command {
    const char *name;
    int (*run)(const struct options *o);
    const char *synopsis, *help;
    unsigned formats; /* bit mask of enum output_format accepted besides text */
};

static const struct command commands[] = {
    {"own", cmd_own, "own [--set-lockout-auth=FILE]",
     "Make the TPM ready for provisioning: persist the EK and the SRK when missing, define the\n"
     "state NV index. Changes nothing that is already there; safe at every boot.\n"
     "  --set-lockout-auth=FILE  set the lockout authorization to FILE's value when it is empty\n"
     "                           (systemd credential tpm-provision.new-lockout-auth)\n",
     0},
    {"status", cmd_status, "status [--json]",
     "Show the TPM, its keys, hierarchy authorization flags, lockout counter and the state\n"
     "record. Changes nothing.\n",
     1u << OUTPUT_JSON},
    {"register", cmd_register,
     "register [--force] [--id-scope=S] [--endpoint=URL] [--registration-id=ID] [--payload=FILE]",
     "Register with DPS by TPM attestation and keep the hub key in the TPM at the identity\n"
     "handle. An assigned device makes no request and changes nothing (the boot fast path).\n"
     "  --force                  register again even when assigned\n"
     "  --id-scope=S             DPS ID scope (IdScope=)\n"
     "  --endpoint=URL           global endpoint (GlobalEndpoint=)\n"
     "  --registration-id=ID     instead of the one derived from the EK (RegistrationId=)\n"
     "  --payload=FILE           custom allocation payload, JSON (PayloadFile=)\n"
     "  --ca-bundle=FILE         trusted CAs for DPS (CABundle=)\n"
     "  --api-version=V          DPS device api-version (ApiVersion=, default 2021-06-01)\n"
     "  --timeout=SEC            overall deadline, 0 for none (TimeoutSec=, default 900)\n",
     0},
    {"sas", cmd_sas, "sas [--resource=URI] [--expiry=SECONDS|@UNIXTIME]",
     "Print an IoT Hub SAS token signed by the identity key inside the TPM.\n"
     "  --resource=URI           default <assigned hub>/devices/<device ID>\n"
     "  --expiry=SECONDS         lifetime from now, at least 60 (default SasTokenLifetimeSec=,\n"
     "                           3600), or @UNIXTIME\n",
     0},
    {"reset", cmd_reset, "reset --yes",
     "Back to unprovisioned: removes the identity key (only the one tpm-provision persisted),\n"
     "the assignment in the state record and the hand-off file. EK, SRK and the state index\n"
     "stay. Needs --yes.\n",
     0},
    {"ek", cmd_ek, "ek [--json|--csv] [--serial=S] [--append=FILE [--previous=FILE]...]",
     "Print the registration ID, the EK public as DPS takes it (base64 TPM2B_PUBLIC) and the EK\n"
     "certificate's serial and SHA-256 fingerprint. Reads the EK fresh from the TPM; an EK that\n"
     "is not persisted is computed from the template and not persisted.\n"
     "With --serial or --append, one manufacturing list row (docs/manufacturing.md) that adds\n"
     "the device serial and the time.\n"
     "  --serial=S               device serial (default: DMI product serial, else device tree)\n"
     "  --append=FILE            append the row to the list FILE (CSV with --csv, JSON lines\n"
     "                           with --json, else the file's own format); refused when its EK,\n"
     "                           registration ID or serial is in FILE or a --previous list\n"
     "  --previous=FILE          an earlier batch's list (repeatable)\n",
     (1u << OUTPUT_JSON) | (1u << OUTPUT_CSV)},
    {"enroll", cmd_enroll,
     "enroll --list=FILE... [--connection-string-file=F] [--dry-run] [--results=FILE] ...",
     "Create DPS individual enrollments for every row of the lists (from 'ek --append', or a TPM\n"
     "maker's list of base64 EK publics) through the DPS service API, in bulk operations of up\n"
     "to 10. Every row is checked before anything is sent. Resumable: rows already done are\n"
     "skipped, and an enrollment is never created twice or overwritten.\n"
     "  --list=FILE              a list to enrol (repeatable)\n"
     "  --previous=FILE          an earlier batch: its EKs and IDs are refused (repeatable)\n"
     "  --connection-string-file=F  the policy's connection string (default: the credential\n"
     "                           tpm-provision.dps-connection-string)\n"
     "  --results=FILE           results and journal, JSON lines (default LIST.results.jsonl)\n"
     "  --dry-run                check and print the bulk requests; send nothing\n"
     "  --device-id=TEMPLATE     device IDs, {serial} and {registrationId} replaced (default:\n"
     "                           DPS uses the registration ID)\n"
     "  --initial-twin=FILE      initial twin, a JSON object\n"
     "  --provisioning-status=enabled|disabled\n"
     "  --allocation=hashed|geoLatency|static  allocation policy\n"
     "  --iot-hub=HOST           IoT hub the enrollments may be assigned to (repeatable)\n"
     "  --endpoint=URL           service endpoint instead of https://<HostName>\n"
     "  --ca-bundle=FILE         trusted CAs for DPS (CABundle=)\n",
     0},
};

static void help_global(FILE *f) {
    fprintf(f,
            "Usage: tpm-provision [OPTIONS] COMMAND [COMMAND OPTIONS]\n\n"
            "Gives a device with a TPM 2.0 its Azure IoT identity through DPS TPM attestation.\n\n"
            "Commands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        fprintf(f, "  %s\n", commands[i].synopsis);
    fprintf(f,
            "\nOptions:\n"
            "  --tcti=CONF               TPM connection (default $TPM_PROVISION_TCTI, else TCTI=\n"
            "                            in the configuration, else %s)\n"
            "  --owner-auth=FILE         owner hierarchy authorization (credential %s)\n"
            "  --endorsement-auth=FILE   endorsement hierarchy authorization (credential %s)\n"
            "  --lockout-auth=FILE       lockout hierarchy authorization (credential %s)\n"
            "  --ek-handle=HANDLE        persistent EK handle (default 0x%08x)\n"
            "  --srk-handle=HANDLE       persistent SRK handle (default 0x%08x)\n"
            "  --state-index=INDEX       NV index of the state record (default 0x%08x)\n"
            "  --identity-handle=HANDLE  persistent handle of the DPS identity key (default 0x%08x)\n"
            "  --config=FILE             configuration file (default %s)\n"
            "  -v, --verbose             debug messages too\n"
            "  -q, --quiet               errors only\n"
            "  -h, --help                this help; with a command, that command's help\n"
            "      --version             print the version\n\n"
            "Authorization values are read from files or systemd credentials, never from the\n"
            "command line. Exit status: 0 ok, 1 other failure, 2 bad usage or configuration,\n"
            "3 no TPM 2.0, 4 TPM refused (access, authorization, lockout, foreign object),\n"
            "5 temporary (try again later), 6 DPS refused, 7 TPM unusable (failure mode).\n"
            "See tpm-provision(8).\n",
            TPM_DEFAULT_TCTI, hierarchy_credential(HIERARCHY_OWNER),
            hierarchy_credential(HIERARCHY_ENDORSEMENT), hierarchy_credential(HIERARCHY_LOCKOUT),
            EK_DEFAULT_HANDLE, SRK_DEFAULT_HANDLE, NVSTATE_DEFAULT_INDEX, IDENTITY_DEFAULT_HANDLE,
            CONFIG_DEFAULT_PATH);
}

static int parse_handle(const char *arg, const char *option, uint32_t lo, uint32_t hi,
                        uint32_t *ret) {
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(arg, &end, 0);
    if (errno || end == arg || *end || v < lo || v > hi)
        return log_error_errno(EINVAL, "Invalid %s '%s': expected a handle from 0x%08x to 0x%08x.",
                               option, arg, lo, hi);
    *ret = (uint32_t)v;
    return 0;
}

enum {
    OPT_TCTI = 0x100,
    OPT_OWNER_AUTH,
    OPT_ENDORSEMENT_AUTH,
    OPT_LOCKOUT_AUTH,
    OPT_EK_HANDLE,
    OPT_SRK_HANDLE,
    OPT_STATE_INDEX,
    OPT_JSON,
    OPT_CSV,
    OPT_SET_LOCKOUT_AUTH,
    OPT_VERSION,
    OPT_IDENTITY_HANDLE,
    OPT_CONFIG,
    OPT_FORCE,
    OPT_ID_SCOPE,
    OPT_ENDPOINT,
    OPT_REGISTRATION_ID,
    OPT_PAYLOAD,
    OPT_CA_BUNDLE,
    OPT_API_VERSION,
    OPT_TIMEOUT,
    OPT_RESOURCE,
    OPT_EXPIRY,
    OPT_YES,
    OPT_SERIAL,
    OPT_APPEND,
    OPT_PREVIOUS,
    OPT_LIST,
    OPT_RESULTS,
    OPT_CONNECTION_STRING_FILE,
    OPT_DRY_RUN,
    OPT_DEVICE_ID,
    OPT_INITIAL_TWIN,
    OPT_PROVISIONING_STATUS,
    OPT_ALLOCATION,
    OPT_IOT_HUB,
};

/* Command line values, applied over the configuration once it is read. */
struct overrides {
    const char *tcti, *auth_file[_HIERARCHY_MAX], *config;
    const char *id_scope, *endpoint, *registration_id, *payload, *ca_bundle, *api_version;
    const char *timeout; /* as TimeoutSec= */
    uint32_t ek_handle, srk_handle, state_index, identity_handle;
};

static int set_string(char **slot, const char *value) {
    if (!value)
        return 0;
    free(*slot);
    *slot = strdup(value);
    return *slot ? 0 : -ENOMEM;
}

static int apply_overrides(struct config *c, const struct overrides *v) {
    const char *files[_HIERARCHY_MAX] = {c->owner_auth_file, c->endorsement_auth_file,
                                         c->lockout_auth_file};
    int r = 0;
    (void)files;

    r |= set_string(&c->tcti, v->tcti);
    r |= set_string(&c->owner_auth_file, v->auth_file[HIERARCHY_OWNER]);
    r |= set_string(&c->endorsement_auth_file, v->auth_file[HIERARCHY_ENDORSEMENT]);
    r |= set_string(&c->lockout_auth_file, v->auth_file[HIERARCHY_LOCKOUT]);
    r |= set_string(&c->registration_id, v->registration_id); /* checked for registration */
    /* A relative FILE is taken from the working directory (tpm-provision(8)), so these two are
     * not read as their keys are, which want absolute paths. */
    r |= set_string(&c->payload_file, v->payload);
    r |= set_string(&c->ca_bundle, v->ca_bundle);
    if (r)
        return -ENOMEM;
    /* The others are read as their keys are: the same checks, the same messages. */
    static const struct {
        const char *key, *option;
        size_t offset;
    } as_keys[] = {
        {"IdScope", "--id-scope", offsetof(struct overrides, id_scope)},
        {"GlobalEndpoint", "--endpoint", offsetof(struct overrides, endpoint)},
        {"ApiVersion", "--api-version", offsetof(struct overrides, api_version)},
        {"TimeoutSec", "--timeout", offsetof(struct overrides, timeout)},
    };
    for (size_t i = 0; i < ARRAY_SIZE(as_keys); i++) {
        const char *value = *(const char *const *)((const char *)v + as_keys[i].offset);
        if (!value)
            continue;
        /* In a file an empty value resets the key; typed as an option it is a mistake (an
         * unset shell variable), and would quietly mean the default. */
        if (!*value)
            return log_error_errno(EINVAL, "%s= is empty: give a value, or leave the option out.",
                                   as_keys[i].option);
        if (config_set_key(c, as_keys[i].key, value, "Command line", as_keys[i].option) < 0)
            return -EINVAL;
    }
    if (v->ek_handle)
        c->ek_handle = v->ek_handle;
    if (v->srk_handle)
        c->srk_handle = v->srk_handle;
    if (v->state_index)
        c->state_index = v->state_index;
    if (v->identity_handle)
        c->identity_handle = v->identity_handle;
    /* A trailing slash on the endpoint would double in every URL. */
    if (c->endpoint) {
        size_t n = strlen(c->endpoint);
        while (n > 0 && c->endpoint[n - 1] == '/')
            c->endpoint[--n] = '\0';
    }
    return r ? -ENOMEM : 0;
}

static int parse_seconds(const char *arg, const char *option, int64_t max, int64_t *ret) {
    char *end;
    long long v;

    errno = 0;
    v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < 0 || v > max)
        return log_error_errno(EINVAL, "Invalid %s '%s': expected seconds from 0 to %lld.",
                               option, arg, (long long)max);
    *ret = v;
    return 0;
}

/* Repeatable options (enroll --list=, --iot-hub=, ...): the values point into argv. */
static int push_arg(const char ***array, size_t *n, const char *value) {
    const char **a = reallocarray(*array, *n + 1, sizeof(*a));

    if (!a)
        return log_error_errno(ENOMEM, "Out of memory.");
    a[(*n)++] = value;
    *array = a;
    return 0;
}

int main(int argc, char *argv[]) {
    static const struct option longopts[] = {
        {"tcti", required_argument, NULL, OPT_TCTI},
        {"owner-auth", required_argument, NULL, OPT_OWNER_AUTH},
        {"endorsement-auth", required_argument, NULL, OPT_ENDORSEMENT_AUTH},
        {"lockout-auth", required_argument, NULL, OPT_LOCKOUT_AUTH},
        {"ek-handle", required_argument, NULL, OPT_EK_HANDLE},
        {"srk-handle", required_argument, NULL, OPT_SRK_HANDLE},
        {"state-index", required_argument, NULL, OPT_STATE_INDEX},
        {"json", no_argument, NULL, OPT_JSON},
        {"csv", no_argument, NULL, OPT_CSV},
        {"set-lockout-auth", required_argument, NULL, OPT_SET_LOCKOUT_AUTH},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, OPT_VERSION},
        {"identity-handle", required_argument, NULL, OPT_IDENTITY_HANDLE},
        {"config", required_argument, NULL, OPT_CONFIG},
        {"force", no_argument, NULL, OPT_FORCE},
        {"id-scope", required_argument, NULL, OPT_ID_SCOPE},
        {"endpoint", required_argument, NULL, OPT_ENDPOINT},
        {"registration-id", required_argument, NULL, OPT_REGISTRATION_ID},
        {"payload", required_argument, NULL, OPT_PAYLOAD},
        {"ca-bundle", required_argument, NULL, OPT_CA_BUNDLE},
        {"api-version", required_argument, NULL, OPT_API_VERSION},
        {"timeout", required_argument, NULL, OPT_TIMEOUT},
        {"resource", required_argument, NULL, OPT_RESOURCE},
        {"expiry", required_argument, NULL, OPT_EXPIRY},
        {"yes", no_argument, NULL, OPT_YES},
        {"serial", required_argument, NULL, OPT_SERIAL},
        {"append", required_argument, NULL, OPT_APPEND},
        {"previous", required_argument, NULL, OPT_PREVIOUS},
        {"list", required_argument, NULL, OPT_LIST},
        {"results", required_argument, NULL, OPT_RESULTS},
        {"connection-string-file", required_argument, NULL, OPT_CONNECTION_STRING_FILE},
        {"dry-run", no_argument, NULL, OPT_DRY_RUN},
        {"device-id", required_argument, NULL, OPT_DEVICE_ID},
        {"initial-twin", required_argument, NULL, OPT_INITIAL_TWIN},
        {"provisioning-status", required_argument, NULL, OPT_PROVISIONING_STATUS},
        {"allocation", required_argument, NULL, OPT_ALLOCATION},
        {"iot-hub", required_argument, NULL, OPT_IOT_HUB},
        {},
    };
    struct options o = {.clock_floor = BUILD_EPOCH}; /* .expiry 0: SasTokenLifetimeSec= */
    struct overrides v = {0};
    const char *only_for = NULL, *only_cmd = NULL, *enroll_only = NULL;
    const struct command *cmd = NULL;
    bool help = false;
    int c, r = 0, level = LOG_INFO, status;

    /* The TSS's own log prints errors for expected answers (a handle that is not there) and,
     * at debug level, session secrets; the agent reports failures itself (STYLE.md 3). */
    setenv("TSS2_LOG", "all+none", 0);

    while ((c = getopt_long(argc, argv, "vqh", longopts, NULL)) >= 0) {
        switch (c) {
        case OPT_TCTI: v.tcti = optarg; break;
        case OPT_OWNER_AUTH: v.auth_file[HIERARCHY_OWNER] = optarg; break;
        case OPT_ENDORSEMENT_AUTH: v.auth_file[HIERARCHY_ENDORSEMENT] = optarg; break;
        case OPT_LOCKOUT_AUTH: v.auth_file[HIERARCHY_LOCKOUT] = optarg; break;
        case OPT_EK_HANDLE: r = parse_handle(optarg, "--ek-handle", CONFIG_OWNER_PERSISTENT_MIN, CONFIG_OWNER_PERSISTENT_MAX, &v.ek_handle); break;
        case OPT_SRK_HANDLE: r = parse_handle(optarg, "--srk-handle", CONFIG_OWNER_PERSISTENT_MIN, CONFIG_OWNER_PERSISTENT_MAX, &v.srk_handle); break;
        case OPT_IDENTITY_HANDLE: r = parse_handle(optarg, "--identity-handle", CONFIG_OWNER_PERSISTENT_MIN, CONFIG_OWNER_PERSISTENT_MAX, &v.identity_handle); break;
        case OPT_STATE_INDEX: r = parse_handle(optarg, "--state-index", CONFIG_OWNER_NV_INDEX_MIN, CONFIG_OWNER_NV_INDEX_MAX, &v.state_index); break;
        case OPT_CONFIG: v.config = optarg; break;
        case OPT_FORCE: o.force = true; only_for = "--force"; only_cmd = "register"; break;
        case OPT_ID_SCOPE: v.id_scope = optarg; break;
        case OPT_ENDPOINT: v.endpoint = optarg; o.service_endpoint = optarg; break;
        case OPT_REGISTRATION_ID: v.registration_id = optarg; break;
        case OPT_PAYLOAD: v.payload = optarg; break;
        case OPT_CA_BUNDLE: v.ca_bundle = optarg; break;
        case OPT_API_VERSION: v.api_version = optarg; break;
        case OPT_TIMEOUT: v.timeout = optarg; break;
        case OPT_RESOURCE: o.resource = optarg; only_for = "--resource"; only_cmd = "sas"; break;
        case OPT_EXPIRY:
            only_for = "--expiry";
            only_cmd = "sas";
            if (optarg[0] == '@') {
                int64_t latest = (int64_t)time(NULL) + SAS_LIFETIME_MAX_SEC;
                r = parse_seconds(optarg + 1, "--expiry", INT64_MAX / 2, &o.expiry);
                if (r == 0 && o.expiry > latest)
                    r = log_error_errno(EINVAL, "Invalid --expiry '%s': at most a year ahead "
                                        "(%lld), as a lifetime in seconds is.", optarg,
                                        (long long)latest);
                o.expiry = -o.expiry;
            } else
                r = parse_seconds(optarg, "--expiry", SAS_LIFETIME_MAX_SEC, &o.expiry);
            if (r == 0 && o.expiry >= 0 && o.expiry < SAS_LIFETIME_MIN_SEC)
                r = log_error_errno(EINVAL, "Invalid --expiry '%s': a token must live at least "
                                    "%d s (or give @UNIXTIME).", optarg, SAS_LIFETIME_MIN_SEC);
            break;
        case OPT_YES: o.yes = true; only_for = "--yes"; only_cmd = "reset"; break;
        case OPT_SERIAL: o.serial = optarg; only_for = "--serial"; only_cmd = "ek"; break;
        case OPT_APPEND: o.append = optarg; only_for = "--append"; only_cmd = "ek"; break;
        case OPT_PREVIOUS: r = push_arg(&o.previous, &o.n_previous, optarg); break;
        case OPT_LIST: r = push_arg(&o.lists, &o.n_lists, optarg); enroll_only = "--list"; break;
        case OPT_RESULTS: o.results = optarg; enroll_only = "--results"; break;
        case OPT_CONNECTION_STRING_FILE: o.connection_string_file = optarg; enroll_only = "--connection-string-file"; break;
        case OPT_DRY_RUN: o.dry_run = true; enroll_only = "--dry-run"; break;
        case OPT_DEVICE_ID: o.device_id = optarg; enroll_only = "--device-id"; break;
        case OPT_INITIAL_TWIN: o.initial_twin = optarg; enroll_only = "--initial-twin"; break;
        case OPT_PROVISIONING_STATUS: o.provisioning_status = optarg; enroll_only = "--provisioning-status"; break;
        case OPT_ALLOCATION: o.allocation = optarg; enroll_only = "--allocation"; break;
        case OPT_IOT_HUB: r = push_arg(&o.iot_hubs, &o.n_iot_hubs, optarg); enroll_only = "--iot-hub"; break;
        case OPT_JSON:
        case OPT_CSV: {
            enum output_format f = c == OPT_JSON ? OUTPUT_JSON : OUTPUT_CSV;
            if (o.format != OUTPUT_TEXT && o.format != f)
                r = log_error_errno(EINVAL, "--json and --csv exclude each other: give one.");
            o.format = f;
            break;
        }
        case OPT_SET_LOCKOUT_AUTH: o.set_lockout_auth_file = optarg; break;
        case 'v':
        case 'q':
            if ((c == 'v' && level == LOG_ERR) || (c == 'q' && level == LOG_DEBUG))
                r = log_error_errno(EINVAL, "--verbose and --quiet exclude each other: give "
                                    "one.");
            level = c == 'v' ? LOG_DEBUG : LOG_ERR;
            break;
        case 'h': help = true; break;
        case OPT_VERSION:
            printf("tpm-provision %s\n", VERSION);
            status = EXIT_OK;
            goto done;
        default:
            fprintf(stderr, "Try 'tpm-provision --help'.\n");
            status = EXIT_USAGE;
            goto done;
        }
        if (r < 0) {
            status = EXIT_USAGE;
            goto done;
        }
    }
    log_set_max_level(level);

    if (optind < argc) {
        for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
            if (strcmp(argv[optind], commands[i].name) == 0)
                cmd = &commands[i];
        if (!cmd) {
            log_error("Unknown command '%s'. Try 'tpm-provision --help'.", argv[optind]);
            status = EXIT_USAGE;
            goto done;
        }
        if (optind + 1 < argc) {
            log_error("Unexpected argument '%s' after '%s'.", secret_shown(argv[optind + 1]),
                      cmd->name);
            status = EXIT_USAGE;
            goto done;
        }
    }
    if (help) {
        if (cmd)
            printf("Usage: tpm-provision [OPTIONS] %s\n\n%s\nGlobal options: see "
                   "'tpm-provision --help'.\n", cmd->synopsis, cmd->help);
        else
            help_global(stdout);
        status = EXIT_OK;
        goto done;
    }
    if (!cmd) {
        help_global(stderr);
        status = EXIT_USAGE;
        goto done;
    }
    if (o.format != OUTPUT_TEXT && !(cmd->formats & (1u << o.format))) {
        log_error("'%s' does not take --%s.", cmd->name, o.format == OUTPUT_JSON ? "json" : "csv");
        status = EXIT_USAGE;
        goto done;
    }
    if (o.set_lockout_auth_file && cmd->run != cmd_own) {
        log_error("--set-lockout-auth goes with 'own' only.");
        status = EXIT_USAGE;
        goto done;
    }
    if (only_for && strcmp(cmd->name, only_cmd) != 0) {
        log_error("%s goes with '%s' only.", only_for, only_cmd);
        status = EXIT_USAGE;
        goto done;
    }
    if (enroll_only && cmd->run != cmd_enroll) {
        log_error("%s goes with 'enroll' only.", enroll_only);
        status = EXIT_USAGE;
        goto done;
    }
    if (o.n_previous > 0 && cmd->run != cmd_ek && cmd->run != cmd_enroll) {
        log_error("--previous goes with 'ek' and 'enroll' only.");
        status = EXIT_USAGE;
        goto done;
    }
    if (o.service_endpoint && cmd->run == cmd_enroll) {
        const char *why = config_check_endpoint(o.service_endpoint);
        if (why) {
            log_error("Invalid --endpoint=%s: %s.", secret_shown(o.service_endpoint), why);
            status = EXIT_USAGE;
            goto done;
        }
    }
    if (o.resource && !*o.resource) {
        log_error("--resource= is empty: give the URI the token is for, or leave the option "
                  "out for the device's own (hub/devices/ID).");
        status = EXIT_USAGE;
        goto done;
    }
    if (o.n_previous > 0 && cmd->run == cmd_ek && !o.append) {
        /* Without a list to add to there is nothing to compare the EK for. */
        log_error("--previous goes with 'ek --append=FILE'.");
        status = EXIT_USAGE;
        goto done;
    }

    if (v.config) {
        /* A file named on the command line must be there; only the default may be missing. */
        if (access(v.config, R_OK) < 0) {
            log_error("Cannot read the configuration file --config=%s: %m.", v.config);
            status = EXIT_USAGE;
            goto done;
        }
        setenv("TPM_PROVISION_CONFIG", v.config, 1);
    }
    r = config_init(&o.cfg);
    /* A typo in IdScope= must not also stop the commands that show what the TPM holds. */
    o.cfg.provisioning_unused = cmd->run == cmd_own || cmd->run == cmd_status ||
                                cmd->run == cmd_ek || cmd->run == cmd_reset;
    if (r >= 0)
        r = config_load(&o.cfg);
    o.cfg.provisioning_unused = false; /* an option typed for this very run is always checked */
    if (r >= 0)
        r = apply_overrides(&o.cfg, &v);
    if (r >= 0)
        r = config_check_handles(&o.cfg);
    if (r >= 0)
        r = cmd->run(&o);
    config_done(&o.cfg);
    status = exit_code_from_errno(r);
done:
    /* Every way out frees what the repeatable options collected (LeakSanitizer checks). */
    free(o.previous);
    free(o.lists);
    free(o.iot_hubs);
    return status;
}
