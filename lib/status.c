/* status.c - terse_strerror and the version string, generated from terse.h's list. */
#include "terse.h"

#define STR_(s) #s
#define STR(s) STR_(s)

const char *terse_strerror(terse_status_t status)
{
#define TERSE_STATUS_CASE_(name, value, msg) \
    case name:                               \
        return msg;
    switch (status) { TERSE_STATUS_LIST(TERSE_STATUS_CASE_) }
#undef TERSE_STATUS_CASE_
    return "unknown status";
}

const char *terse_version(void)
{
    return STR(TERSE_VERSION_MAJOR) "." STR(TERSE_VERSION_MINOR) "." STR(TERSE_VERSION_PATCH);
}
