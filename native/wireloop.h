/*
** wireloop.h: the wire server's round-trip loop for repeated prepared
** read-only statements, run without the Python interpreter.
**
** A session thread of the PostgreSQL wire server (rustymt/engine/pgwire)
** calls rmt_wl_run() in place of a plain send-then-receive. It sends the
** answer Python built, then keeps receiving; as long as what arrives is
** whole batches of the shape
**
**     [Parse(unnamed, the cached text)] Bind [Describe portal ""] Execute("", 0) Sync
**
** for a statement the session registered (rmt_wl_register), it decodes the
** parameters, binds, steps under the scheduler's token (rmt_exec_enter/leave),
** encodes ParseComplete/BindComplete/RowDescription/DataRow/CommandComplete/
** ReadyForQuery and sends them: no GIL, no Python. Anything else stops the
** loop before that batch, nothing of which was sent; the bytes from there on
** go back to Python (rmt_wl_result.in_start/in_len), which runs them on its
** own paths exactly as without the loop. See docs/pgwire.md.
**
** The session registers only what Python's own fast path would serve
** (Session._run_prepared_fast), with the codecs of parameters and columns as
** small kinds below; a value C does not encode byte for byte like Python (a
** float, text in an integer column, invalid UTF-8, ...) stops the loop too.
*/
#ifndef RUSTYMT_WIRELOOP_H
#define RUSTYMT_WIRELOOP_H

#include <stddef.h>
#include <stdint.h>
#include <sqlite3.h>

#include "exechooks.h"

enum {
    RMT_WL_MAX_ENTRIES = 32,       /* registered (statement, result formats) pairs per session */
    RMT_WL_MAX_PARAMS = 64,        /* parameters of a registered statement */
    RMT_WL_MAX_UNREPORTED = 256,   /* statements served before Python must see their latencies */
    RMT_WL_MAX_ANSWER = 256 * 1024 /* a bigger answer is left to Python (it flushes as it goes) */
};

/* How a parameter's bytes become an SQLite value (by format, text / binary),
** as rustymt/engine/pgwire/codecs.decode_param does. NONE: not in C. */
enum rmt_wl_param_kind {
    RMT_WL_P_NONE = 0,
    RMT_WL_P_INT,      /* text: [+-]digits (<= 18), as int(data) for that subset */
    RMT_WL_P_STR,      /* text or binary: strict UTF-8 -> bound as text */
    RMT_WL_P_BOOL,     /* text: t/true/y/yes/on/1, f/false/n/no/off/0; binary: != "\0" */
    RMT_WL_P_INT2,     /* binary: exactly 2/4/8 bytes, big-endian, signed */
    RMT_WL_P_INT4,
    RMT_WL_P_INT8
};

/* How a column value becomes DataRow bytes, as the codecs' encoder does for
** the storage classes named; any other storage class stops the loop. NULL is
** always -1. */
enum rmt_wl_column_kind {
    RMT_WL_C_NONE = 0,
    RMT_WL_C_TEXT_INT,  /* INTEGER -> decimal */
    RMT_WL_C_BIN_INT2,  /* INTEGER in range -> big-endian 2/4/8 bytes */
    RMT_WL_C_BIN_INT4,
    RMT_WL_C_BIN_INT8,
    RMT_WL_C_PLAIN,     /* TEXT (strict UTF-8) as is, BLOB as is, INTEGER -> decimal */
    RMT_WL_C_TEXT_BOOL, /* INTEGER -> "t" / "f" */
    RMT_WL_C_BIN_BOOL,  /* INTEGER -> 1 / 0 byte */
    RMT_WL_C_TEXT_BYTEA /* BLOB, TEXT (strict UTF-8), INTEGER (decimal) -> "\\x" + lowercase hex of the bytes */
};

/* One statement and result-format combination the loop may serve. */
typedef struct rmt_wl_entry {
    sqlite3_stmt *stmt;             /* owned by the session (borrowed here) */
    char *name;                     /* statement name as Bind names it (malloc'd) */
    size_t name_len;
    unsigned char *parse_body;      /* the Parse body that may precede the Bind (malloc'd); NULL: none may */
    size_t parse_len;
    unsigned char *result_formats;  /* Bind's result-format section (int16 n + n int16), malloc'd */
    size_t result_formats_len;
    unsigned char *row_description; /* whole RowDescription message, for Describe (malloc'd) */
    size_t row_description_len;
    int nparams;
    unsigned char param_text[RMT_WL_MAX_PARAMS];   /* rmt_wl_param_kind for format 0 */
    unsigned char param_binary[RMT_WL_MAX_PARAMS]; /* rmt_wl_param_kind for format 1 */
    int ncols;
    unsigned char *columns;         /* ncols rmt_wl_column_kind (malloc'd) */
    unsigned auth_epoch;            /* the connection's authorizer epoch when registered */
    int too_big;                    /* an answer passed RMT_WL_MAX_ANSWER: left to Python from now on */
} rmt_wl_entry;

