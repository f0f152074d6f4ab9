/*
** wfq.c: weighted-fair CPU scheduler for statement execution across tenants.
**
** THE PROBLEM
**
** Every tenant's statements run in the same engine process on the same cores.
** The kernel schedules threads, not tenants: a tenant with eight busy sessions
** would get eight times the CPU of a tenant with one. This unit puts a second
** scheduler in front of statement execution. A thread may execute SQLite VM
** code only while it holds one of `tokens` CPU slots (default: one per usable
** core), and slots are handed out tenant-fairly:
**
**   * weight: a tenant's virtual time (vtime) advances by the thread CPU time
**     its statements used divided by its weight (cpu.shares-style "shares").
**     A free slot goes to the waiting tenant with the smallest vtime: that is
**     start-time fair queuing (SFQ) with the tenant as the flow and a quantum
**     of CPU as the packet. Over any busy interval each backlogged tenant's
**     CPU is proportional to its weight, to within a quantum per tenant.
**   * min_percent: under contention a tenant keeps min_percent of a core. It
**     is done by raising the tenant's *effective* weight just enough that its
**     weighted share of the slots equals its minimum (water-filling over the
**     active tenants; see refresh_weights()), so SFQ stays the only mechanism.
**   * max_percent: a CPU-ns budget per period (max_percent/100 * period). A
**     tenant that spent its budget is throttled: its threads wait for the next
**     period even if every slot is idle (a cap, not a share). Overrun (a
**     quantum can end past the budget) is carried into the next period, so
**     the long-run average is exact.
**
** Preemption is cooperative. SQLite calls a progress handler every N VM
** instructions; rmt_wfq_should_yield() compares the coarse monotonic clock
** with the end of the thread's quantum (one vDSO read, no lock) and reads
** the thread's preempt flag (below). When the quantum is over it
** measures the thread's CPU time, charges it, and says "yield" if a waiting
** tenant now has a smaller vtime or the tenant's budget is spent; the thread
** then gives its slot back and queues again (rmt_wfq_yield()). A statement
** blocked on a lock (the binding's busy handler, exechooks.c) or on IO
** throttling (iovfs.c, through rmt_wfq_pause/resume) frees its slot meanwhile, so a tenant waiting for a slot while holding a
** RESERVED lock cannot invert priorities.
**
** Wakeup preemption. A quantum is 10 ms (and the coarse clock makes it up to
** one tick longer). A tenant that runs short statements from a few clients
** (point selects: microseconds each) would wait up to a whole quantum for
** every statement when a CPU-bound tenant holds all the slots: its latency
** would grow by orders of magnitude, and since it is rarely *waiting* at the
** instant a quantum ends, it would also get far less than its weighted
** share. So, as CFS does for a waking task, a waiter that finds no free slot
** flags the running thread of the tenant with the largest vtime, if that is
** larger than its own tenant's (preempt_for_locked()). The flagged thread
** takes the slow path at its next progress-handler call (microseconds
** later), is charged, and yields by the usual rule (step 2). A tenant behind
** its share thus gets a slot within one progress interval; one ahead of its
** share waits for a quantum end like before.
**
** Time waiting is split in two. wait_ns counts thread-time waiting for a
** slot while the tenant was NOT throttled: queued behind other tenants, the
** platform's contention. Waiting while over its own max_percent budget is
** the tenant's own cap at work and is reported as throttled_ns (wall time
** with demand) only: each waiter remembers its tenant's throttled clock when
** it starts waiting, and the throttled part of its wait is left out of
** wait_ns when it is granted. (The SLA tracker tells "queued" from
** "throttled" with exactly these two counters.)
**
** DATA LAYOUT
**
**     rmt_wfq (one per engine, one mutex)
**       tokens, free_tokens          slots in total / not held
**       period_start, vclock         current max_percent period; system vtime
**       tenant[0..255]
**         shares/min/max --> weight, eff_weight (after min boost)
**         vtime, budget_used_ns, period_cpu_ns, prev_period_cpu_ns
**         running, waiting, head --> waiter --> waiter (FIFO) --> NULL
**         used_cpu_ns, wait_ns, throttled_ns (statistics)
**       run_head --> waiter --> waiter (running, grant order; run_next)
**
**     thread-local wfq_thread (live API only)
**       depth (nesting), waiter (this thread's queue entry), condvar,
**       cpu_mark (thread CPU at last charge), deadline_ns (quantum end)
**
** Every decision is made by the *_locked functions from explicit times
** (now_ns, cpu_ns), so the simulation API can replay a recorded event
** sequence and tests compare the decisions with the Python twin
** (rustymt/_native/twins/wfq.py), which implements the same integer math.
**
** THE ALGORITHM, in steps
**
**  1. arrive(w, tenant, now): roll the period if it ended (3). If the tenant
**     was idle for longer than one quantum (or never active), clamp its vtime up to
**     vclock - lag (lag = one quantum of its own CPU): idle time earns no
**     credit beyond that, while a tenant pausing briefly between statements
**     keeps its place. Append w to the tenant's FIFO, dispatch (4).
**  2. charge(w, cpu, now): add cpu to the tenant's totals and budget and
**     cpu * VT_UNIT / eff_weight to its vtime. Yield when the tenant is
**     throttled, or when another tenant has an eligible waiter with a
**     strictly smaller vtime.
**  3. roll(now): when now passed the period end, each tenant's
**     budget_used_ns drops by one budget per elapsed period (never below 0:
**     unused budget is not banked), period CPU moves to prev_period, and
**     throttle clocks close at the period boundary.
**  4. dispatch(now): while a slot is free, pick among tenants with waiters
**     that are not throttled the smallest (vtime, tenant); pop its FIFO head,
**     mark it running, signal it. vclock = max(vclock, min vtime of active
**     tenants) so that it never goes back. A waiter left without a slot
**     (arrive, yield) then flags one running thread for preemption (above).
**  5. yield = leave running + arrive at the tail of its tenant's FIFO, in one
**     step; release = charge + leave running + dispatch.
**
** Tenant 0 is the system: it bypasses scheduling altogether.
*/
#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "exechooks.h"
#include "wfq.h"

