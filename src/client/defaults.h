/* libsan's tunable defaults, shared with the tools that measure against them (sanperf reg). */
#ifndef SAN_CLIENT_DEFAULTS_H
#define SAN_CLIENT_DEFAULTS_H

/* How long libsan polls for a reply before sleeping in recv, in microseconds; $SANPROXY_SPIN_US
 * overrides it (0: never poll). */
#define SAN_CLIENT_SPIN_US 20

#endif
