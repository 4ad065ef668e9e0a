/* RxM's environment variables for the link (rxm_env.h): what the environment says is read, kept
 * where it serves the link, replaced (and logged) where it does not. Sits on the C library's
 * environment and the daemon's log; not thread-safe (setenv), called once before the link loads
 * its provider. */
#include "link/rxm_env.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/daemon.h"

/* s as a whole number (decimal, 0x hex or 0 octal, as libfabric reads it), or false: a value
 * libfabric would read only a prefix of ("64k" is 64 there) is no number here. */
static bool number(const char *s, unsigned long long *v)
{
    char *end;
    while (isspace((unsigned char)*s))
        s++;
    if (!isdigit((unsigned char)*s))
        return false;
    errno = 0;
    *v = strtoull(s, &end, 0);
    while (isspace((unsigned char)*end))
        end++;
    return !errno && !*end;
}

/* One variable: the environment's value when it is a number of at least min, else want. */
static void choose(struct san_link_rxm_var *o, const char *name, unsigned long long min,
                   unsigned long long want, const char *why)
{
    const char *cur = getenv(name);
    unsigned long long v = 0;
    bool ok = cur && number(cur, &v);
    o->name = name;
    if (ok && v >= min) {
        o->value = v;
        o->how = SAN_LINK_RXM_KEPT;
        return;
    }
    char text[24];
    snprintf(text, sizeof(text), "%llu", want);
    setenv(name, text, 1);
    o->value = want;
    o->how = !cur ? SAN_LINK_RXM_SET : ok ? SAN_LINK_RXM_RAISED : SAN_LINK_RXM_REPLACED;
    if (o->how == SAN_LINK_RXM_RAISED)
        san_log(SAN_LOG_WARN,
                "link: %s=%llu in the environment is below the %llu the link needs "
                "(%s): set to %llu",
                name, v, min, why, want);
    else if (o->how == SAN_LINK_RXM_REPLACED)
        san_log(SAN_LOG_WARN, "link: %s=\"%.32s\" in the environment is not a number: set to %llu",
                name, cur, want);
}

static const char *how_text(enum san_link_rxm_how how)
{
    switch (how) {
    case SAN_LINK_RXM_KEPT:
        return "the environment's";
    case SAN_LINK_RXM_RAISED:
        return "raised";
    case SAN_LINK_RXM_REPLACED:
        return "replaced";
    default:
        return "set by the link";
    }
}

void san_link_rxm_env(struct san_link_rxm_var out[SAN_LINK_RXM_VARS])
{
    static const char eager[] = "every link message must go eager: RxM's segmentation lost them";
    choose(&out[0], "FI_OFI_RXM_BUFFER_SIZE", SAN_LINK_RXM_EAGER, SAN_LINK_RXM_EAGER, eager);
    choose(&out[1], "FI_OFI_RXM_EAGER_LIMIT", SAN_LINK_RXM_EAGER, SAN_LINK_RXM_EAGER, eager);
    /* Memory only (RxM's bounce buffers posted per connection, each of the buffer size): any
     * number the operator chose is kept, 0 included (the core provider's default). */
    choose(&out[2], "FI_OFI_RXM_MSG_RX_SIZE", 0, SAN_LINK_RXM_MSG_RX, "");
    san_log(SAN_LOG_INFO,
            "link: RxM buffer size %llu (%s), eager limit %llu (%s), receives per connection %llu "
            "(%s)",
            out[0].value, how_text(out[0].how), out[1].value, how_text(out[1].how), out[2].value,
            how_text(out[2].how));
}
