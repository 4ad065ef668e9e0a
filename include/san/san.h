/* sanproxy: everything public. */
#ifndef SAN_SAN_H
#define SAN_SAN_H

#include <san/export.h>
#include <san/types.h>
#include <san/error.h>
#include <san/phys.h>
#include <san/mdl.h>
#include <san/dma.h>
#include <san/client.h>
#include <san/nic.h>

#endif