#define WFQ_VT_UNIT (1LL << 20)     /* vtime += cpu * VT_UNIT / weight */
#define WFQ_WEIGHT_SHIFT 10         /* weight = shares << 10 (precision for boosts) */
#define WFQ_PPM 1000000LL           /* shares of capacity in parts per million */
#define WFQ_MIN_CAP_PPM 900000LL    /* active minimums are scaled to <= 90% */
#define WFQ_MIN_HEADROOM 1025LL     /* aim 2.5% above a minimum (per mille): a
                                       guarantee must not be met only on average */
#define WFQ_MIN_SLICE_NS 100000LL   /* shortest quantum left under a budget */
#define WFQ_COURTESY_EVERY 1        /* progress checks between courtesy sched_yields */
#define WFQ_REBASE_AT (1LL << 61)   /* vclock past this: rebase all vtimes */
#define WFQ_REBASE_KEEP (1LL << 40) /* vtime headroom kept below vclock */

typedef struct wfq_tenant {
  int shares;                /* configured shares, 1..RMT_WFQ_MAX_SHARES */
  int min_percent;           /* guaranteed % of a core under contention; 0 none */
  int max_percent;           /* cap in % of a core per period; 0 none */
  int64_t weight;            /* shares << WFQ_WEIGHT_SHIFT */
  int64_t eff_weight;        /* weight raised for min_percent; valid if !stale */
  int64_t vtime;             /* virtual time: sum of cpu*VT_UNIT/eff_weight */
  int running;               /* threads of this tenant holding a slot */
  int waiting;               /* threads in the FIFO below */
  rmt_wfq_waiter *head;      /* oldest waiter (next to be granted) */
  rmt_wfq_waiter *tail;      /* newest waiter */
  int64_t idle_since;        /* when running+waiting dropped to 0; -1 never */
  int64_t budget_used_ns;    /* CPU toward max_percent this period, + overrun */
  int64_t period_cpu_ns;     /* CPU charged in the current period */
  int64_t prev_period_cpu_ns;/* CPU charged in the previous period */
  int64_t throttled_since;   /* start of throttled-with-waiters; -1 when not */
  int64_t used_cpu_ns;       /* statistics: total CPU charged */
  int64_t wait_ns;           /* statistics: thread-time waiting while not throttled */
  int64_t throttled_ns;      /* statistics: total throttled-with-demand time */
} wfq_tenant;

struct rmt_wfq {
  pthread_mutex_t mu;        /* guards everything below */
  int tokens;                /* slots in total */
  int free_tokens;           /* tokens - sum(running); < 0 after shrinking */
  int64_t period_ns;         /* max_percent accounting period */
  int64_t quantum_ns;        /* slice before a yield check */
  int64_t period_start;      /* start of the current period; -1 before any event */
  int64_t vclock;            /* system virtual time, never decreases */
  int weights_stale;         /* active set or config changed: recompute eff_weight */
  int hi;                    /* 1 + highest tenant slot ever used */
  rmt_wfq_waiter *run_head;  /* running waiters, in grant order (run_next) */
  rmt_wfq_waiter *run_tail;  /* last granted running waiter */
  wfq_tenant t[RMT_WFQ_MAX_TENANTS];
};

/* ---- invariants -------------------------------------------------------- */

#ifndef NDEBUG
static void check_invariants(const rmt_wfq *q) {
  int running = 0;
  for (int i = 0; i < q->hi; i++) {
    const wfq_tenant *t = &q->t[i];
    int n = 0;
    for (const rmt_wfq_waiter *w = t->head; w; w = w->next) {
      assert(w->state == RMT_WFQ_WAITING && w->tenant == i);
      n++;
    }
    assert(n == t->waiting);
    assert(t->running >= 0 && (t->head == NULL) == (t->waiting == 0));
    assert(t->budget_used_ns >= 0 && t->vtime >= 0);
    running += t->running;
  }
  assert(q->free_tokens == q->tokens - running);
  int listed = 0;
  for (const rmt_wfq_waiter *w = q->run_head; w; w = w->run_next) {
    assert(w->state == RMT_WFQ_RUNNING);
    listed++;
  }
  assert(listed == running);
}
#define CHECK(q) check_invariants(q)
#else
#define CHECK(q) ((void)0)
#endif

