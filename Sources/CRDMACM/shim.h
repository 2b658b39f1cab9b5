// librdmacm for Swift: the connection manager used to set up reliable-connected queue pairs.
#ifndef STRATA_CRDMACM_SHIM_H
#define STRATA_CRDMACM_SHIM_H
#include <rdma/rdma_cma.h>
#include <rdma/rdma_verbs.h>
#endif
