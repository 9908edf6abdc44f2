/* SPDX-License-Identifier: MIT */
#include "common.h"

#include <errno.h>

#include "basic/log.h"

int cmd_open_tpm(const struct options *o, struct tpm **ret_tpm, struct hierarchy_auths *ret_auths) {
    _cleanup_(tpm_closep) struct tpm *t = NULL;
    int r;

    *ret_auths = (struct hierarchy_auths){0};
    for (int h = 0; h < _HIERARCHY_MAX; h++) {
        r = auth_value_load(&ret_auths->auth[h], o->auth_file[h], hierarchy_credential(h));
        if (r < 0)
            goto fail;
    }
    r = auth_value_load(&ret_auths->new_lockout, o->set_lockout_auth_file,
                        "tpm-provision.new-lockout-auth");
    if (r < 0)
        goto fail;

    r = tpm_open(o->tcti, &t);
    if (r < 0)
        goto fail;
    r = tpm_properties_load(t);
    if (r < 0)
        goto fail;
    hierarchy_auths_apply(t, ret_auths);

    *ret_tpm = TAKE_PTR(t);
    return 0;

fail:
    hierarchy_auths_wipe(ret_auths);
    return r;
}
