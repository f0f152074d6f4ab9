/*
** wfq.h: weighted-fair CPU scheduler for statement execution across tenants.
**
** A statement runs only while its thread holds one of `tokens` CPU slots.
** Slots go to the waiting tenant with the smallest virtual time (start-time
** fair queuing); a tenant's virtual time advances by the thread CPU time its
** statements used divided by its effective weight. max_percent caps a tenant
** at a CPU budget per period even when it is alone; min_percent raises its
** weight under contention so that it keeps that share. Long statements give
** their slot back cooperatively from SQLite's progress handler.
**
** Percentages are of one core: 100 = one core, 200 = two cores.
** Tenant 0 is the system: it bypasses the scheduler (never waits, never
** counted). Blocking waits inside a statement (busy locks: exechooks.c;
** throttled IO: iovfs.c) free the slot meanwhile. See wfq.c for the algorithm and its invariants.
*/
#ifndef RUSTYMT_WFQ_H
#define RUSTYMT_WFQ_H

#include <stdint.h>

#include "tenant.h"

#define RMT_WFQ_MAX_TENANTS RMT_MAX_TENANTS /* tenant slots, shared by all units */
#define RMT_WFQ_DEFAULT_SHARES 1024  /* weight of an unconfigured tenant */
#define RMT_WFQ_MAX_SHARES 262144    /* same range as cgroup cpu.shares */

typedef struct rmt_wfq rmt_wfq;

/* One thread's place in the scheduler: waiting for, or holding, a slot.
** The live API keeps one per thread (thread-local); the simulation API lets
** the caller own any number of them (one per simulated thread). */
typedef struct rmt_wfq_waiter rmt_wfq_waiter;
struct rmt_wfq_waiter {
  int tenant;              /* tenant slot this thread runs for */
  int state;               /* RMT_WFQ_IDLE / _WAITING / _RUNNING */
  int64_t wait_start_ns;   /* monotonic time it started waiting */
  int64_t throttled_mark;  /* its tenant's throttled wall time when it started waiting */
  int preempt;             /* running: a tenant with a smaller vtime is waiting,
                              check now rather than at the end of the quantum */
  rmt_wfq_waiter *next;    /* next waiter of the same tenant (FIFO) */
  rmt_wfq_waiter *run_next;/* next running waiter, in grant order */
  void *cond;              /* pthread_cond_t to signal on grant, or NULL */
};
#define RMT_WFQ_IDLE 0
#define RMT_WFQ_WAITING 1
#define RMT_WFQ_RUNNING 2

/* Per-tenant statistics (the spec's CPU isolation fields plus wait_ns). */
typedef struct rmt_wfq_stats {
  int shares;                  /* configured shares (weight) */
  int min_percent;             /* guaranteed percent of a core under contention */
  int max_percent;             /* cap in percent of a core; 0 = none */
  int64_t used_cpu_ns;         /* thread CPU charged to the tenant, total */
  int64_t throttled_ns;        /* wall time with demand but over max_percent */
  int64_t wait_ns;             /* thread-time spent waiting for a slot while NOT
                                  throttled (queued behind others), total */
  double throttle_ratio;       /* throttled_ns / (throttled_ns + used_cpu_ns) */
  double allocation_percent;   /* CPU delivered over the last period, % of a core */
  int running;                 /* threads holding a slot now */
  int waiting;                 /* threads waiting for a slot now */
  int64_t vtime;               /* virtual time (diagnostic) */
  int64_t effective_weight;    /* weight after the min_percent boost */
} rmt_wfq_stats;

/* Create a scheduler with `tokens` slots (<= 0: usable cores), a max_percent
** period and a quantum (<= 0: 100 ms and 10 ms). NULL on bad input/OOM. */
rmt_wfq *rmt_wfq_create(int tokens, int64_t period_ns, int64_t quantum_ns);
/* Destroy; no thread may hold or wait for a slot. */
void rmt_wfq_destroy(rmt_wfq *q);
int rmt_wfq_tokens(const rmt_wfq *q);
int64_t rmt_wfq_quantum_ns(const rmt_wfq *q);
/* Change the number of slots live (> 0). Returns 0, or -1 on bad input. */
int rmt_wfq_set_tokens(rmt_wfq *q, int tokens);

