/* wfq: decisions on simulated time (weights, min, max, idle credit, token
** changes, random sequences checked by the invariants), then the live API
** with real threads (nesting, pause/resume, busy wait, fairness). */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wfq.h"

#define MS 1000000LL

/* A discrete-time simulation: `threads[i]` runs for tenant tenant_of[i] and
** is always busy; every 1 ms a running thread burns 1 ms of CPU, and after a
** quantum it is charged and yields if told to. */
typedef struct sim {
  rmt_wfq *q;
  int n;
  rmt_wfq_waiter w[16];
  int tenant_of[16];
  int64_t burned[16];
} sim;

static void sim_run(sim *s, int64_t start, int64_t duration) {
  int64_t quantum = rmt_wfq_quantum_ns(s->q);
  for (int i = 0; i < s->n; i++) {
    if (s->w[i].state == RMT_WFQ_IDLE) rmt_wfq_sim_arrive(s->q, &s->w[i], s->tenant_of[i], start);
  }
  for (int64_t now = start + MS; now <= start + duration; now += MS) {
    rmt_wfq_sim_tick(s->q, now);
    for (int i = 0; i < s->n; i++) {
      if (s->w[i].state != RMT_WFQ_RUNNING) continue;
      s->burned[i] += MS;
      if (s->burned[i] >= quantum) {
        int y = rmt_wfq_sim_charge(s->q, &s->w[i], s->burned[i], now);
        s->burned[i] = 0;
        if (y) rmt_wfq_sim_yield(s->q, &s->w[i], now);
      }
    }
  }
}

static int64_t used(rmt_wfq *q, int tenant, int64_t now) {
  rmt_wfq_stats st;
  assert(rmt_wfq_get_stats(q, tenant, now, &st) == 0);
  return st.used_cpu_ns;
}

static void test_weights(int tokens, const int *shares, int ntenants, int threads_each) {
  sim s;
  memset(&s, 0, sizeof(s));
  s.q = rmt_wfq_create(tokens, 100 * MS, 10 * MS);
  int64_t total_w = 0;
  for (int t = 1; t <= ntenants; t++) {
    assert(rmt_wfq_configure(s.q, t, shares[t - 1], 0, 0) == 0);
    total_w += shares[t - 1];
    for (int k = 0; k < threads_each; k++) s.tenant_of[s.n++] = t;
  }
  sim_run(&s, 1000 * MS, 20000 * MS);
  int64_t total = 0;
  for (int t = 1; t <= ntenants; t++) total += used(s.q, t, 21000 * MS);
  for (int t = 1; t <= ntenants; t++) {
    double share = (double)used(s.q, t, 21000 * MS) / (double)total;
    double want = (double)shares[t - 1] / (double)total_w;
    printf("  tokens %d tenant %d shares %d: %.4f (want %.4f)\n", tokens, t, shares[t - 1], share, want);
    assert(share > want * 0.97 && share < want * 1.03);
  }
  rmt_wfq_destroy(s.q);
}

static void test_max_percent_alone(void) {
  sim s;
  memset(&s, 0, sizeof(s));
  s.q = rmt_wfq_create(2, 100 * MS, 10 * MS);
  assert(rmt_wfq_configure(s.q, 1, 1024, 0, 50) == 0);
  s.n = 2;
  s.tenant_of[0] = s.tenant_of[1] = 1;
  sim_run(&s, 0, 10000 * MS);
  rmt_wfq_stats st;
  rmt_wfq_get_stats(s.q, 1, 10000 * MS, &st);
  double pct = 100.0 * (double)st.used_cpu_ns / (double)(10000 * MS);
  printf("  max 50 alone: %.2f%% of a core, throttled %.2fs, ratio %.3f\n", pct,
         (double)st.throttled_ns / 1e9, st.throttle_ratio);
  assert(pct > 48.5 && pct < 51.5);
  assert(st.throttled_ns > 4000 * MS && st.throttle_ratio > 0.5);
  rmt_wfq_destroy(s.q);
}

static void test_min_percent(void) {
  sim s;
  memset(&s, 0, sizeof(s));
  s.q = rmt_wfq_create(2, 100 * MS, 10 * MS);
  assert(rmt_wfq_configure(s.q, 1, 100, 40, 0) == 0);
  assert(rmt_wfq_configure(s.q, 2, 1000, 0, 0) == 0);
  s.n = 4;
  s.tenant_of[0] = s.tenant_of[1] = 1;
  s.tenant_of[2] = s.tenant_of[3] = 2;
  sim_run(&s, 0, 10000 * MS);
  double a = (double)used(s.q, 1, 10000 * MS), b = (double)used(s.q, 2, 10000 * MS);
  double pct = 100.0 * a / (a + b) * 2; /* % of one core of the 2 delivered */
  printf("  min 40 weight 1 vs weight 10: %.2f%% of a core\n", pct);
  assert(pct >= 39.0 && pct < 44.0);
  rmt_wfq_destroy(s.q);
}

