/*
** tenant.c: the thread-local current tenant (see tenant.h).
*/
#include "tenant.h"

/* __thread is GCC's spelling of C11 _Thread_local, accepted in -std=c99. */
static __thread int current_tenant = RMT_SYSTEM_TENANT;

void rmt_tenant_set_current(int tenant) {
    current_tenant = RMT_TENANT_VALID(tenant) ? tenant : RMT_SYSTEM_TENANT;
}

int rmt_tenant_current(void) {
    return current_tenant;
}
