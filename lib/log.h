/* log.h - leveled logging with a subsystem mask (TERSE_DEBUG, TERSE_DEBUG_SUBSYS). */
#ifndef TERSE_LOG_H
#define TERSE_LOG_H

enum { TERSE_LOG_NONE = 0, TERSE_LOG_WARN, TERSE_LOG_INFO, TERSE_LOG_TRACE };
enum {
    TERSE_SUBSYS_INIT = 1 << 0,
    TERSE_SUBSYS_BOOT = 1 << 1,
    TERSE_SUBSYS_NET = 1 << 2,
    TERSE_SUBSYS_COLL = 1 << 3,
};

extern int terse__log_level;
extern int terse__log_mask;

void terse__log_configure(const char *level, const char *subsys);
/* Rank shown in log lines of this process (-1 before a communicator exists). */
void terse__log_set_rank(int rank);
void terse__log(int level, int subsys, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define TERSE_LOG_(lvl, ss, ...)                                                         \
    do {                                                                                 \
        if (terse__log_level >= (lvl) && (terse__log_mask & TERSE_SUBSYS_##ss))          \
            terse__log((lvl), TERSE_SUBSYS_##ss, __FILE__, __LINE__, __VA_ARGS__);       \
    } while (0)
#define TERSE_WARN(ss, ...) TERSE_LOG_(TERSE_LOG_WARN, ss, __VA_ARGS__)
#define TERSE_INFO(ss, ...) TERSE_LOG_(TERSE_LOG_INFO, ss, __VA_ARGS__)
#define TERSE_TRACE(ss, ...) TERSE_LOG_(TERSE_LOG_TRACE, ss, __VA_ARGS__)

#endif