/* A tenant idle for a long time does not come back with a long credit. */
static void test_idle_credit(void) {
  rmt_wfq *q = rmt_wfq_create(1, 100 * MS, 10 * MS);
  rmt_wfq_waiter a = {0}, b = {0};
  rmt_wfq_sim_arrive(q, &a, 1, 0);
  rmt_wfq_sim_release(q, &a, 0);
  rmt_wfq_sim_arrive(q, &b, 2, MS);
  for (int64_t t = 1; t <= 1000; t++) rmt_wfq_sim_charge(q, &b, MS, t * MS + MS);
  /* tenant 1 returns after 1 s idle: it may run at most ~one quantum before b */
  rmt_wfq_sim_arrive(q, &a, 1, 1002 * MS);
  assert(a.state == RMT_WFQ_WAITING);
  int turns_of_a = 0;
  for (int k = 0; k < 10; k++) {
    int64_t now = (1003 + 10 * k) * MS;
    rmt_wfq_waiter *run = a.state == RMT_WFQ_RUNNING ? &a : &b;
    if (run == &a) turns_of_a++;
    if (rmt_wfq_sim_charge(q, run, 10 * MS, now)) rmt_wfq_sim_yield(q, run, now);
  }
  printf("  idle tenant back after 1 s: %d of 10 quanta\n", turns_of_a);
  assert(turns_of_a >= 4 && turns_of_a <= 7);
  rmt_wfq_destroy(q);
}

/* Random event sequences: the invariants (asserted inside every call) hold. */
static void test_random(void) {
  srand(7);
  for (int round = 0; round < 200; round++) {
    rmt_wfq *q = rmt_wfq_create(1 + rand() % 3, 50 * MS, 5 * MS);
    for (int t = 1; t <= 4; t++) rmt_wfq_configure(q, t, 1 + rand() % 4000, rand() % 3 ? 0 : rand() % 60, rand() % 3 ? 0 : 60 + rand() % 100);
    rmt_wfq_waiter w[8];
    memset(w, 0, sizeof(w));
    int64_t now = 0;
    for (int step = 0; step < 400; step++) {
      now += rand() % (3 * MS);
      rmt_wfq_waiter *x = &w[rand() % 8];
      switch (x->state) {
        case RMT_WFQ_IDLE: rmt_wfq_sim_arrive(q, x, 1 + rand() % 4, now); break;
        case RMT_WFQ_WAITING: rmt_wfq_sim_tick(q, now); break;
        default:
          if (rmt_wfq_sim_charge(q, x, rand() % (8 * MS), now)) rmt_wfq_sim_yield(q, x, now);
          else if (rand() % 3 == 0) rmt_wfq_sim_release(q, x, now);
      }
      if (step % 50 == 0) rmt_wfq_sim_set_tokens(q, 1 + rand() % 3, now);
    }
    for (int i = 0; i < 8; i++) {
      if (w[i].state == RMT_WFQ_RUNNING) rmt_wfq_sim_release(q, &w[i], now);
    }
    rmt_wfq_destroy(q);
  }
}

static void test_config_validation(void) {
  rmt_wfq *q = rmt_wfq_create(2, 0, 0);
  assert(rmt_wfq_configure(q, -1, 1024, 0, 0) == -1);
  assert(rmt_wfq_configure(q, RMT_WFQ_MAX_TENANTS, 1024, 0, 0) == -1);
  assert(rmt_wfq_configure(q, 1, 0, 0, 0) == -1);
  assert(rmt_wfq_configure(q, 1, RMT_WFQ_MAX_SHARES + 1, 0, 0) == -1);
  assert(rmt_wfq_configure(q, 1, 1024, 60, 50) == -1);
  assert(rmt_wfq_configure(q, 1, 1024, -1, 0) == -1);
  assert(rmt_wfq_configure(q, 1, 1024, 10, 200) == 0);
  assert(rmt_wfq_set_tokens(q, 0) == -1);
  rmt_wfq_destroy(q);
}

/* ---- live ---------------------------------------------------------------- */

typedef struct worker {
  rmt_wfq *q;
  int tenant;
  int64_t iterations;
  uint64_t sum;
} worker;

static void *work(void *arg) {
  worker *w = arg;
  for (int i = 0; i < 20; i++) w->sum += rmt_wfq_run_synthetic(w->q, w->tenant, w->iterations / 20, 1000);
  return NULL;
}

