/* sanproxyd's configuration: built-in defaults for every key, overridden by an INI file (libinih).
 *
 * Keys (docs/daemon.md): [machine] ram_size, nolowmem; [nic] dma_address_width, scatter_gather,
 * max_length, addresses; [limits] endpoints, locked_bytes, registrations, allocations,
 * allocated_bytes, per_uid_locked_bytes, per_uid_allocated_bytes, per_uid_connections; [daemon]
 * socket; [link] listen, peers, provider, timeout, secret, secret_file. An unknown section or key,
 * a value out of its domain, or a key set twice, is an error naming the key and its line (both
 * lines for a key set twice); the first error wins. No locking: used once at start-up. */
#include "common/duration.h"
#include "common/size.h"
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define TIB (UINT64_C(1) << 40)

/* The machine's RAM is one mapping of about ram_size (plus the 1 GiB hole below 4 GiB) in the
 * daemon's 128 TiB of user address space, next to the program, its libraries and stacks: 64 TiB
 * is the largest power of two that fits wherever the kernel placed those (more fails with ENOMEM
 * at start-up, not here). */
#define RAM_SIZE_MAX (64 * TIB)

void san_config_defaults(struct san_daemon_config *c)
{
    *c = (struct san_daemon_config){
        .ram_size = 8 * GIB,
        .nolowmem = false,
        .dma_address_width = 64,
        .scatter_gather = true,
        .max_length = 1 * MIB,
        .limit_locked_bytes = 1 * GIB,
        .limit_registrations = 65536,
        .limit_allocations = 4096,
        .limit_allocated_bytes = SAN_LIMIT_AUTO,
        .limit_uid_locked_bytes = SAN_LIMIT_AUTO,
        .limit_uid_allocated = SAN_LIMIT_AUTO,
        .limit_uid_connections = 256,
        .limit_endpoints = 256,
        .linger_ns = SAN_DEFAULT_LINGER_NS,
        .link = {.provider = SAN_LINK_DEFAULT_PROV, .timeout_ns = SAN_LINK_DEFAULT_TIMEOUT},
    };
    size_t bad;
    san_nic_parse_nets(SAN_NIC_DEFAULT_NETS, c->nets, 16, &c->nr_nets, &bad);
}

/* One client may hold half the machine's RAM as proxy memory; one uid, all its clients together,
 * half as proxy memory and a quarter as locked buffers: whatever one user does, at least a quarter
 * of the machine stays for the others. */
void san_config_resolve(struct san_daemon_config *c)
{
    if (c->limit_allocated_bytes == SAN_LIMIT_AUTO)
        c->limit_allocated_bytes = c->ram_size / 2;
    if (c->limit_uid_allocated == SAN_LIMIT_AUTO)
        c->limit_uid_allocated = c->ram_size / 2;
    if (c->limit_uid_locked_bytes == SAN_LIMIT_AUTO)
        c->limit_uid_locked_bytes = c->ram_size / 4;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no",
                                                                                "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(s, yes[i])) {
            *out = true;
            return 0;
        }
        if (!strcasecmp(s, no[i])) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/* The secret in a file of its own (mode 0600, out of the config): its bytes, one trailing newline
 * dropped. NULL or why not. */
static const char *read_secret(struct san_link_config *l, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return "cannot open the file";
    uint8_t buf[SAN_LINK_SECRET_MAX + 2];
    ssize_t n, got = 0;
    while (got < (ssize_t)sizeof(buf) && (n = read(fd, buf + got, sizeof(buf) - (size_t)got)) > 0)
        got += n;
    close(fd);
    if (got > 0 && buf[got - 1] == '\n')
        got--;
    if (got > 0 && buf[got - 1] == '\r')
        got--;
    if (got <= 0 || got > SAN_LINK_SECRET_MAX)
        return "a readable file of 1 to 256 bytes";
    memcpy(l->secret, buf, (size_t)got);
    l->secret_len = (size_t)got;
    return NULL;
}