/* ---- clocks -------------------------------------------------------------- */

static int64_t clock_ns(clockid_t id) {
  struct timespec ts;
  clock_gettime(id, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
int64_t rmt_wfq_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }
int64_t rmt_wfq_thread_cpu_ns(void) { return clock_ns(CLOCK_THREAD_CPUTIME_ID); }

/* ---- create / configure ---------------------------------------------------- */

/* Cores this process may run on (its affinity mask), not all online ones. */
static int usable_cores(void) {
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static void tenant_defaults(wfq_tenant *t) {
  memset(t, 0, sizeof(*t));
  t->shares = RMT_WFQ_DEFAULT_SHARES;
  t->weight = (int64_t)t->shares << WFQ_WEIGHT_SHIFT;
  t->eff_weight = t->weight;
  t->idle_since = -1;
  t->throttled_since = -1;
}

rmt_wfq *rmt_wfq_create(int tokens, int64_t period_ns, int64_t quantum_ns) {
  rmt_wfq *q = calloc(1, sizeof(*q));
  if (!q) return NULL;
  if (pthread_mutex_init(&q->mu, NULL) != 0) {
    free(q);
    return NULL;
  }
  q->tokens = tokens > 0 ? tokens : usable_cores();
  q->free_tokens = q->tokens;
  q->period_ns = period_ns > 0 ? period_ns : 100000000LL;
  q->quantum_ns = quantum_ns > 0 ? quantum_ns : 10000000LL;
  q->period_start = -1;
  q->hi = 1;
  for (int i = 0; i < RMT_WFQ_MAX_TENANTS; i++) tenant_defaults(&q->t[i]);
  return q;
}

void rmt_wfq_destroy(rmt_wfq *q) {
  if (!q) return;
  pthread_mutex_destroy(&q->mu);
  free(q);
}

int rmt_wfq_tokens(const rmt_wfq *q) { return q->tokens; }
int64_t rmt_wfq_quantum_ns(const rmt_wfq *q) { return q->quantum_ns; }

static int valid_tenant(int tenant) { return tenant >= 0 && tenant < RMT_WFQ_MAX_TENANTS; }

static void dispatch_locked(rmt_wfq *q, int64_t now);

static int set_tokens(rmt_wfq *q, int tokens, int64_t now) {
  if (tokens <= 0) return -1;
  pthread_mutex_lock(&q->mu);
  q->free_tokens += tokens - q->tokens;
  q->tokens = tokens;
  q->weights_stale = 1;
  if (q->period_start >= 0) dispatch_locked(q, now);
  CHECK(q);
  pthread_mutex_unlock(&q->mu);
  return 0;
}

int rmt_wfq_set_tokens(rmt_wfq *q, int tokens) { return set_tokens(q, tokens, rmt_wfq_now_ns()); }
int rmt_wfq_sim_set_tokens(rmt_wfq *q, int tokens, int64_t now_ns) { return set_tokens(q, tokens, now_ns); }

int rmt_wfq_configure(rmt_wfq *q, int tenant, int shares, int min_percent, int max_percent) {
  if (!valid_tenant(tenant) || shares < 1 || shares > RMT_WFQ_MAX_SHARES) return -1;
  if (min_percent < 0 || max_percent < 0) return -1;
  if (max_percent > 0 && min_percent > max_percent) return -1;
  pthread_mutex_lock(&q->mu);
  wfq_tenant *t = &q->t[tenant];
  t->shares = shares;
  t->min_percent = min_percent;
  t->max_percent = max_percent;
  t->weight = (int64_t)shares << WFQ_WEIGHT_SHIFT;
  q->weights_stale = 1;
  if (tenant >= q->hi) q->hi = tenant + 1;
  pthread_mutex_unlock(&q->mu);
  return 0;
}

/* ---- the algorithm (all *_locked: q->mu held, times explicit) ---------- */

static int active(const wfq_tenant *t) { return t->running + t->waiting > 0; }

static int64_t budget_ns(const rmt_wfq *q, const wfq_tenant *t) {
  return (int64_t)t->max_percent * q->period_ns / 100;
}

static int throttled(const rmt_wfq *q, const wfq_tenant *t) {
  return t->max_percent > 0 && t->budget_used_ns >= budget_ns(q, t);
}

/* Open or close the tenant's throttle clock: it runs while the tenant is
** over budget and has threads waiting (demand it may not serve). */
static void throttle_clock(rmt_wfq *q, wfq_tenant *t, int64_t now) {
  int on = throttled(q, t) && t->waiting > 0;
  if (on && t->throttled_since < 0) {
    t->throttled_since = now;
  } else if (!on && t->throttled_since >= 0) {
    t->throttled_ns += now - t->throttled_since;
    t->throttled_since = -1;
  }
}

/* The tenant's throttled wall time up to now, the open interval included. */
static int64_t throttled_total(const wfq_tenant *t, int64_t now) {
  return t->throttled_ns + (t->throttled_since >= 0 ? now - t->throttled_since : 0);
}

/* Effective weights: water-filling over the active tenants. Tenant i wants
** m_i = min_percent/(100*tokens) of all slots (ppm; active minimums scaled to
** at most 90% in total). While some unpinned tenant's weighted share of what
** is left (rest) is below its m_i, pin it at m_i. Pinned tenants get the
** weight that gives exactly m_i next to the unpinned ones: m_i * W / rest. */
static void refresh_weights(rmt_wfq *q) {
  int64_t m[RMT_WFQ_MAX_TENANTS];
  char pinned[RMT_WFQ_MAX_TENANTS];
  int64_t sum_m = 0;
  for (int i = 1; i < q->hi; i++) {
    wfq_tenant *t = &q->t[i];
    t->eff_weight = t->weight;
    pinned[i] = 0;
    m[i] = 0;
    if (active(t) && t->min_percent > 0) {
      m[i] = (int64_t)t->min_percent * WFQ_PPM * WFQ_MIN_HEADROOM / (100LL * 1000 * q->tokens);
      if (m[i] > WFQ_PPM) m[i] = WFQ_PPM;
      sum_m += m[i];
    }
  }
  if (sum_m > WFQ_MIN_CAP_PPM) {
    for (int i = 1; i < q->hi; i++) m[i] = m[i] * WFQ_MIN_CAP_PPM / sum_m;
  }
  int64_t rest = WFQ_PPM, W = 0;
  for (int i = 1; i < q->hi; i++) {
    if (active(&q->t[i])) W += q->t[i].weight;
  }
  for (int changed = 1; changed && W > 0;) {
    changed = 0;
    int64_t W_pass = W, rest_pass = rest;
    for (int i = 1; i < q->hi; i++) {
      if (pinned[i] || m[i] == 0) continue;
      if (m[i] * W_pass > q->t[i].weight * rest_pass) {
        pinned[i] = 1;
        changed = 1;
        rest -= m[i];
        W -= q->t[i].weight;
      }
    }
  }
  for (int i = 1; i < q->hi; i++) {
    if (!pinned[i]) continue;
    int64_t e = W > 0 ? m[i] * W / rest : m[i];
    q->t[i].eff_weight = e > 0 ? e : 1;
  }
  q->weights_stale = 0;
}

static void roll_locked(rmt_wfq *q, int64_t now) {
  if (q->period_start < 0) {
    q->period_start = now;
    return;
  }
  if (now < q->period_start + q->period_ns) return;
  int64_t n = (now - q->period_start) / q->period_ns;
  int64_t boundary = q->period_start + q->period_ns;
  for (int i = 1; i < q->hi; i++) {
    wfq_tenant *t = &q->t[i];
    if (t->throttled_since >= 0) {
      t->throttled_ns += boundary - t->throttled_since;
      t->throttled_since = -1;
    }
    int64_t carry = t->budget_used_ns - n * budget_ns(q, t);
    t->budget_used_ns = (t->max_percent > 0 && carry > 0) ? carry : 0;
    t->prev_period_cpu_ns = n == 1 ? t->period_cpu_ns : 0;
    t->period_cpu_ns = 0;
    throttle_clock(q, t, boundary);
  }
  q->period_start += n * q->period_ns;
}

static void rebase_locked(rmt_wfq *q) {
  int64_t base = q->vclock - WFQ_REBASE_KEEP;
  for (int i = 1; i < q->hi; i++) {
    int64_t v = q->t[i].vtime - base;
    q->t[i].vtime = v > 0 ? v : 0;
  }
  q->vclock -= base;
}

static void dispatch_locked(rmt_wfq *q, int64_t now) {
  int have_active = 0;
  int64_t min_active = 0;
  for (int i = 1; i < q->hi; i++) {
    const wfq_tenant *t = &q->t[i];
    if (active(t) && (!have_active || t->vtime < min_active)) {
      min_active = t->vtime;
      have_active = 1;
    }
  }
  if (have_active && min_active > q->vclock) q->vclock = min_active;
  if (q->vclock > WFQ_REBASE_AT) rebase_locked(q);
  while (q->free_tokens > 0) {
    int best = -1;
    for (int i = 1; i < q->hi; i++) {
      const wfq_tenant *t = &q->t[i];
      if (t->waiting == 0 || throttled(q, t)) continue;
      if (best < 0 || t->vtime < q->t[best].vtime) best = i;
    }
    if (best < 0) break;
    wfq_tenant *t = &q->t[best];
    rmt_wfq_waiter *w = t->head;
    t->head = w->next;
    if (!t->head) t->tail = NULL;
    w->next = NULL;
    t->waiting--;
    t->running++;
    q->free_tokens--;
    int64_t throttled_part = throttled_total(t, now) - w->throttled_mark;
    assert(throttled_part >= 0 && throttled_part <= now - w->wait_start_ns);
    t->wait_ns += now - w->wait_start_ns - throttled_part;
    w->state = RMT_WFQ_RUNNING;
    __atomic_store_n(&w->preempt, 0, __ATOMIC_RELAXED);
    w->run_next = NULL;
    if (q->run_tail) q->run_tail->run_next = w; else q->run_head = w;
    q->run_tail = w;
    if (w->cond) pthread_cond_signal((pthread_cond_t *)w->cond);
  }
}

static void enqueue_locked(rmt_wfq *q, rmt_wfq_waiter *w, int tenant, int64_t now) {
  wfq_tenant *t = &q->t[tenant];
  if (!active(t)) {
    q->weights_stale = 1;
    /* never active (idle_since < 0) counts as idle for ever: a tenant's
    ** first statement must not start with the credit of all the CPU the
    ** others used before it existed */
    if (t->idle_since < 0 || now - t->idle_since > q->quantum_ns) {
      int64_t lag = q->quantum_ns * WFQ_VT_UNIT / t->weight;
      if (t->vtime < q->vclock - lag) t->vtime = q->vclock - lag;
    }
  }
  w->tenant = tenant;
  w->state = RMT_WFQ_WAITING;
  w->wait_start_ns = now;
  w->throttled_mark = throttled_total(t, now);
  w->next = NULL;
  if (t->tail) t->tail->next = w; else t->head = w;
  t->tail = w;
  t->waiting++;
  if (tenant >= q->hi) q->hi = tenant + 1;
  throttle_clock(q, t, now);
}

/* Remove a running waiter from the slots (yield and release share this). */
static void leave_locked(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now) {
  wfq_tenant *t = &q->t[w->tenant];
  assert(w->state == RMT_WFQ_RUNNING && t->running > 0);
  rmt_wfq_waiter *prev = NULL;
  for (rmt_wfq_waiter *r = q->run_head; r != w; r = r->run_next) prev = r;
  if (prev) prev->run_next = w->run_next; else q->run_head = w->run_next;
  if (q->run_tail == w) q->run_tail = prev;
  w->run_next = NULL;
  __atomic_store_n(&w->preempt, 0, __ATOMIC_RELAXED);
  t->running--;
  q->free_tokens++;
  w->state = RMT_WFQ_IDLE;
  if (!active(t)) {
    t->idle_since = now;
    q->weights_stale = 1;
  }
}

/* Step 2: returns 1 when the running waiter should give its slot back. */
static int charge_locked(rmt_wfq *q, rmt_wfq_waiter *w, int64_t cpu_ns, int64_t now) {
  wfq_tenant *t = &q->t[w->tenant];
  assert(w->state == RMT_WFQ_RUNNING && cpu_ns >= 0);
  __atomic_store_n(&w->preempt, 0, __ATOMIC_RELAXED); /* this is the check it asked for */
  if (q->weights_stale) refresh_weights(q);
  t->used_cpu_ns += cpu_ns;
  t->period_cpu_ns += cpu_ns;
  t->budget_used_ns += cpu_ns;
  int64_t e = t->eff_weight;
  t->vtime += (cpu_ns / e) * WFQ_VT_UNIT + (cpu_ns % e) * WFQ_VT_UNIT / e;
  throttle_clock(q, t, now);
  if (throttled(q, t)) return 1;
  for (int i = 1; i < q->hi; i++) {
    const wfq_tenant *o = &q->t[i];
    if (i != w->tenant && o->waiting > 0 && !throttled(q, o) && o->vtime < t->vtime) return 1;
  }
  return 0;
}

/* Wakeup preemption (see the top): `tenant` has a waiter and no slot was
** free. Flag the first-granted running thread among those of the tenant with
** the largest vtime, if that vtime is larger than the waiter's tenant's and
** it is not flagged yet. One flag per waiter left waiting. */
static void preempt_for_locked(rmt_wfq *q, int tenant) {
  const wfq_tenant *t = &q->t[tenant];
  if (throttled(q, t)) return;
  rmt_wfq_waiter *victim = NULL;
  int64_t worst = t->vtime;
  for (rmt_wfq_waiter *r = q->run_head; r; r = r->run_next) {
    if (r->tenant == tenant || r->preempt) continue;
    if (q->t[r->tenant].vtime > worst) {
      worst = q->t[r->tenant].vtime;
      victim = r;
    }
  }
  if (victim) __atomic_store_n(&victim->preempt, 1, __ATOMIC_RELAXED);
}

/* Dispatch, then preempt on behalf of w if it is still waiting. */
static void dispatch_for_locked(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now) {
  dispatch_locked(q, now);
  if (w->state == RMT_WFQ_WAITING) preempt_for_locked(q, w->tenant);
}

/* CPU the thread may use before the next check: a quantum, or what is left
** of its budget. */
static int64_t slice_locked(const rmt_wfq *q, int tenant) {
  const wfq_tenant *t = &q->t[tenant];
  int64_t slice = q->quantum_ns;
  if (t->max_percent > 0) {
    int64_t left = budget_ns(q, t) - t->budget_used_ns;
    if (left < slice) slice = left > WFQ_MIN_SLICE_NS ? left : WFQ_MIN_SLICE_NS;
  }
  return slice;
}

/* Kernel courtesy. The slots decide whose *statements* run, but a tenant's
** protocol work (the wire session thread parsing and answering) and the
** clients co-located on the host are ordinary threads that the kernel runs
** next to ours. With every core held by a CPU-bound tenant's statement
** threads, a waking thread of a light tenant waits for the kernel to preempt
** one of them: under EEVDF's run-to-parity that is up to a whole kernel slice
** (~3 ms on 2 cores), per wakeup, several wakeups per query -- the slot
** scheduler's wakeup preemption cannot help, the light tenant is not waiting
** for a slot yet. So a thread whose tenant is ahead of another tenant that
** was active within the last quantum calls sched_yield() every few progress
** checks (tens of microseconds of VM work): a no-op when nothing else is
** runnable, otherwise the woken thread runs now. Lowering the thread's
** priority instead was tried and inverts on the page pool's mutex. */
static int courteous_locked(const rmt_wfq *q, int tenant, int64_t now) {
  const wfq_tenant *t = &q->t[tenant];
  for (int i = 1; i < q->hi; i++) {
    const wfq_tenant *o = &q->t[i];
    if (i == tenant || o->vtime >= t->vtime) continue;
    if (active(o) || (o->idle_since >= 0 && now - o->idle_since <= q->quantum_ns)) return 1;
  }
  return 0;
}

/* ---- simulation API ------------------------------------------------------ */

void rmt_wfq_sim_arrive(rmt_wfq *q, rmt_wfq_waiter *w, int tenant, int64_t now_ns) {
  assert(valid_tenant(tenant) && tenant != 0 && w->state == RMT_WFQ_IDLE);
  pthread_mutex_lock(&q->mu);
  roll_locked(q, now_ns);
  enqueue_locked(q, w, tenant, now_ns);
  dispatch_for_locked(q, w, now_ns);
  CHECK(q);
  pthread_mutex_unlock(&q->mu);
}

int rmt_wfq_sim_charge(rmt_wfq *q, rmt_wfq_waiter *w, int64_t cpu_ns, int64_t now_ns) {
  pthread_mutex_lock(&q->mu);
  roll_locked(q, now_ns);
  int r = charge_locked(q, w, cpu_ns, now_ns);
  dispatch_locked(q, now_ns); /* a roll may have ended someone's throttle */
  CHECK(q);
  pthread_mutex_unlock(&q->mu);
  return r;
}

static void yield_locked(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now) {
  int tenant = w->tenant;
  roll_locked(q, now);
  leave_locked(q, w, now);
  enqueue_locked(q, w, tenant, now);
  dispatch_for_locked(q, w, now);
  throttle_clock(q, &q->t[tenant], now);
  CHECK(q);
}

void rmt_wfq_sim_yield(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns) {
  pthread_mutex_lock(&q->mu);
  yield_locked(q, w, now_ns);
  pthread_mutex_unlock(&q->mu);
}

static void release_locked(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now) {
  roll_locked(q, now);
  leave_locked(q, w, now);
  dispatch_locked(q, now);
  CHECK(q);
}

void rmt_wfq_sim_release(rmt_wfq *q, rmt_wfq_waiter *w, int64_t now_ns) {
  pthread_mutex_lock(&q->mu);
  release_locked(q, w, now_ns);
  pthread_mutex_unlock(&q->mu);
}

static void tick_locked(rmt_wfq *q, int64_t now) {
  roll_locked(q, now);
  dispatch_locked(q, now);
  for (int i = 1; i < q->hi; i++) throttle_clock(q, &q->t[i], now);
  CHECK(q);
}

void rmt_wfq_sim_tick(rmt_wfq *q, int64_t now_ns) {
  pthread_mutex_lock(&q->mu);
  tick_locked(q, now_ns);
  pthread_mutex_unlock(&q->mu);
}

int rmt_wfq_sim_courteous(rmt_wfq *q, int tenant, int64_t now_ns) {
  if (!valid_tenant(tenant)) return 0;
  pthread_mutex_lock(&q->mu);
  int r = courteous_locked(q, tenant, now_ns);
  pthread_mutex_unlock(&q->mu);
  return r;
}

int rmt_wfq_get_stats(rmt_wfq *q, int tenant, int64_t now_ns, rmt_wfq_stats *out) {
  if (!valid_tenant(tenant)) return -1;
  if (now_ns < 0) now_ns = rmt_wfq_now_ns();
  pthread_mutex_lock(&q->mu);
  if (q->period_start >= 0) tick_locked(q, now_ns);
  if (q->weights_stale) refresh_weights(q);
  const wfq_tenant *t = &q->t[tenant];
  out->shares = t->shares;
  out->min_percent = t->min_percent;
  out->max_percent = t->max_percent;
  out->used_cpu_ns = t->used_cpu_ns;
  out->throttled_ns = t->throttled_ns;
  if (t->throttled_since >= 0) out->throttled_ns += now_ns - t->throttled_since;
  out->wait_ns = t->wait_ns;
  out->running = t->running;
  out->waiting = t->waiting;
  out->vtime = t->vtime;
  out->effective_weight = t->eff_weight;
  int64_t denom = out->throttled_ns + out->used_cpu_ns;
  out->throttle_ratio = denom > 0 ? (double)out->throttled_ns / (double)denom : 0.0;
  /* Last period's CPU, weighted by how much of it the window still covers,
  ** plus this period's: a sliding window one period long. */
  double elapsed = q->period_start >= 0 ? (double)(now_ns - q->period_start) : 0.0;
  double p = (double)q->period_ns;
  if (elapsed > p) elapsed = p;
  double window_cpu = (double)t->prev_period_cpu_ns * (p - elapsed) / p + (double)t->period_cpu_ns;
  out->allocation_percent = 100.0 * window_cpu / p;
  pthread_mutex_unlock(&q->mu);
  return 0;
}

/* ---- live API ------------------------------------------------------------ */

typedef struct wfq_thread {
  rmt_wfq *q;               /* scheduler of the outermost acquire; NULL: bypass */
  int depth;                /* acquire nesting on this thread */
  int paused;               /* slot freed by rmt_wfq_pause() */
  rmt_wfq_waiter w;         /* this thread's queue entry */
  pthread_cond_t cond;      /* signalled when w is granted */
  int cond_ready;           /* cond initialised */
  int64_t cpu_mark;         /* thread CPU time already charged up to */
  int64_t deadline_ns;      /* monotonic end of the current slice */
  int courteous;            /* another tenant behind this one's vtime was
                               active within a quantum: give the core back to
                               the kernel every WFQ_COURTESY_EVERY checks */
  int courtesy_countdown;   /* progress checks left until the next sched_yield */
} wfq_thread;

static __thread wfq_thread tls;
static rmt_wfq *engine_q;

/* Adapters from the binding's per-connection hooks (exechooks.h) to this
** thread's slot; the tenant argument is the connection's, already known. */
static void hook_acquire(int tenant) { rmt_wfq_acquire(rmt_wfq_engine(), tenant); }
static void hook_release(int tenant) {
  (void)tenant;
  rmt_wfq_release();
}
static int hook_should_yield(int tenant) {
  (void)tenant;
  return rmt_wfq_should_yield();
}

void rmt_wfq_set_engine(rmt_wfq *q, int progress_ops) {
  __atomic_store_n(&engine_q, q, __ATOMIC_RELEASE);
  if (q) {
    rmt_exec_hooks h = {hook_acquire, hook_release, hook_should_yield, progress_ops};
    rmt_exec_set_hooks(&h);
  } else {
    rmt_exec_set_hooks(NULL);
  }
}
rmt_wfq *rmt_wfq_engine(void) { return __atomic_load_n(&engine_q, __ATOMIC_ACQUIRE); }

/* Wait until granted; wakes at every period boundary to roll the period,
** since a throttled tenant is released by time alone. */
static void wait_granted_locked(rmt_wfq *q) {
  while (tls.w.state != RMT_WFQ_RUNNING) {
    int64_t wake = q->period_start + q->period_ns;
    struct timespec ts;
    ts.tv_sec = (time_t)(wake / 1000000000LL);
    ts.tv_nsec = (long)(wake % 1000000000LL);
    int rc = pthread_cond_timedwait(&tls.cond, &q->mu, &ts);
    if (rc == ETIMEDOUT || rmt_wfq_now_ns() >= wake) tick_locked(q, rmt_wfq_now_ns());
  }
}

/* The quantum is timed with the coarse monotonic clock (jiffies, 1-4 ms
** resolution; ~40 ns to read here against ~200 ns for CLOCK_MONOTONIC and
** ~2 us for the thread CPU clock, and it is read every progress_ops VM
** instructions). Slices thus end up to one tick late; fairness does not
** suffer because what is charged is the thread CPU time measured on the slow
** path, and budget overrun is carried into the next period. */
static int64_t coarse_now_ns(void) { return clock_ns(CLOCK_MONOTONIC_COARSE); }

static void start_slice_locked(rmt_wfq *q) {
  tls.deadline_ns = coarse_now_ns() + slice_locked(q, tls.w.tenant);
  tls.courteous = courteous_locked(q, tls.w.tenant, rmt_wfq_now_ns());
  tls.courtesy_countdown = WFQ_COURTESY_EVERY;
}

static void take_slot(rmt_wfq *q, int tenant) {
  if (!tls.cond_ready) {
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&tls.cond, &attr);
    pthread_condattr_destroy(&attr);
    tls.cond_ready = 1;
  }
  tls.w.cond = &tls.cond;
  pthread_mutex_lock(&q->mu);
  int64_t now = rmt_wfq_now_ns();
  roll_locked(q, now);
  enqueue_locked(q, &tls.w, tenant, now);
  dispatch_for_locked(q, &tls.w, now);
  CHECK(q);
  wait_granted_locked(q);
  start_slice_locked(q);
  pthread_mutex_unlock(&q->mu);
  tls.cpu_mark = rmt_wfq_thread_cpu_ns();
}

/* CPU used since the last charge, and move the mark. */
static int64_t cpu_delta(void) {
  int64_t now = rmt_wfq_thread_cpu_ns();
  int64_t d = now - tls.cpu_mark;
  tls.cpu_mark = now;
  return d > 0 ? d : 0;
}

void rmt_wfq_acquire(rmt_wfq *q, int tenant) {
  if (tls.depth++ > 0) return;
  tls.paused = 0;
  tls.q = (q && tenant > 0 && valid_tenant(tenant)) ? q : NULL;
  if (tls.q) take_slot(q, tenant);
}

void rmt_wfq_release(void) {
  assert(tls.depth > 0);
  if (tls.depth <= 0 || --tls.depth > 0) return;
  rmt_wfq *q = tls.q;
  tls.q = NULL;
  if (!q || tls.paused) return;
  int64_t cpu = cpu_delta();
  pthread_mutex_lock(&q->mu);
  int64_t now = rmt_wfq_now_ns();
  roll_locked(q, now);
  charge_locked(q, &tls.w, cpu, now);
  release_locked(q, &tls.w, now);
  pthread_mutex_unlock(&q->mu);
}

int rmt_wfq_should_yield(void) {
  if (!tls.q || tls.paused) return 0;
  if (coarse_now_ns() < tls.deadline_ns && !__atomic_load_n(&tls.w.preempt, __ATOMIC_RELAXED)) {
    if (tls.courteous && --tls.courtesy_countdown <= 0) {
      tls.courtesy_countdown = WFQ_COURTESY_EVERY;
      sched_yield(); /* the slot stays held: this is about the kernel's CPU */
    }
    return 0; /* the fast path */
  }
  int64_t cpu = cpu_delta();
  rmt_wfq *q = tls.q;
  int64_t now = rmt_wfq_now_ns();
  pthread_mutex_lock(&q->mu);
  roll_locked(q, now);
  int r = charge_locked(q, &tls.w, cpu, now);
  dispatch_locked(q, now);
  if (!r) start_slice_locked(q);
  pthread_mutex_unlock(&q->mu);
  return r;
}

void rmt_wfq_yield(void) {
  if (!tls.q || tls.paused) return;
  rmt_wfq *q = tls.q;
  int64_t cpu = cpu_delta();
  pthread_mutex_lock(&q->mu);
  int64_t now = rmt_wfq_now_ns();
  roll_locked(q, now); /* before charging: throttle clocks must not open past a boundary */
  charge_locked(q, &tls.w, cpu, now);
  yield_locked(q, &tls.w, now);
  wait_granted_locked(q);
  start_slice_locked(q);
  pthread_mutex_unlock(&q->mu);
  tls.cpu_mark = rmt_wfq_thread_cpu_ns();
}

int rmt_wfq_progress_handler(void *unused) {
  (void)unused;
  if (rmt_wfq_should_yield()) rmt_wfq_yield();
  return 0;
}

void rmt_wfq_pause(void) {
  if (!tls.q || tls.paused) return;
  rmt_wfq *q = tls.q;
  int64_t cpu = cpu_delta();
  pthread_mutex_lock(&q->mu);
  int64_t now = rmt_wfq_now_ns();
  roll_locked(q, now);
  charge_locked(q, &tls.w, cpu, now);
  release_locked(q, &tls.w, now);
  pthread_mutex_unlock(&q->mu);
  tls.paused = 1;
}

void rmt_wfq_resume(void) {
  if (!tls.q || !tls.paused) return;
  tls.paused = 0;
  take_slot(tls.q, tls.w.tenant);
}

int rmt_wfq_current_tenant(void) {
  return (tls.q && tls.depth > 0 && !tls.paused) ? tls.w.tenant : -1;
}

uint64_t rmt_wfq_run_synthetic(rmt_wfq *q, int tenant, int64_t iterations, int check_every) {
  uint64_t x = (uint64_t)tenant + 1;
  rmt_wfq_acquire(q, tenant);
  int countdown = check_every;
  for (int64_t i = 0; i < iterations; i++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    x ^= x >> 29;
    if (check_every > 0 && --countdown == 0) {
      countdown = check_every;
      rmt_wfq_progress_handler(NULL);
    }
  }
  rmt_wfq_release();
  return x;
}