/* Configure a tenant: shares 1..RMT_WFQ_MAX_SHARES; min_percent and
** max_percent in % of one core, >= 0 (0 = none), min <= max when max is set.
** Returns 0, or -1 on bad input. Takes effect live. */
int rmt_wfq_configure(rmt_wfq *q, int tenant, int shares, int min_percent, int max_percent);
/* Statistics of one tenant at monotonic time now_ns (< 0: now). */
int rmt_wfq_get_stats(rmt_wfq *q, int tenant, int64_t now_ns, rmt_wfq_stats *out);

/* ---- Live API: blocking, per calling thread -------------------------------
** Call with the GIL released. acquire/release nest per thread: only the
** outermost pair takes and frees a slot. */
void rmt_wfq_acquire(rmt_wfq *q, int tenant);
void rmt_wfq_release(void);
/* Cheap check for SQLite's progress handler: 1 when this thread's quantum is
** over and another tenant should run (or its own budget is spent). */
int rmt_wfq_should_yield(void);
/* Give the slot back and wait to be rescheduled (after should_yield). */
void rmt_wfq_yield(void);
/* sqlite3_progress_handler callback: should_yield + yield; always returns 0
** (never interrupts the statement). The argument is unused. */
int rmt_wfq_progress_handler(void *unused);
/* Free this thread's slot around a blocking wait (busy lock, throttled IO)
** and take it back after; no-ops when the thread holds no slot. */
void rmt_wfq_pause(void);
void rmt_wfq_resume(void);
/* Tenant this thread holds a slot for, or -1. */
int rmt_wfq_current_tenant(void);

/* The engine's scheduler (NULL: statements are not scheduled). Setting it
** also installs the execution hooks (exechooks.h): the binding then acquires
** around every batch of steps, its progress handler calls should_yield every
** progress_ops VM instructions (0: no progress handler), and its busy handler
** frees the slot while sleeping. Set it before connections open: the progress
** handler is attached at open. A scheduler once set must never be destroyed
** (threads may still hold its slots). */
void rmt_wfq_set_engine(rmt_wfq *q, int progress_ops);
rmt_wfq *rmt_wfq_engine(void);

/* A synthetic CPU-bound statement: acquire, spin `iterations` of integer
** work calling the progress handler every `check_every`, release. Returns a
** checksum so the loop is not optimized away. For tests and benchmarks. */
uint64_t rmt_wfq_run_synthetic(rmt_wfq *q, int tenant, int64_t iterations, int check_every);

/* ---- Simulation API: explicit time, never blocks --------------------------
** The same decisions as the live API for a recorded event sequence; used by
** tests against the Python twin. A grant sets w->state to RMT_WFQ_RUNNING. */
void rmt_wfq_sim_arrive(rmt_wfq *q, rmt_wfq_waiter *w, int tenant, int64_t now_ns);
/* Charge cpu_ns to a running waiter; returns 1 when it should yield. */
int rmt_wfq_sim_charge(rmt_wfq *q, rmt_wfq_waiter *w, int64_t cpu_ns, int64_t now_ns);
/* Running waiter gives its slot back and waits again (may be re-granted). */
void rmt_wfq_sim_yield(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns);
/* Running waiter leaves (statement done). */
void rmt_wfq_sim_release(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns);
/* rmt_wfq_set_tokens at a given time. */
int rmt_wfq_sim_set_tokens(rmt_wfq *q, int tokens, int64_t now_ns);
/* Kernel courtesy (wfq.c): 1 when a running thread of `tenant` should give
** the core back to the kernel at every progress check -- another tenant with
** a smaller vtime was active within the last quantum. */
int rmt_wfq_sim_courteous(rmt_wfq *q, int tenant, int64_t now_ns);
/* Time passes: roll periods, grant slots to tenants whose throttle ended. */
void rmt_wfq_sim_tick(rmt_wfq *q, int64_t now_ns);

/* Clocks used by the live API (exposed for tests). */
int64_t rmt_wfq_now_ns(void);
int64_t rmt_wfq_thread_cpu_ns(void);

#endif