/* One [link] key: NULL, or what the value should have been. */
static const char *link_key(struct san_daemon_config *c, const char *key, const char *value)
{
    struct san_link_config *l = &c->link;
    uint64_t ns;

    if (!strcmp(key, "listen")) {
        if (san_link_parse_addr(value, &l->listen, &l->listen_len) ||
            san_link_addr_is_any((struct sockaddr *)&l->listen))
            return "a specific ADDRESS:PORT (IPv4, or [IPv6]:PORT; not a wildcard: peers name it)";
    } else if (!strcmp(key, "peers")) {
        char buf[1024], *save, *w;
        if (strlen(value) >= sizeof(buf))
            return "up to 16 ADDRESS:PORT, commas or spaces between them";
        strcpy(buf, value);
        l->nr_peers = 0;
        for (w = strtok_r(buf, ", \t", &save); w; w = strtok_r(NULL, ", \t", &save)) {
            if (l->nr_peers == SAN_LINK_MAX_PEERS)
                return "up to 16 ADDRESS:PORT, commas or spaces between them";
            size_t i = l->nr_peers;
            if (san_link_parse_addr(w, &l->peers[i], &l->peer_len[i]) ||
                san_link_addr_is_any((struct sockaddr *)&l->peers[i]))
                return "up to 16 ADDRESS:PORT, commas or spaces between them";
            for (size_t k = 0; k < i; k++)
                if (l->peer_len[k] == l->peer_len[i] &&
                    !memcmp(&l->peers[k], &l->peers[i], l->peer_len[i]))
                    return "each peer once";
            l->nr_peers++;
        }
    } else if (!strcmp(key, "provider")) {
        size_t n = strlen(value);
        if (!n || n >= sizeof(l->provider))
            return "a libfabric provider name of 1 to 63 bytes (fi_info -l)";
        memcpy(l->provider, value, n + 1);
    } else if (!strcmp(key, "timeout")) {
        if (san_parse_duration(value, &ns) || ns < 100 * 1000000ULL || ns > 3600 * 1000000000ULL)
            return "a duration from 100ms to 1h (us, ms, s, m, h)";
        l->timeout_ns = ns;
    } else if (!strcmp(key, "secret")) {
        size_t n = strlen(value);
        if (l->secret_len)
            return "secret and secret_file: one of them";
        if (!n || n > SAN_LINK_SECRET_MAX)
            return "1 to 256 bytes";
        memcpy(l->secret, value, n);
        l->secret_len = n;
    } else if (!strcmp(key, "secret_file")) {
        if (l->secret_len)
            return "secret and secret_file: one of them";
        return read_secret(l, value);
    } else {
        return "unknown key";
    }
    return NULL;
}

struct parse_state {
    struct san_daemon_config *c;
    char msg[256];     /* first error, without the line */
    char key[64];      /* the key it names */
    char section[64];  /* and its section */
    bool twice;        /* the error is a key set a second time */
    char seen[32][64]; /* "section key" of every key set so far */
    unsigned nr_seen;
};

static int fail(struct parse_state *st, const char *section, const char *key, const char *what,
                const char *value)
{
    if (!st->msg[0]) {
        snprintf(st->msg, sizeof(st->msg), "[%s] %s: %s (got \"%s\")", section, key, what, value);
        snprintf(st->key, sizeof(st->key), "%s", key);
        snprintf(st->section, sizeof(st->section), "%s", section);
    }
    return 0; /* tells inih: error on this line */
}

