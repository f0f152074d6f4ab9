/*
** wireloop.c: repeated prepared read-only statements served without Python
** (see wireloop.h for the contract).
**
** WHY
**
** pgbench -M prepared sends, per transaction, one small batch
** Bind/Describe/Execute/Sync for a statement it prepared once. In Python each
** round trip costs ~20 us of interpreter time (framing, events, the session's
** fast path, codecs, row encoding) and two hand-offs of the GIL; with eight
** connection threads on two cores the GIL is the bottleneck and CPU time per
** transaction grows with the clients. This loop answers exactly those batches
** from C, so the connection threads run in parallel.
**
** LAYOUT
**
**     rmt_wl_session (one per wire session, owned by the Cython wrapper)
**       entries[]:  registered (statement name, result formats) -> stmt,
**                   parameter and column codec kinds, RowDescription bytes,
**                   the Parse body that may precede the Bind
**       answer:     answers of the batches served since the last send
**
** THE LOOP (rmt_wl_run)
**
**   1. send what Python built; note the interrupt counter;
**   2. wait for the client (poll: bounded by the report deadline while
**      latencies are unreported) and receive;
**   3. without `serve`, hand everything to Python; else for each whole batch
**      at the front of the input: match it to an entry (serve_batch), bind,
**      step under the scheduler token, encode into `answer`;
**   4. send the answers of the batches served; if a batch was not served,
**      return the bytes from its start to Python (it has seen nothing of
**      that batch: the statement was reset, nothing was sent); else go to 2.
**
** Invariants: an entry's stmt is live (the session unregisters before it
** finalizes); a statement is always reset when the loop leaves it; `answer`
** holds only complete answers of served batches.
*/
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "wireloop.h"

enum { MAX_MESSAGE = 1 << 20 };  /* longer messages are Python's (limits, errors) */