/* Written by other threads, read by the loop before every batch. */
typedef struct rmt_wl_signals {
    unsigned interrupts;  /* bumped by Connection.interrupt()/close(): the loop returns */
    unsigned auth_epoch;  /* bumped by set_authorizer(): entries of older epochs are dead */
    int stepping;         /* set by the loop while it steps (a cancel must interrupt then) */
} rmt_wl_signals;

/* Per-session loop state. */
typedef struct rmt_wl_session {
    sqlite3 *db;                   /* the session's connection */
    rmt_exec_ctx *ctx;             /* its scheduler context */
    rmt_wl_signals *signals;       /* its signals (lives as long as the connection) */
    int nentries;
    rmt_wl_entry entries[RMT_WL_MAX_ENTRIES];
    unsigned char *answer;         /* answers not yet sent (malloc'd, reused; flushed past RMT_WL_MAX_ANSWER) */
    size_t answer_len, answer_cap;
    size_t max_message;            /* longer messages are Python's (pgwire.max_message_bytes, at most 1 MiB) */
} rmt_wl_session;

/* Why rmt_wl_run returned. */
enum rmt_wl_status {
    RMT_WL_DATA = 0,     /* in[in_start, in_start+in_len) is for Python (in_len > 0) */
    RMT_WL_EOF,          /* the client closed (or the read side was shut down) */
    RMT_WL_TIMEOUT,      /* nothing arrived within timeout_ms */
    RMT_WL_REPORT,       /* latencies to report; nothing for Python to run */
    RMT_WL_OS_ERROR,     /* send/recv/poll failed: errno in os_error */
    RMT_WL_STEP_ERROR    /* a step failed: the failing batch starts at in_start (not answered) */
};

typedef struct rmt_wl_result {
    int status;                    /* rmt_wl_status */
    int os_error;                  /* errno for RMT_WL_OS_ERROR */
    size_t in_start, in_len;       /* bytes of `in` for Python */
    size_t batch_len;              /* RMT_WL_STEP_ERROR: length of the failing batch */
    int served;                    /* batches answered by the loop */
    int reused;                    /* of which began with a Parse */
    double latency_ms[RMT_WL_MAX_UNREPORTED];  /* per served statement: bind to CommandComplete */
    int step_rc, step_extended;    /* RMT_WL_STEP_ERROR: sqlite3_step's code, extended code */
    char step_message[256];        /* and sqlite3_errmsg (truncated) */
} rmt_wl_result;

void rmt_wl_session_init(rmt_wl_session *s, sqlite3 *db, rmt_exec_ctx *ctx, rmt_wl_signals *signals);
/* Messages longer than this go to Python, which enforces the server's limit (54000). */
void rmt_wl_session_set_max_message(rmt_wl_session *s, size_t bytes);
void rmt_wl_session_clear(rmt_wl_session *s);   /* forget every entry (keeps the buffers) */
void rmt_wl_session_free(rmt_wl_session *s);    /* clear + free buffers */

/* Register an entry (the strings are copied). 0, or -1 when the table is
** full, a count is out of range or there is no memory. An entry with the same
** name and result formats replaces the older one. */
int rmt_wl_register(rmt_wl_session *s, sqlite3_stmt *stmt, const char *name, size_t name_len,
                    const unsigned char *parse_body, size_t parse_len,
                    const unsigned char *result_formats, size_t result_formats_len,
                    const unsigned char *row_description, size_t row_description_len,
                    int nparams, const unsigned char *param_text, const unsigned char *param_binary,
                    int ncols, const unsigned char *columns, unsigned auth_epoch);

/* Forget every entry of statement `stmt` (it is being finalized). */
void rmt_wl_unregister(rmt_wl_session *s, sqlite3_stmt *stmt);

/* Send out[0, out_len) on the blocking socket fd, then receive into
** in[0, in_cap) and, when `serve`, answer whole registered batches (above)
** until something is for Python. timeout_ms < 0 waits for the client
** forever; with statements unreported the loop also returns (RMT_WL_REPORT)
** report_ms after the first of them, or once RMT_WL_MAX_UNREPORTED are. Never
** sends part of an answer. Runs without any lock of its caller's. */
void rmt_wl_run(rmt_wl_session *s, int fd, const unsigned char *out, size_t out_len,
                unsigned char *in, size_t in_cap, int timeout_ms, int serve, int report_ms,
                rmt_wl_result *result);

/* Thread-safe signal bumps (for other threads). */
void rmt_wl_signal_interrupt(rmt_wl_signals *signals);
void rmt_wl_signal_auth(rmt_wl_signals *signals);
unsigned rmt_wl_auth_epoch(const rmt_wl_signals *signals);
int rmt_wl_stepping(const rmt_wl_signals *signals);

#endif
