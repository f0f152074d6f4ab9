/* wireloop: whole registered batches are answered byte for byte, anything
** else comes back untouched at the start of the first batch not served. The
** client end is the other half of a socketpair; requests are written before
** the loop runs and the write side shut, so the loop ends at end-of-stream. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wireloop.h"

typedef struct { unsigned char data[4096]; size_t len; } buf;

static void put(buf *b, const void *p, size_t n) {
    assert(b->len + n <= sizeof b->data);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}
static void put16(buf *b, int v) { unsigned char x[2] = {(unsigned char)(v >> 8), (unsigned char)v}; put(b, x, 2); }
static void put32(buf *b, long v) {
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    put(b, x, 4);
}
static void msg(buf *b, char kind, const buf *body) {
    put(b, &kind, 1);
    put32(b, (long)body->len + 4);
    put(b, body->data, body->len);
}
/* Bind "" -> stmt, one format code for all (-1: none), text params (NULL = SQL NULL), result formats. */
static void put_bind(buf *b, const char *stmt, int fmt, int nparams, const char *const *params, int nres, int res) {
    buf body = {{0}, 0};
    put(&body, "", 1);
    put(&body, stmt, strlen(stmt) + 1);
    if (fmt < 0) put16(&body, 0); else { put16(&body, 1); put16(&body, fmt); }
    put16(&body, nparams);
    for (int i = 0; i < nparams; i++) {
        if (params[i] == NULL) { put32(&body, -1); continue; }
        put32(&body, (long)strlen(params[i]));
        put(&body, params[i], strlen(params[i]));
    }
    put16(&body, nres);
    for (int i = 0; i < nres; i++) put16(&body, res);
    msg(b, 'B', &body);
}
static void tail(buf *b, int describe) {
    buf body = {{0}, 0};
    if (describe) { put(&body, "P", 2); msg(b, 'D', &body); body.len = 0; }
    put(&body, "\0\0\0\0\0", 5);
    msg(b, 'E', &body);
    body.len = 0;
    msg(b, 'S', &body);
}

static int client, server;
static unsigned char inbuf[65536];

static void reconnect(void) {
    int fds[2];
    if (client) { close(client); close(server); }
    assert(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0);
    client = fds[0];
    server = fds[1];
}
/* Write the request, close the write side, run the loop; the answer in *answer. */
static void run(rmt_wl_session *s, const buf *request, int serve, rmt_wl_result *r, buf *answer) {
    ssize_t got;
    reconnect();
    assert(write(client, request->data, request->len) == (ssize_t)request->len);
    shutdown(client, SHUT_WR);
    rmt_wl_run(s, server, (const unsigned char *)"hi", 2, inbuf, sizeof inbuf, -1, serve, 1000, r);
    shutdown(server, SHUT_WR);
    answer->len = 0;
    while ((got = read(client, answer->data + answer->len, sizeof answer->data - answer->len)) > 0) answer->len += (size_t)got;
    assert(answer->len >= 2 && memcmp(answer->data, "hi", 2) == 0);  /* `out` goes first */
}
static int has(const buf *b, const void *needle, size_t n) {
    for (size_t i = 0; i + n <= b->len; i++) if (memcmp(b->data + i, needle, n) == 0) return 1;
    return 0;
}

