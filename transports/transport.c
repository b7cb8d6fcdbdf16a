/* transport.c - the table of built transports and TERSE_TRANSPORT selection. */
#include "transport.h"
#include "../lib/log.h"

#include <string.h>

static const terse_tp_ops_t *const transports[] = {
#ifdef TERSE_HAVE_VERBS
    &terse_tp_verbs_ops,
#endif
    &terse_tp_tcp_ops,
};

const terse_tp_ops_t *terse__tp_select(const char *name, terse_status_t *status)
{
    *status = TERSE_OK;
    if (strcmp(name, "auto") == 0) {
        /* Verbs is not built yet in this tree: auto means TCP. */
        TERSE_INFO(INIT, "TERSE_TRANSPORT=auto: using %s", transports[sizeof(transports) / sizeof(transports[0]) - 1]->name);
        return &terse_tp_tcp_ops;
    }
    for (size_t i = 0; i < sizeof(transports) / sizeof(transports[0]); i++)
        if (strcmp(transports[i]->name, name) == 0)
            return transports[i];
    TERSE_WARN(INIT, "transport '%s' is not available in this build", name);
    *status = TERSE_ERR_UNSUPPORTED;
    return NULL;
}
