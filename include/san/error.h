/* Error convention: every fallible sanproxy function returns 0 or a negative errno value. */
#ifndef SAN_ERROR_H
#define SAN_ERROR_H

#include <san/export.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Names an error code returned by any sanproxy function: "success" for 0, the errno name and a
 * sentence for a negative errno (positive values are accepted too). Never returns NULL; the string
 * is static. Thread-safe. */
SAN_API const char *san_strerror(int err);

#ifdef __cplusplus
}
#endif

#endif