int main(void) {
    sqlite3 *db;
    sqlite3_stmt *stmt, *boom;
    rmt_exec_ctx ctx = {0, 0, 0};
    rmt_wl_signals signals = {0, 0, 0};
    rmt_wl_session s;
    rmt_wl_result *r = malloc(sizeof *r);
    buf req = {{0}, 0}, ans = {{0}, 0}, expect = {{0}, 0};
    const unsigned char text_int[1] = {RMT_WL_P_INT}, bin_int[1] = {RMT_WL_P_INT4};
    const unsigned char cols[3] = {RMT_WL_C_TEXT_INT, RMT_WL_C_PLAIN, RMT_WL_C_TEXT_BOOL};
    const unsigned char nores[2] = {0, 0};
    const unsigned char rowdesc[7] = {'T', 0, 0, 0, 6, 0, 0};  /* any bytes: sent as registered */
    const char *unit[1] = {"1"}, *one[1] = {"2"}, *bad[1] = {"2x"}, *null[1] = {NULL}, *neg[1] = {"-3"};
    unsigned char parse[64];
    size_t parse_len;

    assert(sqlite3_open(":memory:", &db) == SQLITE_OK);
    assert(sqlite3_exec(db, "CREATE TABLE t(a INT, b TEXT, c BOOL);"
                            "INSERT INTO t VALUES (1, 'one', 1), (2, 'tw\xc3\xb6', 0), (-3, CAST(x'ff' AS TEXT), 1), (4, 1.5, 0);",
                        0, 0, 0) == SQLITE_OK);
    assert(sqlite3_prepare_v2(db, "SELECT a, b, c FROM t WHERE a = ?1", -1, &stmt, 0) == SQLITE_OK);
    assert(sqlite3_prepare_v2(db, "SELECT abs(-9223372036854775807 - ?1)", -1, &boom, 0) == SQLITE_OK);
    rmt_wl_session_init(&s, db, &ctx, &signals);
    assert(rmt_wl_register(&s, stmt, "s1", 2, NULL, 0, nores, 2, rowdesc, 7, 1, text_int, bin_int, 3, cols, 0) == 0);
    parse_len = (size_t)snprintf((char *)parse, sizeof parse, "%cSELECT x", 0) + 1;
    memcpy(parse + parse_len, "\0\0", 2);
    parse_len += 2;
    assert(rmt_wl_register(&s, stmt, "", 0, parse, parse_len, nores, 2, rowdesc, 7, 1, text_int, bin_int, 3, cols, 0) == 0);
    assert(rmt_wl_register(&s, boom, "boom", 4, NULL, 0, nores, 2, rowdesc, 7, 1, text_int, bin_int, 1, cols, 0) == 0);

    /* 1. Bind/Describe/Execute/Sync: BindComplete, RowDescription, DataRow, SELECT 1, 'I' */
    put_bind(&req, "s1", -1, 1, one, 0, 0);
    tail(&req, 1);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_EOF && r->served == 1 && r->reused == 0 && r->latency_ms[0] >= 0);
    put(&expect, "hi", 2);
    put(&expect, "2\0\0\0\4", 5);
    put(&expect, rowdesc, 7);
    put(&expect, "D\0\0\0\x18\0\3\0\0\0\0012\0\0\0\4tw\xc3\xb6\0\0\0\1f", 25);
    put(&expect, "C\0\0\0\015SELECT 1\0Z\0\0\0\5I", 20);
    assert(ans.len == expect.len && memcmp(ans.data, expect.data, ans.len) == 0);

    /* 2. the same with the registered Parse first, twice, and no Describe */
    req.len = 0;
    {
        buf body = {{0}, 0};
        put(&body, parse, parse_len);
        msg(&req, 'P', &body);
    }
    put_bind(&req, "", 0, 1, one, 0, 0);
    tail(&req, 0);
    put(&req, req.data, req.len);  /* pipelined twice */
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_EOF && r->served == 2 && r->reused == 2);
    assert(ans.len == 2 + 2 * (10 + 25 + 20) && has(&ans, "1\0\0\0\4" "2\0\0\0\4" "D", 11));

    /* 3. a value C does not encode (invalid UTF-8, a float in a text column): handed back whole */
    req.len = 0;
    put_bind(&req, "s1", -1, 1, neg, 0, 0);
    tail(&req, 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0 && r->in_start == 0 && r->in_len == req.len);
    assert(memcmp(inbuf, req.data, req.len) == 0 && ans.len == 2);

    /* 4. served, then not for C (a parameter C does not read, an unknown name, a Query): the rest back */
    req.len = 0;
    put_bind(&req, "s1", -1, 1, null, 0, 0);   /* NULL param: no row */
    tail(&req, 0);
    size_t first = req.len;
    put_bind(&req, "s1", -1, 1, bad, 0, 0);
    tail(&req, 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 1 && r->in_start == first && r->in_len == req.len - first);
    assert(has(&ans, "C\0\0\0\015SELECT 0\0Z\0\0\0\5I", 20) && !has(&ans, "D\0", 2));
    req.len = 0;
    put_bind(&req, "nope", -1, 1, one, 0, 0);
    tail(&req, 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0 && r->in_len == req.len);
    /* without serve: everything is Python's */
    req.len = 0;
    put_bind(&req, "s1", -1, 1, one, 0, 0);
    tail(&req, 0);
    run(&s, &req, 0, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0 && r->in_len == req.len && ans.len == 2);
    /* binary parameter: int4 */
    req.len = 0;
    {
        buf body = {{0}, 0};
        put(&body, "\0s1\0", 4);
        put16(&body, 1); put16(&body, 1); put16(&body, 1); put32(&body, 4); put32(&body, 1);
        put16(&body, 0);
        msg(&req, 'B', &body);
    }
    tail(&req, 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_EOF && r->served == 1 && has(&ans, "\0\0\0\3one", 7));
    /* a partial batch stays Python's */
    req.len -= 3;
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0 && r->in_len == req.len);

    /* 5. a step error: the batch back, the error as the binding reports it, nothing sent */
    req.len = 0;
    put_bind(&req, "boom", -1, 1, unit, 0, 0);
    tail(&req, 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_STEP_ERROR && r->in_start == 0 && r->in_len == req.len);
    assert(r->step_rc == SQLITE_ERROR && strstr(r->step_message, "overflow") != NULL && ans.len == 2);

    /* 6. an interrupt or a new authorizer since the loop began: Python's */
    req.len = 0;
    put_bind(&req, "s1", -1, 1, one, 0, 0);
    tail(&req, 0);
    rmt_wl_signal_auth(&signals);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0);
    assert(rmt_wl_register(&s, stmt, "s1", 2, NULL, 0, nores, 2, rowdesc, 7, 1, text_int, bin_int, 3, cols,
                           rmt_wl_auth_epoch(&signals)) == 0);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_EOF && r->served == 1);

    /* 7. statements unreported: back within report_ms when nothing else comes */
    reconnect();
    assert(write(client, req.data, req.len) == (ssize_t)req.len);
    rmt_wl_run(&s, server, NULL, 0, inbuf, sizeof inbuf, -1, 1, 5, r);
    assert(r->status == RMT_WL_REPORT && r->served == 1);
    /* ... and a plain timeout when nothing was served */
    rmt_wl_run(&s, server, NULL, 0, inbuf, sizeof inbuf, 5, 1, 5, r);
    assert(r->status == RMT_WL_TIMEOUT && r->served == 0);

    /* 8. bytea's text output, for blob, text and integer values */
    {
        sqlite3_stmt *hex;
        const unsigned char hexcols[3] = {RMT_WL_C_TEXT_BYTEA, RMT_WL_C_TEXT_BYTEA, RMT_WL_C_TEXT_BYTEA};
        assert(sqlite3_prepare_v2(db, "SELECT x'00ff', 'ab', 12", -1, &hex, 0) == SQLITE_OK);
        assert(rmt_wl_register(&s, hex, "hex", 3, NULL, 0, nores, 2, rowdesc, 7, 0, text_int, bin_int, 3, hexcols,
                               rmt_wl_auth_epoch(&signals)) == 0);
        req.len = 0;
        put_bind(&req, "hex", -1, 0, NULL, 0, 0);
        tail(&req, 0);
        run(&s, &req, 1, r, &ans);
        assert(r->status == RMT_WL_EOF && r->served == 1);
        assert(has(&ans, "\0\0\0\6\\x00ff\0\0\0\6\\x6162\0\0\0\6\\x3132", 30));
        rmt_wl_unregister(&s, hex);
        sqlite3_finalize(hex);
    }

    /* 9. integers as decimal text, the extremes included */
    {
        sqlite3_stmt *ints;
        const unsigned char intcols[4] = {RMT_WL_C_TEXT_INT, RMT_WL_C_TEXT_INT, RMT_WL_C_TEXT_INT, RMT_WL_C_PLAIN};
        assert(sqlite3_prepare_v2(db, "SELECT -9223372036854775807 - 1, 0, -42, 9223372036854775807", -1, &ints, 0)
               == SQLITE_OK);
        assert(rmt_wl_register(&s, ints, "ints", 4, NULL, 0, nores, 2, rowdesc, 7, 0, text_int, bin_int, 4, intcols,
                               rmt_wl_auth_epoch(&signals)) == 0);
        req.len = 0;
        put_bind(&req, "ints", -1, 0, NULL, 0, 0);
        tail(&req, 0);
        run(&s, &req, 1, r, &ans);
        assert(r->status == RMT_WL_EOF && r->served == 1);
        assert(has(&ans, "\0\0\0\024-9223372036854775808\0\0\0\0010\0\0\0\3-42\0\0\0\0239223372036854775807", 59));
        rmt_wl_unregister(&s, ints);
        sqlite3_finalize(ints);
    }

    /* 10. unregistering the statement: its batches are Python's */
    rmt_wl_unregister(&s, stmt);
    assert(s.nentries == 1);
    run(&s, &req, 1, r, &ans);
    assert(r->status == RMT_WL_DATA && r->served == 0);

    rmt_wl_session_free(&s);
    sqlite3_finalize(stmt);
    sqlite3_finalize(boom);
    sqlite3_close(db);
    close(client);
    close(server);
    free(r);
    printf("wireloop: ok\n");
    return 0;
}
