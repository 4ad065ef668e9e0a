/* RxM's tuning for the link: the environment variables the provider reads when it is first loaded
 * (docs/link.md, Threads: message size).
 *
 * The link's messages must all go eager (RxM's SAR lost the first 64 KiB chunk of a write here),
 * so FI_OFI_RXM_BUFFER_SIZE and FI_OFI_RXM_EAGER_LIMIT must be at least SAN_LINK_RXM_EAGER, the
 * link's receive buffer size: a value of the environment that is, is kept; one below it, or not a
 * number, is replaced and the log says so, one line each. FI_OFI_RXM_MSG_RX_SIZE (RxM's receives
 * per provider connection) is memory, not correctness: the environment's number is kept, else
 * SAN_LINK_RXM_MSG_RX. One more log line says what was chosen. setenv: call it before any other
 * thread reads the environment, and before the process first loads libfabric's providers (later,
 * RxM has read its values already). */
#ifndef SAN_LINK_RXM_ENV_H
#define SAN_LINK_RXM_ENV_H

#include <stdbool.h>

#define SAN_LINK_RXM_EAGER  (64 << 10)
#define SAN_LINK_RXM_MSG_RX 64
#define SAN_LINK_RXM_VARS   3

enum san_link_rxm_how {
    SAN_LINK_RXM_SET,      /* the environment had none: the link's */
    SAN_LINK_RXM_KEPT,     /* the environment's */
    SAN_LINK_RXM_RAISED,   /* the environment's was below what the link needs: the link's */
    SAN_LINK_RXM_REPLACED, /* the environment's was not a number: the link's */
};

struct san_link_rxm_var {
    const char *name;         /* FI_OFI_RXM_... */
    unsigned long long value; /* what the environment says now */
    enum san_link_rxm_how how;
};

/* Sets the three variables as above; out[] says what became of each, in the order BUFFER_SIZE,
 * EAGER_LIMIT, MSG_RX_SIZE. */
void san_link_rxm_env(struct san_link_rxm_var out[SAN_LINK_RXM_VARS]);

#endif
