// libibverbs for Swift: function-like macros that Swift cannot import, wrapped as inline functions.
#ifndef STRATA_CIBVERBS_SHIM_H
#define STRATA_CIBVERBS_SHIM_H
#include <infiniband/verbs.h>

static inline int strata_ibv_query_port(struct ibv_context *context, uint8_t port_num,
                                        struct ibv_port_attr *port_attr) {
  return ibv_query_port(context, port_num, port_attr);
}

static inline struct ibv_mr *strata_ibv_reg_mr(struct ibv_pd *pd, void *addr, size_t length,
                                               int access) {
  return ibv_reg_mr(pd, addr, length, access);
}

#endif