static int handler(void *user, const char *section, const char *key, const char *value)
{
    struct parse_state *st = user;
    struct san_daemon_config *c = st->c;
    uint64_t v;

    if (st->msg[0])
        return 1; /* report the first error only; later lines still parse */
    if (!key)
        return 1; /* a section header alone */
    /* A key set twice: the second value would silently win (and inih calls here again for a
     * continuation line of a key, which is no syntax of ours either). */
    char id[sizeof(st->seen[0])];
    snprintf(id, sizeof(id), "%s %s", section, key);
    for (unsigned i = 0; i < st->nr_seen; i++)
        if (!strcmp(st->seen[i], id)) {
            st->twice = true;
            return fail(st, section, key, "set twice", value);
        }
    if (st->nr_seen < sizeof(st->seen) / sizeof(st->seen[0]))
        memcpy(st->seen[st->nr_seen++], id, sizeof(id));
#define IS(s, k) (!strcmp(section, s) && !strcmp(key, k))
    if (IS("machine", "ram_size")) {
        if (san_parse_size(value, &v) || v < 16 * MIB || v % SAN_PAGE_SIZE || v > RAM_SIZE_MAX)
            return fail(st, section, key, "a size from 16M to 64T, whole 4K pages", value);
        c->ram_size = v;
    } else if (IS("machine", "nolowmem")) {
        if (parse_bool(value, &c->nolowmem))
            return fail(st, section, key, "true or false", value);
    } else if (IS("nic", "dma_address_width")) {
        char *end;
        errno = 0;
        unsigned long w = strtoul(value, &end, 10);
        if (errno || end == value || *end || w < 1 || w > 64)
            return fail(st, section, key, "a number of bits from 1 to 64", value);
        c->dma_address_width = (uint32_t)w;
    } else if (IS("nic", "scatter_gather")) {
        if (parse_bool(value, &c->scatter_gather))
            return fail(st, section, key, "true or false", value);
    } else if (IS("nic", "addresses")) {
        size_t bad;
        if (san_nic_parse_nets(value, c->nets, 16, &c->nr_nets, &bad))
            return fail(st, section, key, "up to 16 networks ADDRESS/PREFIX, IPv4 or IPv6", value);
    } else if (IS("nic", "linger")) {
        if (san_parse_duration(value, &v) || v > 3600 * 1000000000ULL)
            return fail(st, section, key, "a duration up to 1h (0: no lingering)", value);
        c->linger_ns = v;
    } else if (IS("nic", "max_length")) {
        if (san_parse_size(value, &v) || v < SAN_PAGE_SIZE || v > UINT32_MAX)
            return fail(st, section, key, "a size from 4K to 4G-1", value);
        c->max_length = v;
    } else if (IS("limits", "locked_bytes") || IS("limits", "allocated_bytes") ||
               IS("limits", "per_uid_locked_bytes") || IS("limits", "per_uid_allocated_bytes")) {
        if (san_parse_size(value, &v) || v == SAN_LIMIT_AUTO)
            return fail(st, section, key, "a size (K/M/G/T suffixes)", value);
        if (!strcmp(key, "locked_bytes"))
            c->limit_locked_bytes = v;
        else if (!strcmp(key, "allocated_bytes"))
            c->limit_allocated_bytes = v;
        else if (!strcmp(key, "per_uid_locked_bytes"))
            c->limit_uid_locked_bytes = v;
        else
            c->limit_uid_allocated = v;
    } else if (IS("limits", "registrations") || IS("limits", "allocations") ||
               IS("limits", "per_uid_connections") || IS("limits", "endpoints")) {
        char *end;
        errno = 0;
        unsigned long long n = strtoull(value, &end, 10);
        if (errno || end == value || *end || value[0] == '-' || n > UINT32_MAX)
            return fail(st, section, key, "a count from 0 to 4294967295", value);
        if (!strcmp(key, "registrations"))
            c->limit_registrations = n;
        else if (!strcmp(key, "allocations"))
            c->limit_allocations = n;
        else if (!strcmp(key, "endpoints"))
            c->limit_endpoints = n;
        else
            c->limit_uid_connections = n;
    } else if (!strcmp(section, "link")) {
        const char *why = link_key(c, key, value);
        if (why)
            return fail(st, section, key, why, value);
        c->link.enabled = true;
    } else if (IS("daemon", "socket")) {
        size_t n = strlen(value);
        if (!n || n >= sizeof(c->socket))
            return fail(st, section, key, "a path of 1 to 107 bytes", value);
        memcpy(c->socket, value, n + 1);
    } else {
        return fail(st, section, key, "unknown key", value);
    }
#undef IS
    return 1;
}

/* Whether line (1-based) of f starts with key: inih reports the first bad line, which may be a
 * syntax error before the key the handler refused. */
