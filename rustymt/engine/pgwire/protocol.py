"""PostgreSQL protocol 3.0, server side, as a transport-free state machine.

Like asyncpg's coreproto (the client side), this module does no I/O: the
server feeds it received bytes and gets back events; it calls the action
methods (answer_ssl, start_auth, session_ready, fail, send) and writes what
data_to_send() returns. That keeps framing, the startup/authentication dance
and every protocol error testable with plain byte strings (and fuzzable).

States, in order:

    STARTUP     untyped packets: SSLRequest / GSSENCRequest / CancelRequest /
                StartupMessage  -> events SSLRequest, CancelRequest, Startup
    VERIFIER    waiting for the server's start_auth(verifier) (backend lookup)
    SASL_FIRST  expecting SASLInitialResponse ('p')
    SASL_FINAL  expecting SASLResponse ('p')   -> event Authenticated
    SESSION     waiting for session_ready() (the backend opens the database)
    READY       typed messages -> Query/Parse/Bind/Describe/Execute/Sync/...
    CLOSED      a FATAL error was queued or Terminate/CancelRequest received;
                the server closes the transport after sending what is queued.

Every malformed input ends in CLOSED with a FATAL 08P01 queued (never an
exception out of feed()).
"""
from __future__ import annotations

import struct

from . import messages
from . import sqlstate as S
from ..scram import MECHANISM, ScramError, ScramExchange
from .errors import PgError, fatal
from .framing import parse_bind, split_frames_py

SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
PROTOCOL_3_0 = 196608
MAX_STARTUP_PACKET = 10000  # PostgreSQL's MAX_STARTUP_PACKET_LENGTH

STARTUP, VERIFIER, SASL_FIRST, SASL_FINAL, SESSION, READY, CLOSED = range(7)

_I32 = struct.Struct("!i")
_I16 = struct.Struct("!h")


# ---- events --------------------------------------------------------------------------------

class Event:
    __slots__ = ()

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in self.__slots__)})"

    def __eq__(self, other):
        return type(self) is type(other) and all(getattr(self, k) == getattr(other, k) for k in self.__slots__)


class SSLRequest(Event):
    __slots__ = ()


class CancelRequest(Event):
    __slots__ = ("pid", "secret")

    def __init__(self, pid, secret):
        self.pid, self.secret = pid, secret


class Startup(Event):
    __slots__ = ("user", "database", "parameters")

    def __init__(self, user, database, parameters):
        self.user, self.database, self.parameters = user, database, parameters


class Authenticated(Event):
    __slots__ = ("user", "database")

    def __init__(self, user, database):
        self.user, self.database = user, database


class Closed(Event):
    """The protocol queued a FATAL error (or the client said goodbye): close."""
    __slots__ = ("error",)

    def __init__(self, error):
        self.error = error


class Query(Event):
    __slots__ = ("sql",)

    def __init__(self, sql):
        self.sql = sql


class Parse(Event):
    __slots__ = ("name", "sql", "param_oids")

    def __init__(self, name, sql, param_oids):
        self.name, self.sql, self.param_oids = name, sql, param_oids


class Bind(Event):
    __slots__ = ("portal", "statement", "param_formats", "params", "result_formats")

    def __init__(self, portal, statement, param_formats, params, result_formats):
        self.portal, self.statement = portal, statement
        self.param_formats, self.params, self.result_formats = param_formats, params, result_formats


class Describe(Event):
    __slots__ = ("kind", "name")  # kind b"S" statement or b"P" portal

    def __init__(self, kind, name):
        self.kind, self.name = kind, name


class Execute(Event):
    __slots__ = ("portal", "max_rows")

    def __init__(self, portal, max_rows):
        self.portal, self.max_rows = portal, max_rows


class Close(Event):
    __slots__ = ("kind", "name")

    def __init__(self, kind, name):
        self.kind, self.name = kind, name


class Sync(Event):
    __slots__ = ()


class Flush(Event):
    __slots__ = ()


class Terminate(Event):
    __slots__ = ()


SYNC, FLUSH = Sync(), Flush()


class _Malformed(Exception):
    pass


