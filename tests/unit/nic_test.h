/* The NIC on an emulated machine, for the tests that drive it themselves (included by each test
 * file; not a test itself): the machine, a 64-bit scatter-gather DMA adapter, the registration
 * table and the NIC, made and released together. */
#ifndef SAN_TESTS_NIC_TEST_H
#define SAN_TESTS_NIC_TEST_H

#include <stdint.h>

#include <san/dma.h>
#include <san/nic.h>

#include "mdl/owner.h"
#include "mr/mr.h"
#include "nic/nic.h"

/* A machine of ram bytes with the NIC of nc on it: 0, or the first error (what was made before it
 * is left for the process's exit). */
static inline int nic_test_create(uint64_t ram, const struct san_nic_config *nc,
                                  struct san_machine **m, struct san_dma_adapter **adapter,
                                  struct san_regtab **reg, struct san_nic **nic)
{
    struct san_machine_config mc = {.ram_size = ram};
    struct san_device_description dd = {.version = 3,
                                        .master = true,
                                        .scatter_gather = true,
                                        .dma64 = true,
                                        .dma_address_width = 64,
                                        .max_length = 1u << 20};
    uint32_t nmr = 0;
    int err;
    if ((err = san_machine_create(&mc, m)) || (err = san_get_dma_adapter(*m, &dd, &nmr, adapter)) ||
        (err = san_regtab_create(*m, reg)) || (err = san_nic_create(nc, *reg, *adapter, nic)))
        return err;
    return 0;
}

static inline void nic_test_destroy(struct san_machine *m, struct san_dma_adapter *adapter,
                                    struct san_regtab *reg, struct san_nic *nic)
{
    san_nic_destroy(nic); /* waits for the connections' threads to let go */
    san_regtab_destroy(reg);
    adapter->ops->put_dma_adapter(adapter);
    san_machine_destroy(m);
}

/* This process as the owner of the pages a test registers: reached with memcpy. */
static inline struct san_page_owner nic_test_self(void)
{
    return (struct san_page_owner){
        .pid = 0, .pidfd = -1, .pagemap_fd = -1, .maps_fd = -1, .mem_fd = -1};
}

#endif
