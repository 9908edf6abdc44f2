/* SPDX-License-Identifier: MIT */
#include "exit-codes.h"

#include <errno.h>
#include <stdlib.h>

int exit_code_from_errno(int error) {
    switch (abs(error)) {
    case 0:
        return EXIT_OK;
    case EINVAL:
    case E2BIG:
    case ENOEXEC:
    case ENOKEY:
    case ENOPKG: /* libcurl missing or without OpenSSL: an installation to fix */
        return EXIT_USAGE;
    case ENODEV:
    case ENXIO:
        return EXIT_NO_TPM;
    case EACCES:
    case EPERM:
    case ENOLCK:
    case EEXIST:
    case EKEYREJECTED:
        return EXIT_TPM_REFUSED;
    case EAGAIN:
    case EBUSY:
    case ETIMEDOUT:
    case ENOSPC:
    case EHOSTUNREACH:
    case ETIME:
    case EREMOTEIO:
        return EXIT_TEMPORARY;
    case ECONNREFUSED:
        return EXIT_DPS_REFUSED;
    case ENOTRECOVERABLE:
        return EXIT_TPM_UNUSABLE;
    default:
        return EXIT_FAILURE_OTHER;
    }
}