static bool line_has_key(FILE *f, int line, const char *key)
{
    char buf[512];
    rewind(f);
    for (int i = 1; fgets(buf, sizeof(buf), f); i++) {
        if (i < line)
            continue;
        const char *p = buf + strspn(buf, " \t");
        size_t n = strlen(key);
        return !strncmp(p, key, n) && strchr(" \t=:", p[n]);
    }
    return false;
}

/* The first line of f that sets key in section, or 0. */
static int first_key_line(FILE *f, const char *section, const char *key)
{
    char buf[512], cur[128] = "";
    rewind(f);
    for (int i = 1; fgets(buf, sizeof(buf), f); i++) {
        const char *p = buf + strspn(buf, " \t");
        const char *end = p[0] == '[' ? strchr(p, ']') : NULL;
        size_t n = strlen(key);
        if (end)
            snprintf(cur, sizeof(cur), "%.*s", (int)(end - p - 1), p + 1);
        else if (!strcmp(cur, section) && !strncmp(p, key, n) && strchr(" \t=:", p[n]))
            return i;
    }
    return 0;
}

/* The first line of f that opens a section this config does not have, or 0. inih tells the
 * handler about a section only through its keys: an unknown section without keys would pass. */
static int unknown_section(FILE *f, char *name, size_t size)
{
    static const char *const known[] = {"machine", "nic", "limits", "daemon", "link"};
    char buf[512];
    rewind(f);
    for (int i = 1; fgets(buf, sizeof(buf), f); i++) {
        const char *p = buf + strspn(buf, " \t");
        const char *end = p[0] == '[' ? strchr(p, ']') : NULL;
        if (!end)
            continue;
        snprintf(name, size, "%.*s", (int)(end - p - 1), p + 1);
        bool found = false;
        for (size_t k = 0; k < sizeof(known) / sizeof(known[0]); k++)
            found |= !strcmp(name, known[k]);
        if (!found)
            return i;
    }
    return 0;
}

int san_config_load(struct san_daemon_config *c, const char *path, char *err, size_t err_size)
{
    struct parse_state st = {.c = c};
    FILE *f = fopen(path, "r");

    if (!f) {
        int e = errno;
        snprintf(err, err_size, "%s: %s", path, strerror(e));
        return -e;
    }
    int line = ini_parse_file(f, handler, &st);
    int read_err = ferror(f) ? errno : 0; /* inih takes a read error for the end of the file */
    bool keyed = line > 0 && st.msg[0] && line_has_key(f, line, st.key);
    int first = keyed && st.twice ? first_key_line(f, st.section, st.key) : 0;
    char section[128];
    int bad_section = line == 0 && !read_err ? unknown_section(f, section, sizeof(section)) : 0;
    fclose(f);
    if (bad_section) {
        snprintf(err, err_size, "%s:%d: [%s]: unknown section", path, bad_section, section);
        return -EINVAL;
    }
    if (read_err) {
        snprintf(err, err_size, "%s: cannot read: %s", path, strerror(read_err));
        return -read_err;
    }
    if (line == 0 && c->link.enabled && !c->link.listen_len) {
        snprintf(err, err_size, "%s: [link] listen: required when [link] sets any key", path);
        return -EINVAL;
    }
    for (size_t i = 0; line == 0 && i < c->link.nr_peers; i++)
        if (c->link.peer_len[i] == c->link.listen_len &&
            !memcmp(&c->link.peers[i], &c->link.listen, c->link.listen_len)) {
            snprintf(err, err_size, "%s: [link] peers: names this daemon's own listen address",
                     path);
            return -EINVAL;
        }
    if (line == 0)
        return 0;
    if (line < 0)
        snprintf(err, err_size, "%s: cannot parse (error %d)", path, line);
    else if (first)
        snprintf(err, err_size, "%s:%d: [%s] %s: set twice, on line %d and on line %d", path, line,
                 st.section, st.key, first, line);
    else if (keyed)
        snprintf(err, err_size, "%s:%d: %s", path, line, st.msg);
    else
        snprintf(err, err_size, "%s:%d: syntax error (expected [section] or key = value)", path,
                 line);
    return -EINVAL;
}
