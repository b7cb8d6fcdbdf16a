/* compress_spec.c - parse and print the compressed modes (terse_compress_spec.h). */
#include "terse_compress_spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Codecs without shared-seed or sparse state: each call stands alone. */
static const char *const codecs[] = {"cnat8", "cnat9", "natdither", "qsgd", "sign1", "fp16", "bf16"};

int terse__size_parse(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    double mul = 1;
    if (end == s || v < 0 || !isfinite(v))
        return -1;
    if (*end == 'k' || *end == 'K') mul = 1024, end++;
    else if (*end == 'm' || *end == 'M') mul = 1024.0 * 1024, end++;
    else if (*end == 'g' || *end == 'G') mul = 1024.0 * 1024 * 1024, end++;
    if (*end == 'i' || *end == 'B') end++;
    if (*end == 'B') end++;
    if (*end)
        return -1;
    *out = (size_t)(v * mul);
    return 0;
}

int terse__compress_spec_parse(const char *text, terse_compress_spec_t *out)
{
    if (!text || !out)
        return -1;
    terse_compress_spec_t s = {TERSE_CZ_NONE, 0, "", TERSE_CZ_MIN_DEFAULT};
    char buf[128];
    if (strlen(text) >= sizeof(buf))
        return -1;
    strcpy(buf, text);
    char *opt = strchr(buf, ',');
    if (opt) {
        *opt++ = 0;
        if (strncmp(opt, "min=", 4) || terse__size_parse(opt + 4, &s.min_bytes))
            return -1;
    }
    if (!*buf || !strcasecmp(buf, "none") || !strcmp(buf, "0")) {
        s.kind = TERSE_CZ_NONE;
    } else if (!strncasecmp(buf, "abs:", 4) || !strncasecmp(buf, "rel:", 4)) {
        char *end;
        s.kind = tolower((unsigned char)buf[0]) == 'a' ? TERSE_CZ_ABS : TERSE_CZ_REL;
        s.bound = strtod(buf + 4, &end);
        if (end == buf + 4 || *end || !(s.bound > 0) || !isfinite(s.bound) || (s.kind == TERSE_CZ_REL && s.bound >= 1))
            return -1;
    } else {
        size_t i;
        for (i = 0; i < sizeof(codecs) / sizeof(codecs[0]) && strcasecmp(buf, codecs[i]); i++)
            ;
        if (i == sizeof(codecs) / sizeof(codecs[0]))
            return -1;
        s.kind = TERSE_CZ_CODEC;
        snprintf(s.codec, sizeof(s.codec), "%s", codecs[i]);
    }
    *out = s;
    return 0;
}

void terse__compress_spec_format(const terse_compress_spec_t *s, char *buf, size_t len)
{
    switch (s->kind) {
    case TERSE_CZ_ABS: snprintf(buf, len, "abs:%.6g,min=%zu", s->bound, s->min_bytes); break;
    case TERSE_CZ_REL: snprintf(buf, len, "rel:%.6g,min=%zu", s->bound, s->min_bytes); break;
    case TERSE_CZ_CODEC: snprintf(buf, len, "%s,min=%zu", s->codec, s->min_bytes); break;
    default: snprintf(buf, len, "none"); break;
    }
}
