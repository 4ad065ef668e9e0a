/* The RDMA descriptor libsan writes for san_register_rdma (WSPRegisterRdmaMemory's buffer): what
 * a peer needs to name the registration in san_rdma_write/read. Opaque to applications; fixed
 * layout, checked where it is read (ep.c). */
#ifndef SAN_CLIENT_DESC_H
#define SAN_CLIENT_DESC_H

#include <assert.h>
#include <stdint.h>

#include <san/client.h>

#define SAN_DESC_MAGIC   0x444e4153u /* "SAND" */
#define SAN_DESC_VERSION 1u

struct san_rdma_desc {
    uint32_t magic;
    uint16_t version;
    uint16_t access;
    uint64_t host_id; /* the daemon that holds the registration */
    uint64_t va, len;
    uint32_t rkey;
    uint32_t client_id; /* the registering client, on that daemon */
};
static_assert(sizeof(struct san_rdma_desc) == SAN_RDMA_DESC_SIZE, "descriptor layout");

#endif
