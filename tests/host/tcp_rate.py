"""Measure TCP throughput on loopback through one port, in one process.

    python tcp_rate.py from|to PORT WARMUP WINDOW [ADDRESS]

`from`: the listener on PORT sends (traffic has PORT as source port);
`to`: the client sends to PORT (PORT is the destination port). The receiver
counts bytes; the rate is taken over WINDOW seconds after WARMUP seconds, so
the shaper's initial burst and TCP slow start are left out. Prints Mbit/s.
Run inside the test's network namespace (ip netns exec).
"""
import socket
import sys
import threading
import time

mode, port, warmup, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
address = sys.argv[5] if len(sys.argv) > 5 else "127.0.0.1"  # another loopback address when 127.0.0.1:PORT is served
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((address, port))
listener.listen(1)
client = socket.create_connection((address, port))
server, _ = listener.accept()
sender, receiver = (server, client) if mode == "from" else (client, server)
stop = threading.Event()


def pump():
    chunk = b"x" * 65536
    try:
        while not stop.is_set():
            sender.sendall(chunk)
    except OSError:
        pass


threading.Thread(target=pump, daemon=True).start()
received = 0
marks = {}
start = time.monotonic()
while True:
    data = receiver.recv(1 << 20)
    received += len(data)
    elapsed = time.monotonic() - start
    if "a" not in marks and elapsed >= warmup:
        marks["a"] = (elapsed, received)
    if elapsed >= warmup + window:
        marks["b"] = (elapsed, received)
        break
stop.set()
(t0, b0), (t1, b1) = marks["a"], marks["b"]
print(f"{(b1 - b0) * 8 / (t1 - t0) / 1e6:.3f}")
sys.stdout.flush()
sender.close()
receiver.close()