static uint32_t be32(const unsigned char *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

static int be16(const unsigned char *p) {
    return (int16_t)(((unsigned)p[0] << 8) | (unsigned)p[1]);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* Strict UTF-8 as CPython's decoder: no overlong forms, no surrogates,
** nothing past U+10FFFF. */
static int utf8_valid(const unsigned char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xE1 && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else return 0;
        if (n - i <= need) return 0;
        if (p[i + 1] < lo || p[i + 1] > hi) return 0;
        for (size_t k = 2; k <= need; k++) {
            if (p[i + k] < 0x80 || p[i + k] > 0xBF) return 0;
        }
        i += need + 1;
    }
    return 1;
}

/* Decimal digits of v into out (>= 20 bytes, no NUL); the length. snprintf's
** "%lld" output, without its format parsing (it showed in profiles). */
static size_t decimal(char *out, sqlite3_int64 v) {
    char digits[20];
    size_t n = 0, len = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        digits[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0) out[len++] = '-';
    while (n > 0) out[len++] = digits[--n];
    return len;
}

/* ---- the answer buffer ------------------------------------------------------ */

static int reserve(rmt_wl_session *s, size_t extra) {
    size_t cap;
    unsigned char *grown;
    if (s->answer_len + extra <= s->answer_cap) return 0;
    cap = s->answer_cap ? s->answer_cap : 4096;
    while (cap < s->answer_len + extra) cap *= 2;
    grown = realloc(s->answer, cap);
    if (grown == NULL) return -1;
    s->answer = grown;
    s->answer_cap = cap;
    return 0;
}

static void put32(unsigned char *at, uint32_t v) {
    at[0] = (unsigned char)(v >> 24);
    at[1] = (unsigned char)(v >> 16);
    at[2] = (unsigned char)(v >> 8);
    at[3] = (unsigned char)v;
}

static int append(rmt_wl_session *s, const void *data, size_t n) {
    if (reserve(s, n) != 0) return -1;
    if (n) memcpy(s->answer + s->answer_len, data, n);
    s->answer_len += n;
    return 0;
}

/* A cell: int32 length + bytes. */
static int append_cell(rmt_wl_session *s, const void *data, size_t n) {
    if (reserve(s, 4 + n) != 0) return -1;
    put32(s->answer + s->answer_len, (uint32_t)n);
    if (n) memcpy(s->answer + s->answer_len + 4, data, n);
    s->answer_len += 4 + n;
    return 0;
}

/* ---- entries ------------------------------------------------------------------ */

static void free_entry(rmt_wl_entry *e) {
    free(e->name);
    free(e->parse_body);
    free(e->result_formats);
    free(e->row_description);
    free(e->columns);
    memset(e, 0, sizeof *e);
}

void rmt_wl_session_init(rmt_wl_session *s, sqlite3 *db, rmt_exec_ctx *ctx, rmt_wl_signals *signals) {
    memset(s, 0, sizeof *s);
    s->db = db;
    s->ctx = ctx;
    s->signals = signals;
    s->max_message = MAX_MESSAGE;
}

void rmt_wl_session_set_max_message(rmt_wl_session *s, size_t bytes) {
    s->max_message = bytes < MAX_MESSAGE ? bytes : MAX_MESSAGE;
}

void rmt_wl_session_clear(rmt_wl_session *s) {
    for (int i = 0; i < s->nentries; i++) free_entry(&s->entries[i]);
    s->nentries = 0;
}

void rmt_wl_session_free(rmt_wl_session *s) {
    rmt_wl_session_clear(s);
    free(s->answer);
    s->answer = NULL;
    s->answer_len = s->answer_cap = 0;
}

static unsigned char *copy(const void *data, size_t n) {
    unsigned char *p = malloc(n ? n : 1);
    if (p != NULL && n) memcpy(p, data, n);
    return p;
}

static void remove_at(rmt_wl_session *s, int i) {
    free_entry(&s->entries[i]);
    s->entries[i] = s->entries[s->nentries - 1];
    memset(&s->entries[s->nentries - 1], 0, sizeof s->entries[0]);
    s->nentries--;
}

int rmt_wl_register(rmt_wl_session *s, sqlite3_stmt *stmt, const char *name, size_t name_len,
                    const unsigned char *parse_body, size_t parse_len,
                    const unsigned char *result_formats, size_t result_formats_len,
                    const unsigned char *row_description, size_t row_description_len,
                    int nparams, const unsigned char *param_text, const unsigned char *param_binary,
                    int ncols, const unsigned char *columns, unsigned auth_epoch) {
    rmt_wl_entry e;
    if (stmt == NULL || nparams < 0 || nparams > RMT_WL_MAX_PARAMS || ncols < 0 || ncols > 32767) return -1;
    for (int i = 0; i < s->nentries; i++) {
        rmt_wl_entry *old = &s->entries[i];
        if (old->name_len == name_len && memcmp(old->name, name, name_len) == 0
                && old->result_formats_len == result_formats_len
                && memcmp(old->result_formats, result_formats, result_formats_len) == 0) {
            remove_at(s, i);
            break;
        }
    }
    if (s->nentries >= RMT_WL_MAX_ENTRIES) return -1;
    memset(&e, 0, sizeof e);
    e.stmt = stmt;
    e.name = (char *)copy(name, name_len);
    e.name_len = name_len;
    if (parse_body != NULL) {
        e.parse_body = copy(parse_body, parse_len);
        e.parse_len = parse_len;
    }
    e.result_formats = copy(result_formats, result_formats_len);
    e.result_formats_len = result_formats_len;
    e.row_description = copy(row_description, row_description_len);
    e.row_description_len = row_description_len;
    e.nparams = nparams;
    if (nparams) {
        memcpy(e.param_text, param_text, (size_t)nparams);
        memcpy(e.param_binary, param_binary, (size_t)nparams);
    }
    e.ncols = ncols;
    e.columns = copy(columns, (size_t)ncols);
    e.auth_epoch = auth_epoch;
    if (e.name == NULL || e.result_formats == NULL || e.row_description == NULL || e.columns == NULL
            || (parse_body != NULL && e.parse_body == NULL)) {
        free_entry(&e);
        return -1;
    }
    s->entries[s->nentries++] = e;
    return 0;
}

void rmt_wl_unregister(rmt_wl_session *s, sqlite3_stmt *stmt) {
    for (int i = s->nentries - 1; i >= 0; i--) {
        if (s->entries[i].stmt == stmt) remove_at(s, i);
    }
}

void rmt_wl_signal_interrupt(rmt_wl_signals *signals) {
    __atomic_add_fetch(&signals->interrupts, 1, __ATOMIC_SEQ_CST);
}

void rmt_wl_signal_auth(rmt_wl_signals *signals) {
    __atomic_add_fetch(&signals->auth_epoch, 1, __ATOMIC_SEQ_CST);
}

unsigned rmt_wl_auth_epoch(const rmt_wl_signals *signals) {
    return __atomic_load_n(&signals->auth_epoch, __ATOMIC_SEQ_CST);
}

int rmt_wl_stepping(const rmt_wl_signals *signals) {
    return __atomic_load_n(&signals->stepping, __ATOMIC_SEQ_CST);
}

/* ---- one batch ---------------------------------------------------------------- */

/* A message at in[0, n): kind, body, whole length; 0 when incomplete or not
** a length the loop handles. */
static size_t message_at(const unsigned char *in, size_t n, size_t max_message, unsigned char *kind,
                         const unsigned char **body, size_t *body_len) {
    uint32_t length;
    if (n < 5) return 0;
    length = be32(in + 1);
    if (length < 4 || length > max_message || (size_t)length + 1 > n) return 0;
    *kind = in[0];
    *body = in + 5;
    *body_len = length - 4;
    return (size_t)length + 1;
}

/* Bind's parameters bound (after a reset); 0, or -1 when one is not for C. */
static int bind_params(const rmt_wl_entry *e, const unsigned char *formats, int nformats,
                       const unsigned char *params, const unsigned char *end) {
    const unsigned char *p = params;
    sqlite3_stmt *stmt = e->stmt;
    for (int i = 0; i < e->nparams; i++) {
        int32_t size;
        int format, kind, rc;
        if (end - p < 4) return -1;
        size = (int32_t)be32(p);
        p += 4;
        if (size == -1) {
            if (sqlite3_bind_null(stmt, i + 1) != SQLITE_OK) return -1;
            continue;
        }
        if (size < 0 || end - p < size) return -1;
        format = nformats == 0 ? 0 : be16(formats + 2 * (nformats == 1 ? 0 : i));
        kind = format ? e->param_binary[i] : e->param_text[i];
        if (kind == RMT_WL_P_INT && !format) {
            /* the subset of int(data) C reads: optional sign, 1..18 digits */
            int k = 0, negative = 0;
            sqlite3_int64 v = 0;
            if (size > 0 && (p[0] == '-' || p[0] == '+')) {
                negative = p[0] == '-';
                k = 1;
            }
            if (size - k < 1 || size - k > 18) return -1;
            for (; k < size; k++) {
                if (p[k] < '0' || p[k] > '9') return -1;
                v = v * 10 + (p[k] - '0');
            }
            rc = sqlite3_bind_int64(stmt, i + 1, negative ? -v : v);
        } else if (kind == RMT_WL_P_STR) {
            if (!utf8_valid(p, (size_t)size)) return -1;
            rc = sqlite3_bind_text(stmt, i + 1, (const char *)p, size, SQLITE_TRANSIENT);
        } else if (kind == RMT_WL_P_BOOL && format) {
            rc = sqlite3_bind_int64(stmt, i + 1, !(size == 1 && p[0] == 0));
        } else if (kind == RMT_WL_P_BOOL) {
            static const char *const yes[] = {"t", "true", "y", "yes", "on", "1"};
            static const char *const no[] = {"f", "false", "n", "no", "off", "0"};
            int value = -1;
            for (int w = 0; w < 6 && value < 0; w++) {
                if ((size_t)size == strlen(yes[w]) && sqlite3_strnicmp((const char *)p, yes[w], size) == 0) value = 1;
                if ((size_t)size == strlen(no[w]) && sqlite3_strnicmp((const char *)p, no[w], size) == 0) value = 0;
            }
            if (value < 0) return -1;
            rc = sqlite3_bind_int64(stmt, i + 1, value);
        } else if (format && (kind == RMT_WL_P_INT2 || kind == RMT_WL_P_INT4 || kind == RMT_WL_P_INT8)) {
            int want = kind == RMT_WL_P_INT2 ? 2 : kind == RMT_WL_P_INT4 ? 4 : 8;
            uint64_t u = 0;
            sqlite3_int64 v;
            if (size != want) return -1;
            for (int k = 0; k < want; k++) u = (u << 8) | p[k];
            if (want == 2) v = (int16_t)u;
            else if (want == 4) v = (int32_t)u;
            else v = (sqlite3_int64)u;
            rc = sqlite3_bind_int64(stmt, i + 1, v);
        } else {
            return -1;
        }
        if (rc != SQLITE_OK) return -1;
        p += size;
    }
    return p == end ? 0 : -1;
}

/* bytea's text output: backslash, x, two lowercase hex digits per byte. */
static int append_hex_cell(rmt_wl_session *s, const unsigned char *data, size_t n) {
    static const char digits[] = "0123456789abcdef";
    unsigned char *at;
    if (reserve(s, 4 + 2 + 2 * n) != 0) return -1;
    at = s->answer + s->answer_len;
    put32(at, (uint32_t)(2 + 2 * n));
    at[4] = '\\';
    at[5] = 'x';
    for (size_t i = 0; i < n; i++) {
        at[6 + 2 * i] = (unsigned char)digits[data[i] >> 4];
        at[7 + 2 * i] = (unsigned char)digits[data[i] & 15];
    }
    s->answer_len += 4 + 2 + 2 * n;
    return 0;
}

/* The current row as a DataRow; 0, or -1 when a value is not for C (or no memory). */
static int encode_row(rmt_wl_session *s, const rmt_wl_entry *e) {
    sqlite3_stmt *stmt = e->stmt;
    size_t start = s->answer_len;
    unsigned char head[7];
    head[0] = 'D';
    head[5] = (unsigned char)(e->ncols >> 8);
    head[6] = (unsigned char)e->ncols;
    if (append(s, head, 7) != 0) return -1;
    for (int i = 0; i < e->ncols; i++) {
        int type = sqlite3_column_type(stmt, i), kind = e->columns[i];
        char digits[24];
        unsigned char bin[8];
        if (type == SQLITE_NULL) {
            static const unsigned char null_cell[4] = {0xFF, 0xFF, 0xFF, 0xFF};
            if (append(s, null_cell, 4) != 0) return -1;
            continue;
        }
        if (type == SQLITE_INTEGER && (kind == RMT_WL_C_TEXT_INT || kind == RMT_WL_C_PLAIN
                                       || kind == RMT_WL_C_TEXT_BYTEA)) {
            size_t n = decimal(digits, sqlite3_column_int64(stmt, i));
            if (kind == RMT_WL_C_TEXT_BYTEA) {
                if (append_hex_cell(s, (const unsigned char *)digits, n) != 0) return -1;
            } else if (append_cell(s, digits, n) != 0) {
                return -1;
            }
        } else if (type == SQLITE_INTEGER && (kind == RMT_WL_C_BIN_INT2 || kind == RMT_WL_C_BIN_INT4
                                              || kind == RMT_WL_C_BIN_INT8)) {
            sqlite3_int64 v = sqlite3_column_int64(stmt, i);
            int width = kind == RMT_WL_C_BIN_INT2 ? 2 : kind == RMT_WL_C_BIN_INT4 ? 4 : 8;
            uint64_t u = (uint64_t)v;
            if ((width == 2 && (v < -32768 || v > 32767)) || (width == 4 && (v < INT32_MIN || v > INT32_MAX))) {
                return -1;  /* Python answers 22003 */
            }
            for (int k = width - 1; k >= 0; k--) {
                bin[k] = (unsigned char)u;
                u >>= 8;
            }
            if (append_cell(s, bin, (size_t)width) != 0) return -1;
        } else if (type == SQLITE_INTEGER && (kind == RMT_WL_C_TEXT_BOOL || kind == RMT_WL_C_BIN_BOOL)) {
            int truth = sqlite3_column_int64(stmt, i) != 0;
            bin[0] = kind == RMT_WL_C_BIN_BOOL ? (unsigned char)truth : (unsigned char)(truth ? 't' : 'f');
            if (append_cell(s, bin, 1) != 0) return -1;
        } else if (type == SQLITE_TEXT && (kind == RMT_WL_C_PLAIN || kind == RMT_WL_C_TEXT_BYTEA)) {
            /* text before bytes, as SQLite documents; NULL (no memory) is "" as in the binding */
            const unsigned char *text = sqlite3_column_text(stmt, i);
            size_t n = text != NULL ? (size_t)sqlite3_column_bytes(stmt, i) : 0;
            if (!utf8_valid(text, n)) return -1;  /* Python would decode with replacement */
            if ((kind == RMT_WL_C_PLAIN ? append_cell(s, text, n) : append_hex_cell(s, text, n)) != 0) return -1;
        } else if (type == SQLITE_BLOB && (kind == RMT_WL_C_PLAIN || kind == RMT_WL_C_TEXT_BYTEA)) {
            const unsigned char *blob = sqlite3_column_blob(stmt, i);
            size_t n = blob != NULL ? (size_t)sqlite3_column_bytes(stmt, i) : 0;
            if ((kind == RMT_WL_C_PLAIN ? append_cell(s, blob, n) : append_hex_cell(s, blob, n)) != 0) return -1;
        } else {
            return -1;
        }
    }
    put32(s->answer + start + 1, (uint32_t)(s->answer_len - start - 1));
    return 0;
}

enum { SERVED, NOT_FOR_C, STEP_FAILED };

/* Step 3 for the batch at in[0, n): SERVED (consumed bytes in *used, the
** answer appended), NOT_FOR_C (nothing changed but a reset statement) or
** STEP_FAILED (result's step fields set, statement reset). */
static int serve_batch(rmt_wl_session *s, const unsigned char *in, size_t n, unsigned interrupts,
                       size_t *used, rmt_wl_result *result) {
    static const unsigned char parse_complete[5] = {'1', 0, 0, 0, 4};
    static const unsigned char bind_complete[5] = {'2', 0, 0, 0, 4};
    static const unsigned char ready_idle[6] = {'Z', 0, 0, 0, 5, 'I'};
    unsigned char kind;
    const unsigned char *body, *parse = NULL, *bind, *bind_end, *p, *formats, *params;
    size_t body_len, parse_len = 0, bind_len, len, pos = 0, name_len, answer_start = s->answer_len;
    int describe = 0, nformats, nparams, rows = 0, rc;
    rmt_wl_entry *e = NULL;
    double started;
    char tag[32];

    /* 1. the shape: [P] B [D "P\0"] E "\0" 0 S, whole */
    if ((len = message_at(in, n, s->max_message, &kind, &body, &body_len)) == 0) return NOT_FOR_C;
    if (kind == 'P') {
        parse = body;
        parse_len = body_len;
        pos += len;
        if ((len = message_at(in + pos, n - pos, s->max_message, &kind, &body, &body_len)) == 0) return NOT_FOR_C;
    }
    if (kind != 'B') return NOT_FOR_C;
    bind = body;
    bind_len = body_len;
    pos += len;
    if ((len = message_at(in + pos, n - pos, s->max_message, &kind, &body, &body_len)) == 0) return NOT_FOR_C;
    if (kind == 'D') {
        if (body_len != 2 || body[0] != 'P' || body[1] != 0) return NOT_FOR_C;
        describe = 1;
        pos += len;
        if ((len = message_at(in + pos, n - pos, s->max_message, &kind, &body, &body_len)) == 0) return NOT_FOR_C;
    }
    if (kind != 'E' || body_len != 5 || memcmp(body, "\0\0\0\0\0", 5) != 0) return NOT_FOR_C;
    pos += len;
    if ((len = message_at(in + pos, n - pos, s->max_message, &kind, &body, &body_len)) == 0) return NOT_FOR_C;
    if (kind != 'S' || body_len != 0) return NOT_FOR_C;
    pos += len;

    /* 2. Bind: unnamed portal, the statement, formats 0/1, parameters, result formats */
    bind_end = bind + bind_len;
    if (bind_len < 1 || bind[0] != 0) return NOT_FOR_C;
    p = bind + 1;
    name_len = 0;
    while (p + name_len < bind_end && p[name_len] != 0) name_len++;
    if (p + name_len >= bind_end) return NOT_FOR_C;
    formats = p + name_len + 1;
    if (bind_end - formats < 2) return NOT_FOR_C;
    nformats = be16(formats);
    formats += 2;
    if (nformats < 0 || bind_end - formats < 2 * nformats + 2) return NOT_FOR_C;
    for (int i = 0; i < nformats; i++) {
        int code = be16(formats + 2 * i);
        if (code != 0 && code != 1) return NOT_FOR_C;
    }
    nparams = be16(formats + 2 * nformats);
    params = formats + 2 * nformats + 2;
    if (nparams < 0) return NOT_FOR_C;

    /* 3. which entry, and may it run now */
    if (__atomic_load_n(&s->signals->interrupts, __ATOMIC_SEQ_CST) != interrupts) return NOT_FOR_C;
    if (!sqlite3_get_autocommit(s->db) || result->served >= RMT_WL_MAX_UNREPORTED) return NOT_FOR_C;
    for (int i = 0; i < s->nentries && e == NULL; i++) {
        rmt_wl_entry *c = &s->entries[i];
        if (c->name_len == name_len && memcmp(c->name, p, name_len) == 0 && !c->too_big
                && (parse == NULL || (c->parse_body != NULL && c->parse_len == parse_len
                                      && memcmp(c->parse_body, parse, parse_len) == 0))) {
            /* result formats: the tail of the Bind after the parameters must be exactly them */
            const unsigned char *q = params;
            int ok = 1;
            for (int k = 0; k < nparams && ok; k++) {
                int32_t size;
                if (bind_end - q < 4) { ok = 0; break; }
                size = (int32_t)be32(q);
                q += 4;
                if (size == -1) continue;
                if (size < 0 || bind_end - q < size) ok = 0;
                else q += size;
            }
            if (ok && (size_t)(bind_end - q) == c->result_formats_len
                    && memcmp(q, c->result_formats, c->result_formats_len) == 0) {
                e = c;
            }
        }
    }
    if (e == NULL || e->nparams != nparams || (nformats > 1 && nformats != nparams)) return NOT_FOR_C;
    if (e->auth_epoch != rmt_wl_auth_epoch(s->signals)) return NOT_FOR_C;

    /* 4. bind, step, encode */
    started = now_ms();
    sqlite3_reset(e->stmt);
    if (bind_params(e, formats, nformats, params, bind_end - e->result_formats_len) != 0) {
        sqlite3_reset(e->stmt);
        return NOT_FOR_C;
    }
    if ((parse != NULL && append(s, parse_complete, 5) != 0) || append(s, bind_complete, 5) != 0
            || (describe && append(s, e->row_description, e->row_description_len) != 0)) {
        s->answer_len = answer_start;
        return NOT_FOR_C;
    }
    __atomic_store_n(&s->signals->stepping, 1, __ATOMIC_SEQ_CST);
    rmt_exec_enter(s->ctx);
    int encoded = 0;
    for (;;) {
        rc = sqlite3_step(e->stmt);
        if (rc != SQLITE_ROW) break;
        if (encode_row(s, e) != 0) {
            encoded = -1;
            break;
        }
        rows++;
        if (s->answer_len - answer_start > RMT_WL_MAX_ANSWER) {
            e->too_big = 1;
            encoded = -1;
            break;
        }
    }
    rmt_exec_leave(s->ctx);
    __atomic_store_n(&s->signals->stepping, 0, __ATOMIC_SEQ_CST);
    if (sqlite3_column_count(e->stmt) != e->ncols) encoded = -1;  /* recompiled for a new schema */
    if (encoded != 0) {
        sqlite3_reset(e->stmt);
        s->answer_len = answer_start;
        return NOT_FOR_C;
    }
    if (rc != SQLITE_DONE) {
        /* as the binding's _error(): primary code, extended code, message */
        int extended = sqlite3_extended_errcode(s->db);
        const char *message = sqlite3_errmsg(s->db);
        if ((extended & 0xff) != (rc & 0xff)) extended = rc;
        result->step_rc = rc & 0xff;
        result->step_extended = extended;
        snprintf(result->step_message, sizeof result->step_message, "%s", message ? message : "");
        sqlite3_reset(e->stmt);
        s->answer_len = answer_start;
        return STEP_FAILED;
    }
    sqlite3_reset(e->stmt);  /* ends the read transaction now, as Python's path does */
    memcpy(tag, "SELECT ", 7);
    len = 7 + decimal(tag + 7, rows);
    tag[len++] = 0;
    if (reserve(s, 5 + len + sizeof ready_idle) != 0) {
        s->answer_len = answer_start;
        return NOT_FOR_C;
    }
    s->answer[s->answer_len] = 'C';
    put32(s->answer + s->answer_len + 1, (uint32_t)(len + 4));
    memcpy(s->answer + s->answer_len + 5, tag, len);
    s->answer_len += 5 + len;
    append(s, ready_idle, sizeof ready_idle);  /* room reserved above */
    result->latency_ms[result->served++] = now_ms() - started;
    if (parse != NULL) result->reused++;
    *used = pos;
    return SERVED;
}

/* ---- the loop ----------------------------------------------------------------- */

static int send_all(int fd, const unsigned char *data, size_t n) {
    size_t sent = 0;
    while (sent < n) {
        ssize_t rc = send(fd, data + sent, n - sent, MSG_NOSIGNAL);
        if (rc < 0) {
            if (errno == EINTR) continue;
            return errno;
        }
        sent += (size_t)rc;
    }
    return 0;
}

static int flush_answers(rmt_wl_session *s, int fd) {
    int err = send_all(fd, s->answer, s->answer_len);
    s->answer_len = 0;
    return err;
}

static void os_failure(rmt_wl_result *result, int err) {
    result->status = RMT_WL_OS_ERROR;
    result->os_error = err;
}

void rmt_wl_run(rmt_wl_session *s, int fd, const unsigned char *out, size_t out_len,
                unsigned char *in, size_t in_cap, int timeout_ms, int serve, int report_ms,
                rmt_wl_result *result) {
    unsigned interrupts = __atomic_load_n(&s->signals->interrupts, __ATOMIC_SEQ_CST);
    double first_served = 0;
    int err;
    result->status = RMT_WL_DATA;
    result->os_error = 0;
    result->in_start = result->in_len = 0;
    result->served = result->reused = 0;
    result->step_rc = result->step_extended = 0;
    result->step_message[0] = 0;
    s->answer_len = 0;
    /* 1. */
    if ((err = send_all(fd, out, out_len)) != 0) {
        os_failure(result, err);
        return;
    }
    for (;;) {
        /* 2. */
        int wait = timeout_ms;
        ssize_t got;
        size_t pos = 0;
        int outcome = SERVED;
        if (result->served > 0) {
            int left = report_ms - (int)(now_ms() - first_served);
            if (left <= 0 || result->served >= RMT_WL_MAX_UNREPORTED) {
                result->status = RMT_WL_REPORT;
                return;
            }
            wait = wait < 0 || left < wait ? left : wait;
        }
        if (wait >= 0) {
            struct pollfd waiting = {fd, POLLIN, 0};
            int ready;
            do {
                ready = poll(&waiting, 1, wait);
            } while (ready < 0 && errno == EINTR);
            if (ready < 0) {
                os_failure(result, errno);
                return;
            }
            if (ready == 0) {
                result->status = result->served > 0 ? RMT_WL_REPORT : RMT_WL_TIMEOUT;
                return;
            }
        }
        do {
            got = recv(fd, in, in_cap, 0);
        } while (got < 0 && errno == EINTR);
        if (got < 0) {
            os_failure(result, errno);
            return;
        }
        if (got == 0) {
            result->status = RMT_WL_EOF;
            return;
        }
        if (!serve) {
            result->in_len = (size_t)got;
            return;
        }
        /* 3. */
        while (pos < (size_t)got) {
            size_t used = 0;
            int before = result->served;
            outcome = serve_batch(s, in + pos, (size_t)got - pos, interrupts, &used, result);
            if (outcome != SERVED) break;
            if (before == 0) first_served = now_ms();
            pos += used;
            /* pipelined batches: answers go out once they pass one batch's bound,
            ** so the buffer stays near 2 x RMT_WL_MAX_ANSWER whatever the client queued */
            if (s->answer_len >= RMT_WL_MAX_ANSWER && (err = flush_answers(s, fd)) != 0) {
                os_failure(result, err);
                return;
            }
        }
        /* 4. */
        if ((err = flush_answers(s, fd)) != 0) {
            os_failure(result, err);
            return;
        }
        if (s->answer_cap > 2 * (size_t)RMT_WL_MAX_ANSWER) {  /* a big answer's buffer is not kept for the session */
            free(s->answer);
            s->answer = NULL;
            s->answer_cap = 0;
        }
        if (pos < (size_t)got) {
            result->status = outcome == STEP_FAILED ? RMT_WL_STEP_ERROR : RMT_WL_DATA;
            result->in_start = pos;
            result->in_len = (size_t)got - pos;
            return;
        }
    }
}
