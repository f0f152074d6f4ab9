"""The control protocol over a real Unix socket."""
import asyncio
import os
import stat
import struct

import pytest

from rustymt.engine.control import MAX_FRAME_BYTES, ControlClient, ControlError, ControlServer, encode_frame


def run(coro):
    return asyncio.run(coro)


async def _serve(tmp_path, handlers):
    server = ControlServer(str(tmp_path / "c.sock"), handlers)
    await server.start()
    return server


def test_round_trip_and_socket_is_private(tmp_path):
    async def echo(args):
        return {"echo": args}

    async def scenario():
        server = await _serve(tmp_path, {"echo": echo})
        client = ControlClient(server.path)
        result = await client.request("echo", {"a": [1, "x"]})
        mode = stat.S_IMODE(os.stat(server.path).st_mode)
        await client.close()
        await server.close()
        return result, mode

    result, mode = run(scenario())
    assert result == {"echo": {"a": [1, "x"]}}
    assert mode == 0o600


def test_pipelined_requests_answer_out_of_order(tmp_path):
    release = None

    async def slow(args):
        await release.wait()
        return {"op": "slow"}

    async def fast(args):
        return {"op": "fast"}

    async def scenario():
        nonlocal release
        release = asyncio.Event()
        server = await _serve(tmp_path, {"slow": slow, "fast": fast})
        client = ControlClient(server.path)
        await client.connect()
        slow_task = asyncio.create_task(client.request("slow"))
        fast_result = await client.request("fast")  # answered while slow is still pending
        assert not slow_task.done()
        release.set()
        slow_result = await slow_task
        await client.close()
        await server.close()
        return fast_result, slow_result

    assert run(scenario()) == ({"op": "fast"}, {"op": "slow"})


def test_errors_unknown_op_handler_refusal_and_handler_bug(tmp_path):
    async def refuse(args):
        raise ControlError("NOT_FOUND", "no such tenant")

    async def bug(args):
        raise ZeroDivisionError()

    async def scenario():
        server = await _serve(tmp_path, {"refuse": refuse, "bug": bug})
        client = ControlClient(server.path)
        codes = []
        for op in ("nope", "refuse", "bug"):
            with pytest.raises(ControlError) as caught:
                await client.request(op)
            codes.append(caught.value.code)
        # the connection survives every refusal
        with pytest.raises(ControlError) as caught:
            await client.request("refuse")
        codes.append(caught.value.code)
        await client.close()
        await server.close()
        return codes

    assert run(scenario()) == ["UNKNOWN_OP", "NOT_FOUND", "INTERNAL", "NOT_FOUND"]


def test_version_mismatch_and_garbage_frames(tmp_path):
    async def ping(args):
        return {"pong": True}

    async def scenario():
        server = await _serve(tmp_path, {"ping": ping})
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(encode_frame({"v": 99, "id": 1, "op": "ping"}))
        header = await reader.readexactly(4)
        body = await reader.readexactly(struct.unpack(">I", header)[0])
        assert b"VERSION_MISMATCH" in body
        # an oversize length closes the connection, the server keeps serving others
        writer.write(struct.pack(">I", MAX_FRAME_BYTES + 1))
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        reader2, writer2 = await asyncio.open_unix_connection(server.path)
        writer2.write(struct.pack(">I", 3) + b"{x]")
        await writer2.drain()
        assert await reader2.read() == b""
        writer2.close()
        client = ControlClient(server.path)
        assert await client.request("ping") == {"pong": True}
        await client.close()
        await server.close()

    run(scenario())


def test_request_timeout_and_unavailable(tmp_path):
    async def hang(args):
        await asyncio.Event().wait()

    async def scenario():
        server = await _serve(tmp_path, {"hang": hang})
        client = ControlClient(server.path)
        with pytest.raises(ControlError) as timeout:
            await client.request("hang", timeout=0.2)
        await client.close()
        await server.close()
        with pytest.raises(ControlError) as unavailable:
            await ControlClient(str(tmp_path / "gone.sock")).request("hang")
        return timeout.value.code, unavailable.value.code

    assert run(scenario()) == ("TIMEOUT", "UNAVAILABLE")