class _Reader:
    """Cursor over one message body; raises _Malformed on any overrun."""
    __slots__ = ("data", "pos")

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def int16(self) -> int:
        if self.pos + 2 > len(self.data):
            raise _Malformed
        (value,) = _I16.unpack_from(self.data, self.pos)
        self.pos += 2
        return value

    def int32(self) -> int:
        if self.pos + 4 > len(self.data):
            raise _Malformed
        (value,) = _I32.unpack_from(self.data, self.pos)
        self.pos += 4
        return value

    def uint32(self) -> int:
        return self.int32() & 0xFFFFFFFF

    def cstring(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise _Malformed
        raw = self.data[self.pos:end]
        self.pos = end + 1
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PgError(S.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None

    def byte(self) -> bytes:
        if self.pos >= len(self.data):
            raise _Malformed
        self.pos += 1
        return self.data[self.pos - 1:self.pos]

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise _Malformed
        self.pos += size
        return self.data[self.pos - size:self.pos]

    def rest(self) -> bytes:
        self.pos, data = len(self.data), self.data[self.pos:]
        return data

    def end(self):
        if self.pos != len(self.data):
            raise _Malformed


def _parse_query(r):
    sql = r.cstring()
    r.end()
    return Query(sql)


def _parse_parse(r):
    name, sql = r.cstring(), r.cstring()
    count = r.int16()
    if count < 0:
        raise _Malformed
    oids = [r.uint32() for _ in range(count)]
    r.end()
    return Parse(name, sql, oids)


def _parse_bind(r):
    try:
        portal, statement, param_formats, params, result_formats = parse_bind(r.data)
    except UnicodeDecodeError:
        raise PgError(S.CHARACTER_NOT_IN_REPERTOIRE, 'invalid byte sequence for encoding "UTF8"') from None
    except ValueError:
        raise _Malformed from None
    for formats in (param_formats, result_formats):
        for code in formats:
            if code != 0 and code != 1:
                raise PgError(S.PROTOCOL_VIOLATION, "unsupported format code")
    return Bind(portal, statement, param_formats, params, result_formats)


def _parse_describe_or_close(cls):
    def parse(r):
        kind = r.byte()
        if kind not in (b"S", b"P"):
            raise PgError(S.PROTOCOL_VIOLATION, f"invalid {cls.__name__.upper()} message subtype {kind!r}")
        name = r.cstring()
        r.end()
        return cls(kind, name)
    return parse


def _parse_execute(r):
    portal = r.cstring()
    max_rows = r.int32()
    r.end()
    return Execute(portal, max_rows)


def _constant(event):
    def parse(r):
        r.end()
        return event
    return parse


FRONTEND_PARSERS = {
    b"Q": _parse_query, b"P": _parse_parse, b"B": _parse_bind,
    b"D": _parse_describe_or_close(Describe), b"C": _parse_describe_or_close(Close),
    b"E": _parse_execute, b"S": _constant(SYNC), b"H": _constant(FLUSH), b"X": _constant(Terminate()),
}
# The frequent query-phase messages, parsed while the stream is split (see
# split_events); the rest go through FRONTEND_PARSERS one by one.
_EVENT_PARSERS = {kind: FRONTEND_PARSERS[kind] for kind in (b"Q", b"B", b"E", b"D", b"S", b"H")}


def split_events_py(buf, max_body: int):
    """Typed messages in buf -> (items, consumed, bad_length or None): as
    framing.split_frames, except that each Query/Bind/Execute/Describe/Sync/
    Flush that parses cleanly is its event already; every other message (or a
    frequent one that would raise) stays a (kind, body) frame. The pure-Python
    twin of _speedups.split_events."""
    frames, consumed, bad_length = split_frames_py(buf, max_body)
    items = []
    for frame in frames:
        parse = _EVENT_PARSERS.get(frame[0])
        if parse is not None:
            try:
                items.append(parse(_Reader(frame[1])))
                continue
            except (_Malformed, PgError):
                pass
        items.append(frame)
    return items, consumed, bad_length


try:
    from ._speedups import set_event_types as _set_event_types
    from ._speedups import split_events as split_events_c
    _set_event_types(Query, Bind, Execute, Describe, SYNC, FLUSH)
except ImportError:  # not built: the pure-Python twin serves
    split_events_c = None

split_events = split_events_c or split_events_py

UNSUPPORTED = {b"F": "function call protocol", b"d": "COPY", b"c": "COPY", b"f": "COPY"}

# Parameters reported at the end of startup (clients read several of these).
SERVER_VERSION = "15.0 (rustymt)"


def normalise_client_encoding(value: str) -> str | None:
    """asyncpg sends "'utf-8'"; libpq may send UTF8, unicode or SQL_ASCII."""
    word = value.strip().strip("'\"").lower().replace("-", "").replace("_", "")
    if word in ("utf8", "unicode"):
        return "UTF8"
    if word == "sqlascii":
        return "SQL_ASCII"
    return None


class ServerProtocol:
    """One client connection's protocol state (see the module docstring)."""

    def __init__(self, max_message_bytes: int = 64 << 20, tls_available: bool = False):
        self.max_message_bytes = max_message_bytes
        self.tls_available = tls_available
        self.state = STARTUP
        self.user = ""
        self.database = ""
        self.client_encoding = "UTF8"
        self.application_name = ""
        self._buffer = bytearray()
        self._out = []
        self._scram = None
        self._ssl_done = False

    # -- output --------------------------------------------------------------------------
    def send(self, data: bytes):
        self._out.append(data)

    def data_to_send(self) -> bytes:
        data = b"".join(self._out)
        self._out.clear()
        return data

    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    @property
    def between_messages(self) -> bool:
        """In the query phase with no partial message buffered: the next
        received bytes start a message (the native loop may read them)."""
        return self.state == READY and not self._buffer

    def fail(self, error: PgError) -> Closed:
        """Queue `error` as FATAL and close."""
        error.severity = "FATAL"
        self.send(error.encode())
        self.state = CLOSED
        self._buffer.clear()
        return Closed(error)

    # -- input ---------------------------------------------------------------------------
    def feed(self, data: bytes) -> list:
        """Consume received bytes; return the events they complete."""
        if self.state == CLOSED:
            return []
        if self.state == READY and not self._buffer:
            # The usual query-phase read: whole messages, all of them frequent
            # ones (Terminate and anything unusual stay frames): their events as is.
            items, consumed, bad_length = split_events(data, self.max_message_bytes)
            if consumed == len(data) and bad_length is None and tuple not in map(type, items):
                return items
        self._buffer += data
        events = []
        try:
            while self.state != CLOSED:
                if self.state == READY:
                    self._ready_messages(events)
                    break
                if self.state == STARTUP:
                    event = self._startup_packet()
                elif self.state in (SASL_FIRST, SASL_FINAL):
                    event = self._typed_message()
                else:  # VERIFIER / SESSION: the server owes us an answer first
                    break
                if event is None:
                    break
                events.append(event)
                if isinstance(event, (SSLRequest, Startup)):
                    break  # the server must act before we read further
        except _Malformed:
            events.append(self.fail(fatal(S.PROTOCOL_VIOLATION, "invalid message format")))
        except PgError as error:
            events.append(self.fail(error))
        return events

    def _startup_packet(self):
        buf = self._buffer
        if len(buf) < 8:
            return None
        (length,) = _I32.unpack_from(buf, 0)
        if length < 8 or length > MAX_STARTUP_PACKET:
            raise fatal(S.PROTOCOL_VIOLATION, "invalid length of startup packet")
        if len(buf) < length:
            return None
        packet = bytes(buf[4:length])
        del buf[:length]
        reader = _Reader(packet)
        code = reader.int32()
        if code == SSL_REQUEST_CODE and length == 8:
            if self._ssl_done:
                raise fatal(S.PROTOCOL_VIOLATION, "duplicate SSLRequest")
            self._ssl_done = True
            return SSLRequest()
        if code == GSSENC_REQUEST_CODE and length == 8:
            self.send(messages.SSL_DECLINED)  # no GSSAPI: 'N' and the client goes on
            return self._startup_packet()
        if code == CANCEL_REQUEST_CODE:
            pid, secret = reader.int32(), reader.uint32()
            self.state = CLOSED  # a cancel connection gets no reply
            return CancelRequest(pid, secret)
        if code >> 16 != 3:
            raise fatal(S.FEATURE_NOT_SUPPORTED,
                        f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}: server supports 3.0")
        return self._startup(reader, code & 0xFFFF)

    def _startup(self, reader, minor):
        params = {}
        while True:
            key = reader.cstring()
            if not key:
                break
            params[key] = reader.cstring()
        unsupported = sorted(k for k in params if k.startswith("_pq_."))
        if minor > 0 or unsupported:
            self.send(messages.negotiate_protocol_version(0, unsupported))
        for key in unsupported:
            del params[key]
        user = params.get("user", "")
        if not user:
            raise fatal(S.INVALID_AUTHORIZATION_SPECIFICATION, "no PostgreSQL user name specified in startup packet")
        if "client_encoding" in params:
            encoding = normalise_client_encoding(params["client_encoding"])
            if encoding is None:
                raise fatal(S.INVALID_PARAMETER_VALUE,
                            f"invalid value for parameter \"client_encoding\": \"{params['client_encoding']}\"",
                            hint="This server speaks UTF8 only.")
            self.client_encoding = encoding
        self.user = user
        self.database = params.get("database") or user
        self.application_name = params.get("application_name", "")
        self.state = VERIFIER
        return Startup(self.user, self.database, params)

    def _ready_messages(self, events):
        """Query phase: every complete message in the buffer -> events."""
        items, consumed, bad_length = split_events(self._buffer, self.max_message_bytes)
        if consumed:
            del self._buffer[:consumed]
        for event in items:
            if type(event) is tuple:
                kind, body = event
                parse = FRONTEND_PARSERS.get(kind)
                if parse is None:
                    self._unknown(kind)
                event = parse(_Reader(body))
            events.append(event)
            if type(event) is Terminate:
                self.state = CLOSED
                return
        if bad_length is not None:
            self._bad_length(bad_length)

    def _bad_length(self, length):
        if length < 4:
            raise fatal(S.PROTOCOL_VIOLATION, f"invalid message length {length}")
        raise fatal(S.PROGRAM_LIMIT_EXCEEDED,
                    f"message of {length - 4} bytes exceeds pgwire.max_message_bytes ({self.max_message_bytes})")

    def _unknown(self, kind):
        what = UNSUPPORTED.get(kind)
        if what:
            raise fatal(S.FEATURE_NOT_SUPPORTED, f"{what} is not supported")
        raise fatal(S.PROTOCOL_VIOLATION, f"invalid frontend message type {kind[0]}")

    def _typed_message(self):
        """One message during SASL authentication (the query phase uses _ready_messages)."""
        buf = self._buffer
        if len(buf) < 5:
            return None
        kind = bytes(buf[0:1])
        (length,) = _I32.unpack_from(buf, 1)
        if length < 4 or length - 4 > self.max_message_bytes:
            self._bad_length(length)
        if len(buf) < length + 1:
            return None
        body = bytes(buf[5:length + 1])
        del buf[:length + 1]
        return self._sasl_message(kind, body)

    # -- authentication ------------------------------------------------------------------
    def answer_ssl(self, accept: bool):
        """Reply to SSLRequest. Accepting with bytes already buffered would let
        plaintext be read as if it came through TLS (CVE-2021-23222): refuse."""
        if accept and self._buffer:
            self.fail(fatal(S.PROTOCOL_VIOLATION, "received unencrypted data after SSL request"))
            return
        self.send(messages.SSL_ACCEPTED if accept else messages.SSL_DECLINED)

    def start_auth(self, verifier: str | None):
        """Begin SCRAM-SHA-256 with the user's verifier (None: unknown user, mock)."""
        self._scram = ScramExchange(verifier, self.user)
        self.send(messages.authentication_sasl([MECHANISM]))
        self.state = SASL_FIRST

    def _sasl_message(self, kind, body):
        if kind != b"p":
            raise fatal(S.PROTOCOL_VIOLATION, f"expected SASL response, got message type {kind[0]}")
        reader = _Reader(body)
        try:
            if self.state == SASL_FIRST:
                if reader.cstring() != MECHANISM:
                    raise fatal(S.PROTOCOL_VIOLATION, "client selected an invalid SASL authentication mechanism")
                size = reader.int32()
                payload = reader.take(size) if size >= 0 else b""
                self.send(messages.authentication(11, self._scram.server_first(payload)))
                self.state = SASL_FINAL
                return self._typed_message()
            final = self._scram.server_final(reader.rest())
        except ScramError as exc:
            if "password authentication failed" in str(exc):
                raise fatal(S.INVALID_PASSWORD, f'password authentication failed for user "{self.user}"') from None
            raise fatal(S.PROTOCOL_VIOLATION, f"malformed SCRAM message: {exc}") from None
        self.send(messages.authentication(12, final))
        self.send(messages.AUTHENTICATION_OK)
        self.state = SESSION
        return Authenticated(self.user, self.database)

    def session_ready(self, parameters: dict, pid: int, secret: int) -> list:
        """The backend opened the database: report parameters, key, ReadyForQuery;
        return events from any bytes the client pipelined meanwhile."""
        for name, value in parameters.items():
            self.send(messages.parameter_status(name, value))
        self.send(messages.backend_key_data(pid, secret))
        self.send(messages.ready_for_query(b"I"))
        self.state = READY
        return self.feed(b"")

    def resume(self) -> list:
        """After answering SSLRequest (or TLS upgrade), parse what is buffered."""
        return self.feed(b"")
