/* SPDX-License-Identifier: MIT */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * Reads a secret (an authorization value) from a file. One trailing newline is dropped, so a
 * value written with `echo` works. The file must hold at most max bytes after that. Warns when
 * the file can be read by users other than its owner. On failure nothing is written to ret_*.
 * Returns 0 or a negative errno (-E2BIG for a value that is too long).
 */
int secret_read_file(const char *path, size_t max, uint8_t *ret_buf, size_t *ret_size);

/*
 * Finds a systemd credential (systemd.exec(5), LoadCredential=/SetCredentialEncrypted=) named
 * name in $CREDENTIALS_DIRECTORY. Returns a newly allocated path in *ret_path, or -ENOENT when
 * there is no credentials directory or no such credential.
 */
int secret_credential_path(const char *name, char **ret_path);

/*
 * Whether a command-line value looks like a connection string or a SAS token (it holds
 * SharedAccessKey= or sig=): such a value given where a file name or an argument belongs is
 * refused without being repeated in the message.
 */
bool secret_looks_like_credential(const char *s);

/* s, or a placeholder saying a credential was given and is not shown. */
const char *secret_shown(const char *s);
