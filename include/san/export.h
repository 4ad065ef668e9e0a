/* SAN_API marks what libsan exports. The library is built with -fvisibility=hidden: a function is
 * callable from a program linked against libsan.so only when its declaration here, in include/san/,
 * carries SAN_API (tests/integration/test_exports.sh holds the two sets equal). */
#ifndef SAN_EXPORT_H
#define SAN_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define SAN_API __attribute__((visibility("default")))
#else
#define SAN_API
#endif

#endif