static void test_live_threads(void) {
  rmt_wfq *q = rmt_wfq_create(1, 100 * MS, 2 * MS);
  rmt_wfq_configure(q, 1, 1024, 0, 0);
  rmt_wfq_configure(q, 2, 3072, 0, 0);
  pthread_t th[4];
  worker w[4];
  for (int i = 0; i < 4; i++) {
    w[i] = (worker){q, 1 + i % 2, 40000000, 0};
    pthread_create(&th[i], NULL, work, &w[i]);
  }
  for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
  rmt_wfq_stats a, b;
  rmt_wfq_get_stats(q, 1, -1, &a);
  rmt_wfq_get_stats(q, 2, -1, &b);
  assert(a.running == 0 && a.waiting == 0 && b.running == 0 && b.waiting == 0);
  assert(a.used_cpu_ns > 0 && b.used_cpu_ns > 0 && a.wait_ns > 0);
  printf("  live: tenant 1 %.3fs cpu, tenant 2 %.3fs cpu, waits %.3fs / %.3fs\n", a.used_cpu_ns / 1e9,
         b.used_cpu_ns / 1e9, a.wait_ns / 1e9, b.wait_ns / 1e9);
  rmt_wfq_destroy(q);
}

static void test_live_nesting_pause(void) {
  rmt_wfq *q = rmt_wfq_create(1, 100 * MS, 10 * MS);
  assert(rmt_wfq_current_tenant() == -1);
  rmt_wfq_acquire(q, 3);
  rmt_wfq_acquire(q, 3); /* nested: no second slot (1 token: would deadlock) */
  assert(rmt_wfq_current_tenant() == 3);
  rmt_wfq_pause();
  assert(rmt_wfq_current_tenant() == -1);
  rmt_wfq_stats st;
  rmt_wfq_get_stats(q, 3, -1, &st);
  assert(st.running == 0);
  rmt_wfq_resume();
  assert(rmt_wfq_current_tenant() == 3);
  rmt_wfq_release();
  assert(rmt_wfq_current_tenant() == 3);
  rmt_wfq_release();
  assert(rmt_wfq_current_tenant() == -1);
  rmt_wfq_get_stats(q, 3, -1, &st);
  assert(st.running == 0 && st.used_cpu_ns > 0);
  /* tenant 0 bypasses; so does a NULL scheduler */
  rmt_wfq_acquire(q, 0);
  assert(rmt_wfq_current_tenant() == -1);
  rmt_wfq_release();
  rmt_wfq_acquire(NULL, 5);
  rmt_wfq_release();
  rmt_wfq_destroy(q);
}

static void *throttled_worker(void *arg) {
  worker *w = arg;
  w->sum = rmt_wfq_run_synthetic(w->q, w->tenant, w->iterations, 500);
  return NULL;
}

static void test_live_max_percent(void) {
  rmt_wfq *q = rmt_wfq_create(2, 20 * MS, 2 * MS);
  rmt_wfq_configure(q, 1, 1024, 0, 25);
  int64_t t0 = rmt_wfq_now_ns();
  worker w = {q, 1, 60000000, 0};
  pthread_t th;
  pthread_create(&th, NULL, throttled_worker, &w);
  pthread_join(th, NULL);
  int64_t wall = rmt_wfq_now_ns() - t0;
  rmt_wfq_stats st;
  rmt_wfq_get_stats(q, 1, -1, &st);
  double pct = 100.0 * (double)st.used_cpu_ns / (double)wall;
  printf("  live max 25: %.1f%% of a core over %.2fs, throttled %.2fs\n", pct, wall / 1e9, st.throttled_ns / 1e9);
  assert(pct < 30.0 && st.throttled_ns > 0);
  rmt_wfq_destroy(q);
}

/* Kernel courtesy: a tenant ahead of another that was active within the
** last quantum sched_yields at every progress check; alone, it does not. */
static void test_courtesy(void) {
  rmt_wfq *q = rmt_wfq_create(2, 100 * MS, 10 * MS);
  rmt_wfq_waiter hog = {0}, light = {0};
  rmt_wfq_sim_arrive(q, &hog, 1, 1);
  assert(!rmt_wfq_sim_charge(q, &hog, 5 * MS, 5 * MS));
  assert(!rmt_wfq_sim_courteous(q, 1, 5 * MS));
  rmt_wfq_sim_arrive(q, &light, 2, 6 * MS);
  assert(light.state == RMT_WFQ_RUNNING);
  assert(rmt_wfq_sim_courteous(q, 1, 6 * MS) && !rmt_wfq_sim_courteous(q, 2, 6 * MS));
  rmt_wfq_sim_charge(q, &light, 50000, 6 * MS);
  rmt_wfq_sim_release(q, &light, 6 * MS);
  assert(rmt_wfq_sim_courteous(q, 1, 16 * MS));
  assert(!rmt_wfq_sim_courteous(q, 1, 16 * MS + 1));
  rmt_wfq_sim_release(q, &hog, 17 * MS);
  rmt_wfq_destroy(q);
}

int main(void) {
  static const int w13[] = {1024, 3072}, w1124[] = {1000, 1000, 2000, 4000};
  test_config_validation();
  test_weights(1, w13, 2, 1);
  test_weights(2, w13, 2, 2);
  test_weights(2, w1124, 4, 2);
  test_max_percent_alone();
  test_min_percent();
  test_idle_credit();
  test_random();
  test_courtesy();
  test_live_nesting_pause();
  test_live_threads();
  test_live_max_percent();
  printf("wfq: ok\n");
  return 0;
}
