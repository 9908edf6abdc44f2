/* SPDX-License-Identifier: MIT */
/* What every subcommand shares: the global options and opening the TPM with them. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "tpm/hierarchy.h"
#include "tpm/tpm.h"

enum output_format { OUTPUT_TEXT, OUTPUT_JSON, OUTPUT_CSV };

struct options {
    const char *tcti;
    const char *auth_file[_HIERARCHY_MAX];
    uint32_t ek_handle, srk_handle, state_index;
    enum output_format format;
    /* own */
    const char *set_lockout_auth_file;
};

/* Opens the TPM named by the options and loads the hierarchy authorizations. */
int cmd_open_tpm(const struct options *o, struct tpm **ret_tpm, struct hierarchy_auths *ret_auths);

int cmd_own(const struct options *o);
int cmd_status(const struct options *o);
int cmd_ek(const struct options *o);
