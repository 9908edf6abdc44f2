/* SPDX-License-Identifier: MIT */
/* tpm-provision: command line, global options and dispatch. Everything else lives in cmd/. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "basic/log.h"
#include "cmd/common.h"
#include "exit-codes.h"
#include "state/nvstate.h"
#include "tpm/keys.h"

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
    {"ek", cmd_ek, "ek [--json|--csv]",
     "Print the registration ID, the EK public as DPS takes it (base64 TPM2B_PUBLIC) and the EK\n"
     "certificate's serial and SHA-256 fingerprint. Reads the EK fresh from the TPM; an EK that\n"
     "is not persisted is computed from the template and not persisted.\n",
     (1u << OUTPUT_JSON) | (1u << OUTPUT_CSV)},
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
            "  --tcti=CONF               TPM connection (default $TPM_PROVISION_TCTI, else %s)\n"
            "  --owner-auth=FILE         owner hierarchy authorization (credential %s)\n"
            "  --endorsement-auth=FILE   endorsement hierarchy authorization (credential %s)\n"
            "  --lockout-auth=FILE       lockout hierarchy authorization (credential %s)\n"
            "  --ek-handle=HANDLE        persistent EK handle (default 0x%08x)\n"
            "  --srk-handle=HANDLE       persistent SRK handle (default 0x%08x)\n"
            "  --state-index=INDEX       NV index of the state record (default 0x%08x)\n"
            "  -v, --verbose             more detail (repeat for debug)\n"
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
            EK_DEFAULT_HANDLE, SRK_DEFAULT_HANDLE, NVSTATE_DEFAULT_INDEX);
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
};

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
        {},
    };
    struct options o = {
        .ek_handle = EK_DEFAULT_HANDLE,
        .srk_handle = SRK_DEFAULT_HANDLE,
        .state_index = NVSTATE_DEFAULT_INDEX,
    };
    const struct command *cmd = NULL;
    bool help = false;
    int c, r = 0, level = LOG_INFO;

    /* The TSS's own log prints errors for expected answers (a handle that is not there) and,
     * at debug level, session secrets; the agent reports failures itself (STYLE.md 3). */
    setenv("TSS2_LOG", "all+none", 0);

    while ((c = getopt_long(argc, argv, "vqh", longopts, NULL)) >= 0) {
        switch (c) {
        case OPT_TCTI: o.tcti = optarg; break;
        case OPT_OWNER_AUTH: o.auth_file[HIERARCHY_OWNER] = optarg; break;
        case OPT_ENDORSEMENT_AUTH: o.auth_file[HIERARCHY_ENDORSEMENT] = optarg; break;
        case OPT_LOCKOUT_AUTH: o.auth_file[HIERARCHY_LOCKOUT] = optarg; break;
        case OPT_EK_HANDLE: r = parse_handle(optarg, "--ek-handle", 0x81000000, 0x81ffffff, &o.ek_handle); break;
        case OPT_SRK_HANDLE: r = parse_handle(optarg, "--srk-handle", 0x81000000, 0x81ffffff, &o.srk_handle); break;
        case OPT_STATE_INDEX: r = parse_handle(optarg, "--state-index", 0x01000000, 0x01bfffff, &o.state_index); break;
        case OPT_JSON: o.format = OUTPUT_JSON; break;
        case OPT_CSV: o.format = OUTPUT_CSV; break;
        case OPT_SET_LOCKOUT_AUTH: o.set_lockout_auth_file = optarg; break;
        case 'v': level = level < LOG_DEBUG ? level + 1 : LOG_DEBUG; break;
        case 'q': level = LOG_ERR; break;
        case 'h': help = true; break;
        case OPT_VERSION: printf("tpm-provision %s\n", VERSION); return EXIT_OK;
        default:
            fprintf(stderr, "Try 'tpm-provision --help'.\n");
            return EXIT_USAGE;
        }
        if (r < 0)
            return EXIT_USAGE;
    }
    log_set_max_level(level);

    if (optind < argc) {
        for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
            if (strcmp(argv[optind], commands[i].name) == 0)
                cmd = &commands[i];
        if (!cmd) {
            log_error("Unknown command '%s'. Try 'tpm-provision --help'.", argv[optind]);
            return EXIT_USAGE;
        }
        if (optind + 1 < argc) {
            log_error("Unexpected argument '%s' after '%s'.", argv[optind + 1], cmd->name);
            return EXIT_USAGE;
        }
    }
    if (help) {
        if (cmd)
            printf("Usage: tpm-provision [OPTIONS] %s\n\n%s\nGlobal options: see "
                   "'tpm-provision --help'.\n", cmd->synopsis, cmd->help);
        else
            help_global(stdout);
        return EXIT_OK;
    }
    if (!cmd) {
        help_global(stderr);
        return EXIT_USAGE;
    }
    if (o.format != OUTPUT_TEXT && !(cmd->formats & (1u << o.format))) {
        log_error("'%s' does not take --%s.", cmd->name, o.format == OUTPUT_JSON ? "json" : "csv");
        return EXIT_USAGE;
    }
    if (o.set_lockout_auth_file && cmd->run != cmd_own) {
        log_error("--set-lockout-auth goes with 'own' only.");
        return EXIT_USAGE;
    }

    if (!o.tcti)
        o.tcti = getenv("TPM_PROVISION_TCTI");
    if (!o.tcti || !*o.tcti)
        o.tcti = TPM_DEFAULT_TCTI;

    r = cmd->run(&o);
    return exit_code_from_errno(r);
}
