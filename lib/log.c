/* log.c - one line per message on stderr: "host:pid:rank terse LEVEL SUBSYS message". */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

int terse__log_level = TERSE_LOG_WARN;
int terse__log_mask = ~0;
static int log_rank = -1;

static const struct {
    const char *name;
    int bit;
} subsys_names[] = {
    {"INIT", TERSE_SUBSYS_INIT}, {"BOOT", TERSE_SUBSYS_BOOT}, {"NET", TERSE_SUBSYS_NET},
    {"COLL", TERSE_SUBSYS_COLL}, {"ALL", ~0},
};

void terse__log_configure(const char *level, const char *subsys)
{
    static const char *levels[] = {"NONE", "WARN", "INFO", "TRACE"};
    terse__log_level = TERSE_LOG_WARN;
    for (int i = 0; i < 4; i++)
        if (strcasecmp(level, levels[i]) == 0)
            terse__log_level = i;

    /* "^NET,COLL" excludes the listed subsystems, NCCL_DEBUG_SUBSYS style. */
    int invert = subsys[0] == '^';
    int mask = 0;
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", subsys + invert);
    for (char *save, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        for (size_t i = 0; i < sizeof(subsys_names) / sizeof(subsys_names[0]); i++)
            if (strcasecmp(tok, subsys_names[i].name) == 0)
                mask |= subsys_names[i].bit;
    terse__log_mask = invert ? ~mask : mask;
}

void terse__log_set_rank(int rank) { log_rank = rank; }

void terse__log(int level, int subsys, const char *file, int line, const char *fmt, ...)
{
    static const char *lvl[] = {"", "WARN", "INFO", "TRACE"};
    const char *ss = "";
    for (size_t i = 0; i < 4; i++)
        if (subsys_names[i].bit == subsys)
            ss = subsys_names[i].name;
    char host[64] = "?";
    gethostname(host, sizeof(host) - 1);
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    const char *base = strrchr(file, '/');
    /* One fprintf so lines of concurrent ranks do not interleave mid-line. */
    if (level >= TERSE_LOG_TRACE)
        fprintf(stderr, "%s:%d:%d terse %s %s %s:%d %s\n", host, (int)getpid(), log_rank,
                lvl[level], ss, base ? base + 1 : file, line, msg);
    else
        fprintf(stderr, "%s:%d:%d terse %s %s %s\n", host, (int)getpid(), log_rank, lvl[level],
                ss, msg);
}
