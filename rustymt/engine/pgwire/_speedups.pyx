# cython: language_level=3, boundscheck=False, wraparound=False
"""Compiled twins of the wire server's hottest loops (profiled: framing, Bind
parsing and DataRow encoding dominated the per-query Python cost after SQLite
itself).

Each function has a pure-Python twin with the same contract (framing.py's
split_frames_py and parse_bind_py, rows.py's encode_rows_py); the tests run
both on the same inputs. Plain values in, plain values out: no protocol policy here.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef list _KINDS = [bytes([i]) for i in range(256)]


def split_frames(const unsigned char[:] buf, long max_body):
    """Typed messages in buf -> (frames [(kind, body)], consumed, bad_length).

    Stops before an incomplete message; bad_length is the declared length of
    the first message whose length is < 4 or whose body exceeds max_body
    (None if none): the caller turns it into a protocol error."""
    cdef Py_ssize_t pos = 0, n = buf.shape[0]
    cdef int length
    cdef list frames = []
    while n - pos >= 5:
        length = <int>((<unsigned int>buf[pos + 1] << 24) | (<unsigned int>buf[pos + 2] << 16)
                       | (<unsigned int>buf[pos + 3] << 8) | <unsigned int>buf[pos + 4])
        if length < 4 or length - 4 > max_body:
            return frames, pos, length
        if n - pos < <Py_ssize_t>length + 1:
            break
        if length == 4:
            body = b""
        else:
            body = PyBytes_FromStringAndSize(<const char *>&buf[pos + 5], length - 4)
        frames.append((_KINDS[buf[pos]], body))
        pos += length + 1
    return frames, pos, None


cdef struct _Growing:
    char *data          # malloc'd; NULL until the first byte
    Py_ssize_t size     # bytes written
    Py_ssize_t cap      # bytes allocated


cdef int _reserve(_Growing *out, Py_ssize_t extra) except -1:
    """Room for `extra` more bytes (doubling, so appends stay amortised O(1))."""
    cdef Py_ssize_t cap
    cdef char *grown
    if out.size + extra <= out.cap:
        return 0
    cap = max(out.cap * 2, out.size + extra, 256)
    grown = <char *>realloc(out.data, cap)
    if grown == NULL:
        raise MemoryError("no memory for DataRow messages")
    out.data, out.cap = grown, cap
    return 0


cdef inline void _put_u32(char *at, unsigned int value) noexcept:
    at[0] = <char>((value >> 24) & 0xFF)
    at[1] = <char>((value >> 16) & 0xFF)
    at[2] = <char>((value >> 8) & 0xFF)
    at[3] = <char>(value & 0xFF)


def encode_rows(rows, list encoders):
    """rows (tuples of SQLite values) -> concatenated DataRow messages; each
    non-NULL value is converted by its column's encoder (value -> bytes).
    Written into one growing C buffer, copied out once."""
    cdef Py_ssize_t ncols = len(encoders), i, start, n
    cdef _Growing out
    cdef bytes data
    out.data, out.size, out.cap = NULL, 0, 0
    try:
        for row in rows:
            _reserve(&out, 7)
            start = out.size
            out.data[start] = 68  # 'D'; its length is filled in once the row is written
            out.data[start + 5] = <char>((ncols >> 8) & 0xFF)
            out.data[start + 6] = <char>(ncols & 0xFF)
            out.size += 7
            for i in range(ncols):
                value = row[i]
                if value is None:
                    _reserve(&out, 4)
                    _put_u32(out.data + out.size, 0xFFFFFFFF)
                    out.size += 4
                else:
                    data = encoders[i](value)
                    n = len(data)
                    _reserve(&out, 4 + n)
                    _put_u32(out.data + out.size, <unsigned int>n)
                    memcpy(out.data + out.size + 4, <const char *>data, n)
                    out.size += 4 + n
            _put_u32(out.data + start + 1, <unsigned int>(out.size - start - 1))
        return PyBytes_FromStringAndSize(out.data, out.size)
    finally:
        free(out.data)


cdef inline int _i16(const unsigned char[:] b, Py_ssize_t at):
    return <short>((<unsigned int>b[at] << 8) | <unsigned int>b[at + 1])


cdef inline int _i32(const unsigned char[:] b, Py_ssize_t at):
    return <int>((<unsigned int>b[at] << 24) | (<unsigned int>b[at + 1] << 16)
                 | (<unsigned int>b[at + 2] << 8) | <unsigned int>b[at + 3])


cdef str _cstr(const unsigned char[:] b, Py_ssize_t *pos, Py_ssize_t n):
    """The NUL-terminated UTF-8 string at pos[0] (before n); moves pos past it."""
    cdef Py_ssize_t start = pos[0], i = start
    while i < n and b[i] != 0:
        i += 1
    if i >= n:
        raise ValueError("unterminated string")
    pos[0] = i + 1
    return PyUnicode_DecodeUTF8(<const char *>&b[start], i - start, NULL) if i > start else ""


def parse_bind(const unsigned char[:] body):
    """Bind body -> (portal, statement, param_formats, params, result_formats);
    ValueError when malformed (lengths overrun, negative counts, trailing bytes)."""
    return _parse_bind(body, 0, body.shape[0])


cdef tuple _parse_bind(const unsigned char[:] body, Py_ssize_t pos, Py_ssize_t n):
    """parse_bind of body[pos:n]."""
    cdef Py_ssize_t i
    cdef int count, size
    portal = _cstr(body, &pos, n)
    statement = _cstr(body, &pos, n)
    if n - pos < 2:
        raise ValueError("truncated")
    count = _i16(body, pos)
    pos += 2
    if count < 0 or n - pos < 2 * count:
        raise ValueError("bad format count")
    param_formats = [_i16(body, pos + 2 * i) for i in range(count)] if count else []
    pos += 2 * count
    if n - pos < 2:
        raise ValueError("truncated")
    count = _i16(body, pos)
    pos += 2
    if count < 0:
        raise ValueError("bad parameter count")
    params = []
    for i in range(count):
        if n - pos < 4:
            raise ValueError("truncated")
        size = _i32(body, pos)
        pos += 4
        if size == -1:
            params.append(None)
            continue
        if size < 0 or n - pos < size:
            raise ValueError("bad parameter length")
        params.append(PyBytes_FromStringAndSize(<const char *>&body[pos], size) if size else b"")
        pos += size
    if n - pos < 2:
        raise ValueError("truncated")
    count = _i16(body, pos)
    pos += 2
    if count < 0 or n - pos != 2 * count:
        raise ValueError("bad result format count")
    result_formats = [_i16(body, pos + 2 * i) for i in range(count)] if count else []
    return portal, statement, param_formats, params, result_formats


# ---- query-phase messages -> events ------------------------------------------
# Twin of protocol.split_events_py. The frequent messages (Query, Bind,
# Execute, Describe, Sync, Flush) become protocol events right here; any
# other message, and any frequent one that does not parse cleanly, comes back
# as its (kind, body) frame for the protocol's own parsers (which raise the
# right error). The event classes are registered once by protocol.py.

cdef object _Query = None, _Bind = None, _Execute = None, _Describe = None, _SYNC = None, _FLUSH = None


def set_event_types(query, bind, execute, describe, sync, flush):
    global _Query, _Bind, _Execute, _Describe, _SYNC, _FLUSH
    _Query, _Bind, _Execute, _Describe, _SYNC, _FLUSH = query, bind, execute, describe, sync, flush


cdef object _event(const unsigned char[:] b, Py_ssize_t at, Py_ssize_t n, unsigned char kind):
    """The event of the body b[at:at + n], or None when it is not a clean one."""
    cdef Py_ssize_t pos = at, end = at + n, i
    if kind == 83 or kind == 72:            # 'S' Sync, 'H' Flush: empty bodies
        if n:
            return None
        return _SYNC if kind == 83 else _FLUSH
    if kind == 81:                          # 'Q': one string ending the body
        if n < 1 or b[end - 1] != 0:
            return None
        for i in range(at, end - 1):
            if b[i] == 0:
                return None
        try:
            sql = PyUnicode_DecodeUTF8(<const char *>&b[at], n - 1, NULL) if n > 1 else ""
        except UnicodeDecodeError:
            return None
        event = _Query.__new__(_Query)
        event.sql = sql
        return event
    if kind == 69:                          # 'E': portal name, int32 row limit
        try:
            portal = _cstr(b, &pos, end)
        except (ValueError, UnicodeDecodeError):
            return None
        if end - pos != 4:
            return None
        event = _Execute.__new__(_Execute)
        event.portal = portal
        event.max_rows = _i32(b, pos)
        return event
    if kind == 68:                          # 'D': b'S' or b'P', name
        if n < 1 or (b[at] != 83 and b[at] != 80):
            return None
        pos = at + 1
        try:
            name = _cstr(b, &pos, end)
        except (ValueError, UnicodeDecodeError):
            return None
        if pos != end:
            return None
        event = _Describe.__new__(_Describe)
        event.kind = _KINDS[b[at]]
        event.name = name
        return event
    if kind == 66:                          # 'B'
        try:
            portal, statement, param_formats, params, result_formats = _parse_bind(b, at, end)
        except (ValueError, UnicodeDecodeError):
            return None
        for formats in (param_formats, result_formats):
            for code in formats:
                if code != 0 and code != 1:
                    return None
        event = _Bind.__new__(_Bind)
        event.portal, event.statement = portal, statement
        event.param_formats, event.params, event.result_formats = param_formats, params, result_formats
        return event
    return None


def split_events(const unsigned char[:] buf, long max_body):
    """Typed messages in buf -> (items, consumed, bad_length), as split_frames
    but with the frequent messages already events (see above)."""
    cdef Py_ssize_t pos = 0, n = buf.shape[0]
    cdef int length
    cdef list items = []
    while n - pos >= 5:
        length = _i32(buf, pos + 1)
        if length < 4 or length - 4 > max_body:
            return items, pos, length
        if n - pos < <Py_ssize_t>length + 1:
            break
        event = _event(buf, pos + 5, length - 4, buf[pos])
        if event is None:
            body = PyBytes_FromStringAndSize(<const char *>&buf[pos + 5], length - 4) if length > 4 else b""
            event = (_KINDS[buf[pos]], body)
        items.append(event)
        pos += length + 1
    return items, pos, None


# ---- simple-Query texts: integer literals -----------------------------------
# Twins of sqlfront.literal_template_py / number_shape_py (regexes in ASCII
# mode; any non-ASCII character counts as a word character, as SQLite's
# identifiers allow). One pass over the text instead of a regex with
# look-behind at every position (~5 us per query in the interpreter).

cdef inline bint _ascii_word(Py_UCS4 c):
    return (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) or c == 95


cdef inline bint _word(Py_UCS4 c):
    return c >= 128 or _ascii_word(c)


cdef inline bint _digit(Py_UCS4 c):
    return c >= 48 and c <= 57


def number_shape(str sql):
    """sql with every digit run that does not continue a word replaced by 0."""
    cdef Py_ssize_t i = 0, n = len(sql), start = 0
    cdef Py_UCS4 c
    cdef list parts = None
    while i < n:
        c = sql[i]
        if _digit(c) and (i == 0 or not _word(sql[i - 1])):
            if parts is None:
                parts = []
            parts.append(sql[start:i])
            parts.append("0")
            while i < n and _digit(sql[i]):
                i += 1
            start = i
        else:
            i += 1
    if parts is None:
        return sql
    parts.append(sql[start:])
    return "".join(parts)


def literal_template(str sql):
    """-> (template, values) or None: see sqlfront.literal_template_py."""
    cdef Py_ssize_t i, j, n = len(sql), start = 0
    cdef Py_UCS4 c, before, after
    cdef list parts = None, values = None
    for i in range(n):
        c = sql[i]
        if c == 39 or c == 63 or c == 58 or c == 64 or c == 36 or c == 42 or c == 35:  # ' ? : @ $ * #
            return None
        if (c == 98 or c == 66) and i + 1 < n and (sql[i + 1] == 121 or sql[i + 1] == 89) \
                and (i == 0 or not _ascii_word(sql[i - 1])) and (i + 2 >= n or not _ascii_word(sql[i + 2])):
            return None  # the word BY
    i = 0
    while i < n:
        c = sql[i]
        if not _digit(c):
            i += 1
            continue
        j = i
        while j < n and _digit(sql[j]):
            j += 1
        before = sql[i - 1] if i > 0 else 32
        after = sql[j] if j < n else 32
        if j - i <= 18 and not _word(before) and before != 46 and not _word(after) and after != 46:
            if parts is None:
                parts, values = [], []
            parts.append(sql[start:i])
            values.append(int(sql[i:j]))
            parts.append(f"?{len(values)}")
            start = j
        i = j
    if parts is None:
        return None
    parts.append(sql[start:])
    return "".join(parts), values


# ---- one blocking exchange per round trip ------------------------------------
cdef extern from "<sys/socket.h>" nogil:
    ssize_t send(int fd, const void *buf, size_t n, int flags)
    ssize_t recv(int fd, void *buf, size_t n, int flags)
    int MSG_NOSIGNAL
cdef extern from "<poll.h>" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout)
    short POLLIN
cdef extern from "<errno.h>" nogil:
    int errno
    int EINTR

import socket as _socket
import os as _os


def exchange(int fd, const unsigned char[:] out, unsigned char[:] inbuf, double timeout):
    """Send all of `out` on the blocking socket fd, then wait for the client's
    next bytes and return them (b"" at end of stream) — under ONE release of
    the GIL, where sendall() + recv() hand it over twice per round trip.
    timeout < 0 waits forever; otherwise socket.timeout after `timeout`
    seconds without data. OSError on a socket error (client gone)."""
    cdef Py_ssize_t sent = 0, total = out.shape[0], got = 0
    cdef Py_ssize_t room = inbuf.shape[0]
    cdef const unsigned char *outp = &out[0] if total else NULL
    cdef unsigned char *inp = &inbuf[0]
    cdef int err = 0, timed_out = 0, ready
    cdef int wait_ms = -1 if timeout < 0 else <int>(timeout * 1000)
    cdef pollfd waiting
    cdef ssize_t rc
    with nogil:
        while sent < total:
            rc = send(fd, outp + sent, total - sent, MSG_NOSIGNAL)
            if rc < 0:
                if errno == EINTR:
                    continue
                err = errno
                break
            sent += rc
        if err == 0 and wait_ms >= 0:
            waiting.fd = fd
            waiting.events = POLLIN
            while True:
                ready = poll(&waiting, 1, wait_ms)
                if ready < 0 and errno == EINTR:
                    continue
                if ready < 0:
                    err = errno
                elif ready == 0:
                    timed_out = 1
                break
        if err == 0 and not timed_out:
            while True:
                rc = recv(fd, inp, room, 0)
                if rc < 0 and errno == EINTR:
                    continue
                if rc < 0:
                    err = errno
                else:
                    got = rc
                break
    if err:
        raise OSError(err, _os.strerror(err))
    if timed_out:
        raise _socket.timeout("timed out")
    return PyBytes_FromStringAndSize(<const char *>inp, got)
